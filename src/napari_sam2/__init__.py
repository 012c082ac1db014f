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
    "build_sam2": "napari_sam2.engine.weights.build",
    "build_sam2_model": "napari_sam2.engine.weights.build",
    "resolve_device": "napari_sam2.engine.weights.build",
    "SAM2AutomaticMaskGenerator": "napari_sam2.engine.segment.automatic_mask_generator",
    "SAM2ImagePredictor": "napari_sam2.engine.predict.image_predictor",
    "SAM2VideoPredictor": "napari_sam2.engine.predict.video_predictor",
    "VideoSession": "napari_sam2.engine.predict.video_predictor",
    "build_sam2_video_predictor": "napari_sam2.engine.predict.video_predictor",
    "TiledMaskGenerator": "napari_sam2.engine.segment.tiled_mask_generator",
    "TrackingSession": "napari_sam2.engine.track.session",
    "open_frames": "napari_sam2.engine.frames.open",
    "track_all": "napari_sam2.engine.cells.track_all",
    "track_files": "napari_sam2.engine.batch.track_stack",
    "track_many": "napari_sam2.engine.batch.distributed",
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
    from napari_sam2.engine.batch.distributed import track_many
    from napari_sam2.engine.batch.track_stack import track_files
    from napari_sam2.engine.cells.track_all import track_all
    from napari_sam2.engine.frames.open import open_frames
    from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor
    from napari_sam2.engine.predict.video_predictor import (
        SAM2VideoPredictor,
        VideoSession,
        build_sam2_video_predictor,
    )
    from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from napari_sam2.engine.segment.tiled_mask_generator import TiledMaskGenerator
    from napari_sam2.engine.track.session import TrackingSession
    from napari_sam2.engine.weights.build import build_sam2, build_sam2_model, resolve_device


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_sam2' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
