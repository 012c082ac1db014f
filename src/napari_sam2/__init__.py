"""napari-sam2: SAM 2 segmentation and tracking inside napari."""

__version__ = "0.1.0"
