"""The one validation layer at the engine's public boundary (numpy only, no torch).

Both predictors, the prompt data model (and so prompt files), the plugin and the command
line check prompts here, so that a bad value gets the same message everywhere: it names
the argument, the value, and what to do.

The rules (docs/troubleshooting.md lists the messages):

- coordinates are finite ``(x, y)`` pixels of the frame (x = column, y = row), inside
  ``[0, width] x [0, height]`` (``[0, 1]`` with ``normalize_coords=False``). A point outside
  the frame is **refused**, never clipped: a click outside the image says nothing about the
  object, and clipping would move it onto another one.
- point labels are exactly 1 (positive: the object) or 0 (negative: not the object); 1.7,
  -1 or 2 are refused rather than rounded or read as "true".
- a box is the rectangle spanned by two corners ``[x0, y0, x1, y1]``; the corners are put
  in order (top-left first), as the widget does when a box is drawn from any corner. A box
  of zero width or height is refused.
- object ids are integers (``True``, ``1.5``, ``None``, strings and lists are refused).
- segment-everything settings: thresholds (``pred_iou_thresh``, ``stability_score_thresh``,
  ``box_nms_thresh``, ``crop_nms_thresh``, ``dedupe_iou_thresh``) are fractions in [0, 1];
  88 is refused with "give 0.88" (a percentage), never read as "keep nothing".
  ``points_per_side`` is a count of prompts along each side, an integer 1 ..
  :data:`MAX_POINTS_PER_SIDE` (256): a larger value is almost always a pixel spacing, and
  256 already prompts every 4 px of the model's 1024 px input (65,536 prompts).
- model options (one home each, strings only, so no torch is needed to check them):
  a device is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (``cuda1`` gets "did you
  mean 'cuda:1'"); a precision is ``fp32``/``float32``, ``bf16``/``bfloat16`` or
  ``fp16``/``float16`` (the plugin and the CLI offer fp32 and bf16); ``compile`` is a bool or
  a torch.compile mode without CUDA graphs (``default``, ``max-autotune-no-cudagraphs``):
  ``reduce-overhead`` and ``max-autotune`` use CUDA graphs, which overwrite a compiled
  module's outputs at its next call while the predictors keep features and memories across
  calls, so they are refused rather than silently ignored.
- an image is pixels, never a file name (``str``/``Path``): read the file first.
- a mask prompt is a 2-D ``(H, W)`` array of the frame's size holding 0/1 (or bool), with
  at least one pixel set: an empty mask would tell the model the object is absent.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_sam2.errors import InputTypeError, NapariSam2Error, OutOfRangeError

__all__ = [
    "MAX_POINTS_PER_SIDE",
    "POINT_LABELS",
    "ParameterError",
    "PromptError",
    "check_compile_mode",
    "check_device_name",
    "check_fraction",
    "check_precision_name",
    "check_generator_settings",
    "check_image_not_path",
    "check_box",
    "check_frame_index",
    "check_mask",
    "check_obj_id",
    "check_points",
]

#: the largest points_per_side accepted: 256 points a side prompt every 4 px of the model's
#: 1024 px input (65,536 prompts, 1,024 decoder batches); a larger number is a pixel spacing
MAX_POINTS_PER_SIDE = 256
#: the segment-everything settings that are fractions in [0, 1]
FRACTION_SETTINGS = (
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "crop_nms_thresh",
    "dedupe_iou_thresh",
)

#: the point labels the public API takes
POINT_LABELS = {1: "positive (part of the object)", 0: "negative (not part of the object)"}


class PromptError(NapariSam2Error, ValueError):
    """A prompt (point, box, mask, object id, frame) that cannot be used, with a message that
    names the argument, the value and what to do."""


class ParameterError(NapariSam2Error, ValueError):
    """A setting (threshold, grid size, image argument) that cannot be used, with a message
    that names the parameter, the value and the fix."""


def _show(value: Any, limit: int = 60) -> str:
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_integer(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_obj_id(obj_id: Any, *, argument: str = "obj_id") -> int:
    """An object id as a Python int; anything but an integer is refused."""
    if _is_integer(obj_id):
        return int(obj_id)
    if isinstance(obj_id, (float, np.floating)) and float(obj_id).is_integer():
        return int(obj_id)  # 3.0 from a CSV column is the integer 3
    raise PromptError(
        f"{argument} must be an integer object id (e.g. 1, 2, 3); got {_show(obj_id)} "
        f"({type(obj_id).__name__}). Give each object its own whole number."
    )


def check_frame_index(frame_idx: Any, num_frames: int, *, argument: str = "frame_idx") -> int:
    """A frame index in ``0 .. num_frames - 1`` (IndexError when out of range, as Python's)."""
    if not _is_integer(frame_idx):
        if isinstance(frame_idx, (float, np.floating)) and float(frame_idx).is_integer():
            frame_idx = int(frame_idx)
        else:
            raise InputTypeError(
                f"{argument} must be an integer frame index; got {_show(frame_idx)} ({type(frame_idx).__name__})"
            )
    frame_idx = int(frame_idx)
    if not 0 <= frame_idx < num_frames:
        raise OutOfRangeError(
            f"{argument} {frame_idx} is outside the stack (0 .. {num_frames - 1}); "
            "frames are counted from 0 along the propagation axis"
        )
    return frame_idx


def _as_float_array(value: Any, argument: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{argument} must be numbers; got {_show(value)}") from None
    return arr


def _check_inside(xy: np.ndarray, width: int, height: int, normalized: bool, argument: str) -> None:
    """Refuse non-finite coordinates and coordinates outside the frame (``xy``: (..., 2))."""
    flat = xy.reshape(-1, 2)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        x, y = flat[np.argmax(bad)]
        raise PromptError(
            f"{argument} holds a coordinate that is not a finite number (x={x}, y={y}); "
            "give (x, y) pixel positions as plain numbers"
        )
    hi = np.array([1.0, 1.0]) if normalized else np.array([float(width), float(height)])
    outside = ((flat < 0) | (flat > hi)).any(axis=1)
    if outside.any():
        x, y = flat[np.argmax(outside)]
        where = "[0, 1] (normalize_coords=False)" if normalized else f"the {width} x {height} frame"
        raise PromptError(
            f"{argument}: (x={x:g}, y={y:g}) lies outside {where}; coordinates are (x, y) = (column, row) "
            "pixels of the frame: move or delete the prompt"
        )


def check_points(
    points: Any,
    labels: Any,
    width: int,
    height: int,
    *,
    normalized: bool = False,
    argument: str = "points",
    labels_argument: str = "labels",
) -> tuple[np.ndarray, np.ndarray]:
    """Clicks ``(..., N, 2)`` as ``(x, y)`` and their labels ``(..., N)``, checked.

    Returns float32 coordinates and int32 labels of the same leading shape.
    """
    if (points is None) != (labels is None):
        raise PromptError(
            f"{argument} and {labels_argument} must be given together: one label (1 or 0) per point"
        )
    xy = _as_float_array(points, argument)
    if xy.ndim < 2 or xy.shape[-1] != 2:
        raise PromptError(f"{argument} must have shape (N, 2) as (x, y) pairs; got shape {xy.shape}")
    lab = np.asarray(labels)
    if lab.dtype == object or lab.dtype.kind not in "biuf":
        raise PromptError(f"{labels_argument} must be numbers 1 or 0; got {_show(labels)}")
    if lab.shape != xy.shape[:-1]:
        raise PromptError(
            f"{argument} holds {xy.shape[-2]} point(s) (shape {xy.shape}) but {labels_argument} holds {lab.size} "
            f"label(s) (shape {lab.shape}); give one label per point, in the same layout"
        )
    labf = lab.astype(np.float64)
    wrong = ~np.isin(labf, (0.0, 1.0))
    if wrong.any():
        value = lab.reshape(-1)[np.argmax(wrong.reshape(-1))]
        raise PromptError(
            f"{labels_argument} holds {_show(value)}: a point label must be 1 (positive: part of the object) "
            "or 0 (negative: not part of the object)"
        )
    _check_inside(xy, width, height, normalized, argument)
    return xy.astype(np.float32), labf.astype(np.int32)


def check_box(
    box: Any, width: int, height: int, *, normalized: bool = False, argument: str = "box"
) -> np.ndarray:
    """Boxes ``(..., 4)`` as ``[x0, y0, x1, y1]`` with the corners put in order, checked."""
    b = _as_float_array(box, argument)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise PromptError(f"{argument} must be [x0, y0, x1, y1] (or (B, 4)); got {_show(box)}")
    corners = b.reshape(-1, 2, 2)
    _check_inside(corners, width, height, normalized, argument)
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    flat = (hi - lo <= 0).any(axis=1)
    if flat.any():
        bad = b.reshape(-1, 4)[np.argmax(flat)]
        raise PromptError(
            f"{argument} {_show(bad)} has zero width or height; draw the box around the object "
            "(two opposite corners)"
        )
    return np.concatenate([lo, hi], axis=1).reshape(b.shape).astype(np.float32)


def check_mask(
    mask: Any,
    height: int,
    width: int,
    *,
    argument: str = "mask",
    allow_empty: bool = False,
    where: str = "",
) -> np.ndarray:
    """A mask prompt of the frame's size as a bool array (0/1 or bool values only)."""
    arr = np.asarray(mask)
    at = f" {where}" if where else ""
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise PromptError(f"{argument}{at} must be a 2-D array of 0/1 or bool; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise PromptError(f"{argument}{at} must be 2-D (H, W); got shape {arr.shape}")
    if arr.shape != (height, width):
        raise PromptError(
            f"{argument}{at} has shape {arr.shape} but the frames are {(height, width)} (H, W); "
            "give a mask of the frame's size"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise PromptError(f"{argument}{at} contains NaN or infinite values; give 0/1 or bool")
    if arr.dtype != bool:
        values = np.unique(arr)
        other = values[(values != 0) & (values != 1)]
        if other.size:
            raise PromptError(
                f"{argument}{at} holds values other than 0 and 1 (e.g. {_show(other[0].item())}); "
                "for one object of a label image pass labels == obj_id"
            )
        arr = arr != 0
    if not allow_empty and not arr.any():
        raise PromptError(
            f"{argument}{at} is empty (no pixel set); an empty mask says nothing about the object: "
            "paint at least one pixel, or remove the object instead"
        )
    return arr


def check_fraction(name: str, value: Any) -> float:
    """A threshold in [0, 1]; a percentage (1 < value <= 100) is refused with its fraction."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise ParameterError(
            f"{name} must be a number between 0 and 1; got {_show(value)} ({type(value).__name__})"
        )
    x = float(value)
    if 0.0 <= x <= 1.0:
        return x
    if 1.0 < x <= 100.0:
        raise ParameterError(
            f"{name}={value:g} is outside [0, 1]: thresholds are fractions, not percentages; "
            f"for {value:g} % give {name}={x / 100:g}"
        )
    raise ParameterError(f"{name}={_show(value)} is outside [0, 1]; give a fraction between 0 and 1")


def check_points_per_side(value: Any, *, argument: str = "points_per_side") -> int:
    """A prompt-grid size: an integer 1 .. MAX_POINTS_PER_SIDE (see the module doc)."""
    if not _is_integer(value):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ParameterError(
                f"{argument} must be a whole number of points along each side (e.g. 32); got {_show(value)}"
            )
    n = int(value)
    if n < 1:
        raise ParameterError(f"{argument} must be >= 1 (points along each side, e.g. 32); got {n}")
    if n > MAX_POINTS_PER_SIDE:
        raise ParameterError(
            f"{argument}={n} is the number of prompt points along each side of the image (default 32, "
            f"{n}x{n} = {n * n:,} prompts here), not a spacing in pixels; give at most {MAX_POINTS_PER_SIDE} "
            "(for small, dense cells try 64 or 128, or crop_n_layers=1)"
        )
    return n


def check_generator_settings(**settings: Any) -> None:
    """Refuse segment-everything settings that cannot be meant (see the module doc); settings
    not named in the rules pass through unchecked."""
    for name, value in settings.items():
        if name in FRACTION_SETTINGS:
            check_fraction(name, value)
        elif name == "points_per_side" and value is not None:
            check_points_per_side(value)


def check_image_not_path(image: Any, *, where: str = "generate") -> None:
    """An image argument that is a file name gets a message saying to read the file first."""
    if isinstance(image, (str, os.PathLike)):
        raise ParameterError(
            f"{where} takes the image's pixels, not a file name ({str(image)!r}); read it first, e.g. "
            "tifffile.imread(path), or napari_sam2.engine.frames.open.open_frames(path)[t] for one frame of a stack"
        )


DEVICE_FORMS = (
    "'auto' (CUDA, then Apple MPS, then CPU), 'cpu', 'cuda', 'cuda:N' (GPU number N, from 0) or 'mps'"
)
#: precision names -> the canonical name (the dtype's name without "torch.")
PRECISION_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
}
#: torch.compile modes that keep a compiled module's outputs valid across calls (no CUDA graphs)
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_device_name(device: str, *, argument: str = "device") -> str:
    """A device string's syntax (availability is :func:`napari_sam2.engine.weights.build.resolve_device`'s):
    the normalised name, or a message naming the value and the forms that work."""
    import re

    if not isinstance(device, str):
        raise ParameterError(f"{argument} must be a string, one of {DEVICE_FORMS}; got {_show(device)}")
    name = device.strip().lower()
    if name in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"(cuda|cpu|mps):\d+", name):
        return name
    hint = ""
    m = re.fullmatch(r"(cuda|gpu)[\s_-]*(\d+)", name)
    if m:
        hint = f" (did you mean 'cuda:{m.group(2)}'?)"
    elif name == "gpu":
        hint = " (did you mean 'cuda'?)"
    raise ParameterError(f"unknown {argument} {device!r}{hint}; use {DEVICE_FORMS}")


def check_precision_name(
    value: Any, *, argument: str = "precision", allowed: Sequence[str] | None = None
) -> str:
    """``"bf16"``, ``"bfloat16"``... -> the canonical dtype name (``"float32"``, ``"bfloat16"``,
    ``"float16"``); ``allowed`` restricts the canonical names (the CLI and plugin: fp32, bf16)."""
    key = str(value).strip().lower().removeprefix("torch.") if isinstance(value, str) else None
    name = PRECISION_NAMES.get(key) if key is not None else None
    choices = sorted(allowed or set(PRECISION_NAMES.values()))
    words = ", ".join(k for k, v in PRECISION_NAMES.items() if v in choices)
    if name is None:
        raise ParameterError(f"{argument} {_show(value)} is not a precision; give one of {words}")
    if allowed is not None and name not in allowed:
        raise ParameterError(
            f"{argument} {value!r} ({name}) is not offered here; give one of {words} (bf16 has float32's "
            f"range; float16 mixed precision is available from Python as autocast_dtype=torch.float16)"
        )
    return name


def check_compile_mode(compile: Any, *, argument: str = "compile") -> str | None:
    """``compile=`` as the torch.compile mode to use, or None (not compiled); see the module doc."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return "max-autotune-no-cudagraphs"
    if isinstance(compile, str):
        mode = compile.strip().lower()
        if mode in COMPILE_MODES:
            return mode
        if mode in _CUDA_GRAPH_MODES:
            raise ParameterError(
                f"{argument}={compile!r} is not supported: it uses CUDA graphs, which overwrite a compiled "
                "module's outputs at its next call, and the predictors keep image features and memories "
                "across calls (masks would be silently wrong); use compile=True (max-autotune-no-cudagraphs) "
                "or compile='default'"
            )
        raise ParameterError(
            f"{argument}={compile!r} is not a torch.compile mode this model supports; use True, False, "
            f"or one of {', '.join(COMPILE_MODES)}"
        )
    raise ParameterError(
        f"{argument} must be True, False or a mode ({', '.join(COMPILE_MODES)}); got {_show(compile)}"
    )
