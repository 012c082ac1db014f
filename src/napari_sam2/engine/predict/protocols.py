"""What the engine needs from a predictor or a mask generator, as typed Protocols.

The engine drives Meta's API: anything with these methods works, ours
(:class:`~napari_sam2.engine.predict.video_predictor.SAM2VideoPredictor`,
:class:`~napari_sam2.engine.predict.image_predictor.SAM2ImagePredictor`), Meta's own predictors,
or a stand-in in a test. Ours take a few keywords beyond Meta's; a predictor says which in
``api_extensions`` (a frozenset of keyword names), so the engine never guesses from a
signature.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "EXTENSION_NEED_OUTPUT",
    "EXTENSION_NORMALIZER",
    "EXTENSION_REFINE",
    "ImagePredictor",
    "MaskGenerator",
    "VideoPredictor",
    "extensions_of",
]

#: ``add_new_points_or_box(..., refine=False)``: a click replaces instead of refining the mask.
EXTENSION_REFINE = "refine"
#: ``clear_all_prompts_in_frame(..., need_output=False)`` / ``remove_object``: skip the output.
EXTENSION_NEED_OUTPUT = "need_output"
#: ``generate(image, normalizer=...)``: map the frame's contrast as the tracker does.
EXTENSION_NORMALIZER = "normalizer"


@runtime_checkable
class VideoPredictor(Protocol):
    """Meta's SAM2VideoPredictor API, as a tracking session uses it."""

    def init_state(self, frames: Any, *args: Any, **kwargs: Any) -> Any: ...

    def reset_state(self, inference_state: Any) -> None: ...

    def add_new_points_or_box(
        self,
        inference_state: Any,
        frame_idx: int,
        obj_id: Any,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
    ) -> tuple[int, list, Any]: ...

    def add_new_mask(
        self, inference_state: Any, frame_idx: int, obj_id: Any, mask: Any
    ) -> tuple[int, list, Any]: ...

    def propagate_in_video(
        self,
        inference_state: Any,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[int, list, Any]]: ...

    def clear_all_prompts_in_frame(self, inference_state: Any, frame_idx: int, obj_id: Any) -> Any: ...

    def remove_object(self, inference_state: Any, obj_id: Any, strict: bool = False) -> Any: ...


@runtime_checkable
class ImagePredictor(Protocol):
    """Meta's SAM2ImagePredictor API: embed one image, then prompt it."""

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@runtime_checkable
class MaskGenerator(Protocol):
    """Meta's SAM2AutomaticMaskGenerator API: every object of an image as mask records."""

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]: ...


def extensions_of(obj: Any) -> frozenset[str]:
    """The keywords beyond Meta's API that ``obj`` (a predictor or generator) declares it takes."""
    return frozenset(getattr(obj, "api_extensions", ()))
