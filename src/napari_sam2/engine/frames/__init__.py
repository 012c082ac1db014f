"""Frames as the model sees them: opening any stack as (T, H, W[, C]) frames, views over channels and time, and the contrast normalisation fitted once per stack."""
