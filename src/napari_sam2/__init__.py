"""napari-sam2: SAM 2 segmentation and tracking inside napari.

Three layers, imports only downward: :mod:`napari_sam2.plugin` (napari) ->
:mod:`napari_sam2.engine` (headless: torch + numpy) -> :mod:`napari_sam2.model` (the
network). The public names below resolve lazily, so ``import napari_sam2`` (napari's
manifest discovery, ``napari-sam2 --version``) loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "build_sam2": "napari_sam2.engine.build",
    "build_sam2_model": "napari_sam2.engine.build",
    "resolve_device": "napari_sam2.engine.build",
    "SAM2AutomaticMaskGenerator": "napari_sam2.engine.automatic_mask_generator",
    "SAM2ImagePredictor": "napari_sam2.engine.image_predictor",
    "SAM2VideoPredictor": "napari_sam2.engine.video_predictor",
    "VideoSession": "napari_sam2.engine.video_predictor",
    "build_sam2_video_predictor": "napari_sam2.engine.video_predictor",
    "TiledMaskGenerator": "napari_sam2.engine.tiled_mask_generator",
    "TrackingSession": "napari_sam2.engine.session",
    "open_frames": "napari_sam2.engine.frames",
    "track_all": "napari_sam2.engine.track_all",
    "track_files": "napari_sam2.engine.batch",
    "track_many": "napari_sam2.engine.distributed",
}

__all__ = [
    "SAM2AutomaticMaskGenerator",
    "SAM2ImagePredictor",
    "SAM2VideoPredictor",
    "TiledMaskGenerator",
    "TrackingSession",
    "VideoSession",
    "__version__",
    "build_sam2",
    "build_sam2_model",
    "build_sam2_video_predictor",
    "open_frames",
    "resolve_device",
    "track_all",
    "track_files",
    "track_many",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from .engine.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from .engine.batch import track_files
    from .engine.build import build_sam2, build_sam2_model, resolve_device
    from .engine.distributed import track_many
    from .engine.frames import open_frames
    from .engine.image_predictor import SAM2ImagePredictor
    from .engine.session import TrackingSession
    from .engine.tiled_mask_generator import TiledMaskGenerator
    from .engine.track_all import track_all
    from .engine.video_predictor import SAM2VideoPredictor, VideoSession, build_sam2_video_predictor


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_sam2' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
