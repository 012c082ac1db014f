"""Headless batch tracking: a stack + a prompts file -> a label stack (no napari, no Qt).

The same steps as the plugin's propagate, through the same :class:`TrackingSession`, for
scripts and the ``napari-sam2 track`` command: prompts are read from the JSON/CSV files
the widget saves, every object is tracked through the stack, and the result is one label
image per frame (label = object id). A prompts file saved by the widget also says how the
image was cut into frames (frame axis, held axes, channels), and that is applied here, so
a batch run sees the frames the widget saw.

Everything that can be checked is checked before the first frame is computed: the input
is readable, the prompts fit this stack, the output is writable and not an existing file
(unless overwriting was asked for).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .prompt_files import StackInfo, load_prompts
from .prompts import PromptSet, masks_to_labels
from .session import FrameDone, ModelSpec, SessionError, Total, TrackingSession
from .stack_view import StackView
from .validation import PromptError

__all__ = ["BatchInputs", "prepare_track", "track_files", "track_stack"]

LABEL_SUFFIXES = (".tif", ".tiff")


def track_stack(
    predictor: Any,
    frames: Any,
    prompts: PromptSet,
    direction: str = "both",
    progress: Callable[[int, int], None] | None = None,
    channels: Sequence[int] | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """Track all prompted objects through ``frames`` ((T, H, W[, C]) array-like or path);
    returns labels (T, H, W) uint16.

    Saved corrections are replayed after a first propagation, as they were made (see
    :meth:`TrackingSession.replay`). ``progress(done, total)`` is called after each tracked
    frame. Frames the tracking does not reach (e.g. before the first prompt with
    ``direction="forward"``) stay 0.
    """
    session = TrackingSession()
    session.use_predictor(predictor)
    init = {} if channels is None else {"channels": tuple(channels)}
    for _ in session.open(None, ("batch", id(frames)), lambda: frames, **init):
        pass
    state = session.state
    try:
        n, h, w = state.num_frames, state.video_height, state.video_width
        if not prompts:
            raise PromptError("the prompts hold no prompt: add at least one point, box or mask")
        prompts.check(n, h, w)
        labels = np.zeros((n, h, w), dtype=np.uint16)
        total = done = 0
        for event in session.replay(prompts, n, direction, cancel=cancel):
            if isinstance(event, FrameDone):
                labels[event.frame] = masks_to_labels(event.obj_ids, event.logits)
                if event.tracked:
                    done += 1
                    if progress is not None:
                        progress(done, max(total, done))
            elif isinstance(event, Total):
                total += event.frames
        return labels
    finally:
        session.close()


@dataclass(frozen=True)
class BatchInputs:
    """Everything :func:`track_files` checked before computing: the frames to track (lazy),
    the prompts, the channels and the output path."""

    frames: Any
    prompts: PromptSet
    stack: StackInfo
    channels: tuple[int, ...] | None
    output: Path
    num_frames: int


def _check_output(output_path: str | Path, overwrite: bool) -> Path:
    out = Path(output_path).expanduser()
    if out.suffix.lower() not in LABEL_SUFFIXES:
        raise ValueError(
            f"cannot write labels to {out.name}: the output must be a TIFF file ({', '.join(LABEL_SUFFIXES)})"
        )
    if out.is_dir():
        raise ValueError(f"the output {out} is a folder; give a file name such as {out / 'labels.tif'}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"the output {out} exists; pass --overwrite (overwrite=True) to replace it")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"cannot create the output folder {parent} ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write into the output folder {parent}: permission denied")
    return out


def _raw_stack(path: Path):
    """The stack at ``path`` as a lazy array of its own shape (TIFF: through tifffile's zarr
    store, nothing read up front), or the frame source of a folder of images."""
    from .frames import FrameSourceError, open_frames

    if path.is_file() and path.suffix.lower() in (".tif", ".tiff"):
        import dask.array as da
        import tifffile
        import zarr

        try:
            with tifffile.TiffFile(path) as tif:
                shape = tuple(tif.series[0].shape)
            store = tifffile.imread(path, aszarr=True)
            z = zarr.open(store, mode="r")
            if isinstance(z, zarr.Group):
                z = z[0]
        except Exception as e:  # noqa: BLE001 - any failure means "not readable as TIFF"
            raise FrameSourceError(f"cannot read {path} as a TIFF stack: {e}") from e
        if tuple(z.shape) != shape:
            raise FrameSourceError(
                f"cannot read {path} lazily (its pixel data does not match its shape {shape})"
            )
        return da.from_array(z, chunks=(1,) * (len(shape) - 2) + shape[-2:])
    return open_frames(path)


def prepare_track(
    stack: str | Path | Any,
    prompts_path: str | Path,
    output_path: str | Path,
    *,
    channels: Sequence[int] | None = None,
    overwrite: bool = False,
) -> BatchInputs:
    """Check everything a batch run needs before any frame is computed (see the module doc)."""
    from .frames import open_frames
    from .normalization import choose_channels

    output = _check_output(output_path, overwrite)
    prompts, info = load_prompts(prompts_path)
    if not prompts:
        raise PromptError(f"{Path(prompts_path).name} holds no prompt: add at least one point, box or mask")
    raw = _raw_stack(Path(stack).expanduser()) if isinstance(stack, (str, os.PathLike)) else stack
    if info.shape is not None and hasattr(raw, "ndim") and not hasattr(raw, "num_frames"):
        rgb = info.rgb and raw.shape[-1] in (3, 4) and len(raw.shape) == len(info.shape) + 1
        shape = tuple(raw.shape[:-1]) if rgb else tuple(raw.shape)
        info.check_shape(
            shape, f"the stack {stack}" if isinstance(stack, (str, os.PathLike)) else "the stack"
        )
        view: StackView = info.view(shape, rgb)
        if view.frame_axis is None:
            raise ValueError("the prompts were made on a single 2-D image: there is nothing to track through")
        frames = view.frames(raw)
    else:
        frames = raw
    source = open_frames(frames)
    chosen = channels if channels is not None else info.channels
    if chosen is not None:
        if source.num_channels == 1 and channels is not None:
            raise ValueError(f"--channels {list(channels)} was given, but the stack has one channel")
        chosen = choose_channels(source.num_channels, chosen)
    prompts.check(source.num_frames, source.height, source.width)
    return BatchInputs(source, prompts, info, chosen, output, source.num_frames)


def track_files(
    stack_path: str | Path,
    prompts_path: str | Path,
    output_path: str | Path,
    config_name: str = "sam2.1_hiera_t",
    checkpoint: str | Path | None = None,
    device: str = "auto",
    direction: str = "both",
    overwrite: bool = False,
    progress: bool = True,
    channels: Sequence[int] | None = None,
    precision: str = "fp32",
    compile: bool = False,
    builder: Callable[[ModelSpec], Any] | None = None,
) -> Path:
    """Read a stack (TIFF, or a folder of images) and a prompts file, write the labels as TIFF.

    Every argument is checked before the model is loaded (:func:`prepare_track`); the labels
    are written next to the output and renamed into place, so a failure never leaves half a
    file. ``builder`` replaces the model builder (tests).
    """
    import tifffile

    from .checkpoints import ensure_checkpoint
    from .session import build_predictor

    inputs = prepare_track(stack_path, prompts_path, output_path, channels=channels, overwrite=overwrite)
    spec = ModelSpec(config_name, None if checkpoint is None else str(checkpoint), device, precision, compile)
    if direction not in ("forward", "backward", "both"):
        raise SessionError(f"direction must be 'forward', 'backward' or 'both', not {direction!r}")
    if builder is None:
        from .build import resolve_device

        resolve_device(device)  # a bad device fails now, not after a download
        ensure_checkpoint(config_name, checkpoint, download=True)
        builder = build_predictor
    predictor = builder(spec)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="tracking", unit="frame", total=inputs.num_frames)

    def report(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        labels = track_stack(predictor, inputs.frames, inputs.prompts, direction, report, inputs.channels)
    finally:
        if bar is not None:
            bar.close()
    out = inputs.output
    tmp = out.with_name(out.name + ".part")
    tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack", metadata={"axes": "TYX"})
    tmp.replace(out)  # never leave a half-written result under the final name
    return out
