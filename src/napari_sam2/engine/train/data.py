"""Training data: labelled stacks (images + instance labels) and a leak-free train/validation split.

A :class:`LabeledStack` pairs a stack of frames with a label stack of the same (T, H, W):
numpy arrays as a napari Image and Labels layer hold them, TIFF / OME-Zarr label stacks
(read with :func:`~napari_sam2.engine.frames.open.open_frames`) or the project's Cell Tracking
Challenge folders (``man_track.txt`` + ``maskTTT.tif``). Only frames that carry at least one
label are used: a user who corrected five frames of a movie trains on those five.

The split never puts neighbouring frames on both sides: whole stacks go to validation, or
contiguous time blocks with a gap of ``gap`` frames dropped on each side of a validation
block (consecutive frames of a time-lapse are near copies, so a random frame split would
measure memorisation, not generalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.engine.frames.open import open_frames
from napari_sam2.engine.io.source import FrameSource
from napari_sam2.errors import NapariSam2Error

#: how the validation frames are held out (see :func:`split_frames`)
SPLITS = ("auto", "stack", "time")


class TrainingDataError(NapariSam2Error, ValueError):
    """Training data that cannot be used; the message names the input and what to do."""


@dataclass(frozen=True)
class FrameRef:
    """One labelled frame: stack ``stack`` (index into the stack list), time ``t``."""

    stack: int
    t: int


@dataclass
class LabeledStack:
    """A stack of frames with its instance labels (0 = background, each other id one object)."""

    name: str
    frames: FrameSource
    labels: Any  # (T, H, W) integer array-like, read frame by frame
    normalizer: Normalizer
    labelled: tuple[int, ...] = field(default=())  # frames with at least one object

    def label_frame(self, t: int) -> np.ndarray:
        return np.asarray(self.labels[t])

    def image_rgb(self, t: int) -> np.ndarray:
        """Frame ``t`` as float RGB in [0, 1], normalised as the predictors do."""
        return self.normalizer.frame_rgb(self.frames, t)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _is_ctc_folder(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*_track.txt")) and any(path.glob("mask*.tif"))


def open_labels(source: Any, name: str = "labels") -> Any:
    """A label stack from an array, a label TIFF / OME-Zarr stack or a CTC folder -> (T, H, W) array-like."""
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if _is_ctc_folder(path):
            from napari_sam2.engine.cells.track_exports import read_ctc

            return read_ctc(path)[0]
        src = open_frames(path)
        if len(src.shape) != 3:
            raise TrainingDataError(
                f"{name} ({path}) has shape {src.shape}; a label stack is (T, H, W) with one integer id per pixel"
            )
        if np.dtype(src.dtype).kind not in "ui":
            raise TrainingDataError(
                f"{name} ({path}) holds {src.dtype} values; labels must be integers (0 = background). "
                "Did you pass the image as the labels?"
            )
        return src
    arr = source
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        arr = np.asarray(arr)
    if np.dtype(arr.dtype).kind not in "uib":
        raise TrainingDataError(
            f"{name} holds {arr.dtype} values; labels must be integers (0 = background). "
            "Did you pass the image as the labels?"
        )
    if len(arr.shape) == 2:
        arr = np.asarray(arr)[None]
    if len(arr.shape) != 3:
        raise TrainingDataError(
            f"{name} has shape {tuple(arr.shape)}; expected (T, H, W) or one (H, W) frame"
        )
    return arr


def labeled_stack(
    images: Any,
    labels: Any,
    name: str | None = None,
    *,
    normalizer: Normalizer | None = None,
    channel_axis: int | None = None,
    channels: tuple[int, ...] | None = None,
) -> LabeledStack:
    """Pair ``images`` (anything :func:`open_frames` takes, or one (H, W[, C]) image) with ``labels``.

    ``labels`` is a (T, H, W) integer array, a label TIFF / OME-Zarr stack or a CTC folder.
    The normaliser is fitted on the stack, seeing ``channels`` (the 1 to 3 the model sees, as
    tracking's ``init_state`` fits it), unless given (pass the one the widget uses so that
    training sees the frames as tracking does).
    """
    name = name or (str(images) if isinstance(images, (str, Path)) else "stack")
    if isinstance(images, np.ndarray) and images.ndim == 2:
        images = images[None]
    frames = open_frames(images, channel_axis=channel_axis)
    lab = open_labels(labels, name=f"the labels of {name}")
    if tuple(lab.shape) != tuple(frames.shape[:3]):
        raise TrainingDataError(
            f"the labels of {name} have shape {tuple(lab.shape)} but its frames are {tuple(frames.shape[:3])}; "
            "pass the label stack drawn on exactly these frames (same T, H, W)"
        )
    labelled = tuple(t for t in range(frames.shape[0]) if np.any(np.asarray(lab[t])))
    if normalizer is None:
        normalizer = Normalizer.fit(frames, channels=channels)
    return LabeledStack(name, frames, lab, normalizer, labelled)


def labelled_frames(stacks: Sequence[LabeledStack]) -> list[FrameRef]:
    return [FrameRef(i, t) for i, s in enumerate(stacks) for t in s.labelled]


def split_frames(
    stacks: Sequence[LabeledStack],
    val_fraction: float = 0.2,
    *,
    by: str = "auto",
    block: int = 8,
    gap: int = 1,
    seed: int = 0,
) -> tuple[list[FrameRef], list[FrameRef]]:
    """(train, validation) labelled frames, deterministic for a seed.

    ``by="stack"`` keeps whole stacks apart; ``by="time"`` cuts every stack's labelled frames
    into blocks of ``block`` consecutive frames and sends about ``val_fraction`` of the blocks
    to validation, dropping from training the frames within ``gap`` of a validation block.
    ``"auto"`` splits by stack when there are at least 3 stacks, else by time.
    ``val_fraction=0`` gives an empty validation set.
    """
    if not stacks:
        raise TrainingDataError("no training stacks given; pass at least one image stack with its labels")
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingDataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if by not in SPLITS:
        raise TrainingDataError(f"split by={by!r}: use 'stack', 'time' or 'auto'")
    if block < 1 or gap < 0:
        raise TrainingDataError(f"block must be >= 1 and gap >= 0, got block={block}, gap={gap}")
    empty = [s.name for s in stacks if not s.labelled]
    if len(empty) == len(stacks):
        raise TrainingDataError(
            f"none of the stacks ({', '.join(empty)}) has a labelled frame; draw or correct some cells first"
        )
    rng = np.random.default_rng(seed)
    if by == "auto":
        by = "stack" if len(stacks) >= 3 else "time"
    if val_fraction == 0:
        return labelled_frames(stacks), []
    if by == "stack":
        usable = [i for i, s in enumerate(stacks) if s.labelled]
        if len(usable) < 2:
            raise TrainingDataError(
                "a split by stack needs at least two stacks with labels; split by time instead (by='time')"
            )
        n_val = min(len(usable) - 1, max(1, round(val_fraction * len(usable))))
        val_stacks = set(rng.choice(usable, n_val, replace=False).tolist())
        train = [FrameRef(i, t) for i in usable if i not in val_stacks for t in stacks[i].labelled]
        val = [FrameRef(i, t) for i in sorted(val_stacks) for t in stacks[i].labelled]
        return train, val
    blocks = [
        (i, s.labelled[k : k + block]) for i, s in enumerate(stacks) for k in range(0, len(s.labelled), block)
    ]
    if len(blocks) < 2:
        raise TrainingDataError(
            f"only {sum(len(s.labelled) for s in stacks)} labelled frames: too few for a split by time in blocks "
            f"of {block}; label more frames, lower block, or pass val_fraction=0 to train without validation"
        )
    n_val = min(len(blocks) - 1, max(1, round(val_fraction * len(blocks))))
    val_idx = set(rng.choice(len(blocks), n_val, replace=False).tolist())
    val = [FrameRef(i, t) for k, (i, ts) in enumerate(blocks) if k in val_idx for t in ts]
    near = {(r.stack, t) for r in val for t in range(r.t - gap, r.t + gap + 1)}
    train = [
        FrameRef(i, t)
        for k, (i, ts) in enumerate(blocks)
        if k not in val_idx
        for t in ts
        if (i, t) not in near
    ]
    if not train:
        raise TrainingDataError("the split left no training frame; label more frames or lower val_fraction")
    return train, val
