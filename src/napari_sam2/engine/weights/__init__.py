"""Model weights: the registry of official checkpoints (sizes, checksums), download and cache folder, and building a SAM 2 model from a variant and a checkpoint."""
