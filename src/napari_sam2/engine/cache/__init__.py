"""The embedding cache: a frame's image features stored on disk, keyed by model, frame content and normalisation, so a frame is encoded once across sessions."""
