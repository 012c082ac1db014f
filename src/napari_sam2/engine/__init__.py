"""The headless engine (torch + numpy, no napari, no Qt): checkpoints, frames and their
normalisation, the prompt data model, the image and video predictors, tracking sessions
and batch runs. The plugin and the command line are built on it."""
