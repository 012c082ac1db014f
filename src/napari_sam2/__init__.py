"""napari-sam2: SAM 2 segmentation and tracking inside napari.

The engine (model, predictors, checkpoints) needs only torch and numpy and imports no Qt.
"""

__version__ = "0.1.0"

from .build import build_sam2, build_sam2_model, resolve_device
from .image_predictor import SAM2ImagePredictor
from .video_predictor import SAM2VideoPredictor, VideoSession, build_sam2_video_predictor

__all__ = [
    "SAM2ImagePredictor",
    "SAM2VideoPredictor",
    "VideoSession",
    "__version__",
    "build_sam2",
    "build_sam2_model",
    "build_sam2_video_predictor",
    "resolve_device",
]
