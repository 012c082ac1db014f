"""Headless batch tracking: a stack + prompts files -> a label stack (no napari, no Qt).

The same steps as the plugin's propagate, through the same :class:`TrackingSession`, for
scripts, ``napari-sam2 track`` and ``track-many``: prompts are read from the JSON/CSV files
the widget saves, every object is tracked through the stack, and the labels (label = object
id) are written in the format the output's suffix names (:func:`~.io.write_labels`: ImageJ
TIFF, OME-TIFF, OME-Zarr, NIfTI), in the input's space (axes, pixel size, affine).

Inputs: TIFF / OME-TIFF stacks, folders of images, OME-Zarr images, NIfTI files and DICOM
series folders, or in-memory arrays. A prompts file saved by the widget says how the image was
cut into frames (frame axis, held axes, channels), and that is applied here, so a batch run sees
the frames the widget saw. An image with more axes than one sequence (e.g. (T, Z, Y, X) tracked
along z) is one sequence per position of the other axes ("held" axes): each prompts file saved by
the widget tracks the position it was made at, or ``all_positions`` applies one prompts file to
every position; the labels have the input's full shape (without its channel axis).

Everything that can be checked is checked before the first frame is computed: the input is
readable, the prompts fit this stack, the output is writable and not an existing file (unless
overwriting was asked for), and the output is not the input.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.batch.inputs import open_stack, position_text, sequence_views, stack_layout
from napari_sam2.engine.frames.stack_view import StackView
from napari_sam2.engine.io import SourceMetadata, check_writable, write_labels
from napari_sam2.engine.prompts.prompt_files import StackInfo, load_prompts
from napari_sam2.engine.prompts.prompt_set import PromptSet, masks_to_labels
from napari_sam2.engine.track.session import FrameDone, ModelSpec, SessionError, Total, TrackingSession
from napari_sam2.engine.validation import PromptError
from napari_sam2.errors import InputError, NotAFolderError, NotWritableError

__all__ = ["BatchInputs", "TrackSequence", "prepare_track", "track_files", "track_stack", "window_normalizer"]

#: the name of the label image inside an OME-Zarr image (``labels/<name>``), unless given
DEFAULT_LABELS_NAME = "sam2"


def track_stack(
    predictor: Any,
    frames: Any,
    prompts: PromptSet,
    direction: str = "both",
    progress: Callable[[int, int], None] | None = None,
    channels: Sequence[int] | None = None,
    cancel: threading.Event | None = None,
    normalizer: Any = None,
) -> np.ndarray:
    """Track all prompted objects through ``frames`` ((T, H, W[, C]) array-like or path);
    returns labels (T, H, W) uint16.

    Saved corrections are replayed after a first propagation, as they were made (see
    :meth:`TrackingSession.replay`). ``progress(done, total)`` is called after each tracked
    frame. Frames the tracking does not reach (e.g. before the first prompt with
    ``direction="forward"``) stay 0. ``normalizer`` (a :class:`~.normalization.Normalizer`, e.g.
    a CT window) replaces the contrast fitted to the frames; its channels are the ones used.
    """
    if normalizer is not None and channels is not None and tuple(channels) != tuple(normalizer.channels):
        raise InputError(
            f"channels {list(channels)} differ from the normalizer's {list(normalizer.channels)}; "
            "make the normalizer with the channels to use"
        )
    session = TrackingSession()
    session.use_predictor(predictor)
    init: dict[str, Any] = {}
    if normalizer is not None:
        init["normalizer"] = normalizer
    elif channels is not None:
        init["channels"] = tuple(channels)
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


def window_normalizer(window: Any, num_channels: int = 1, channels: Sequence[int] | None = None):
    """A fixed intensity window from ``window``: a CT preset name (``"lung"``, see
    ``CT_WINDOWS``), ``"CENTER,WIDTH"`` text, a ``(center, width)`` pair, or a Normalizer (kept)."""
    from napari_sam2.engine.frames.normalization import Normalizer

    if window is None or isinstance(window, Normalizer):
        return window
    if isinstance(window, str):
        parts = window.replace(";", ",").split(",")
        if len(parts) == 1:
            return Normalizer.ct_preset(window, num_channels=num_channels, channels=channels)
        try:
            window = tuple(float(p) for p in parts)
        except ValueError:
            raise InputError(
                f"a window is a CT preset name or CENTER,WIDTH numbers; got {window!r}"
            ) from None
    if len(window) != 2:
        raise InputError(f"a window is two numbers, center and width; got {window!r}")
    return Normalizer.window(float(window[0]), float(window[1]), num_channels=num_channels, channels=channels)


@dataclass(frozen=True)
class TrackSequence:
    """One sequence of frames to track: where it lies in the image (``view``), its frames and
    its prompts, and the prompts file they came from."""

    view: StackView
    frames: Any
    prompts: PromptSet
    prompts_file: str


@dataclass(frozen=True)
class BatchInputs:
    """Everything :func:`track_files` checked before computing: the sequences to track (lazy
    frames + prompts each), the channels and normalizer, the labels' shape and metadata, and
    the output."""

    sequences: tuple[TrackSequence, ...]
    stack: StackInfo
    channels: tuple[int, ...] | None
    output: Path
    labels_shape: tuple[int, ...]
    metadata: SourceMetadata
    labels_name: str = DEFAULT_LABELS_NAME
    normalizer: Any = None
    closers: tuple[Callable[[], None], ...] = field(default=(), repr=False)

    @property
    def frames(self) -> Any:
        """The frames of the first sequence (the only one of a 3-D stack)."""
        return self.sequences[0].frames

    @property
    def prompts(self) -> PromptSet:
        return self.sequences[0].prompts

    @property
    def num_frames(self) -> int:
        """Frames over all sequences (for a progress bar)."""
        return sum(s.frames.num_frames for s in self.sequences)

    def labels_index(self, view: StackView) -> tuple:
        """Where one sequence's (frames, y, x) block goes in the labels (no channel axis)."""
        index = list(view.sequence_index())
        if view.channel_axis is not None:
            del index[view.channel_axis]
        return tuple(index)

    def close(self) -> None:
        for close in self.closers:
            close()


# --------------------------------------------------------------------------------------------
# checks and inputs


def _check_output(output_path: str | Path, overwrite: bool, labels_name: str, stack: Any) -> Path:
    out = Path(output_path).expanduser()
    if out.is_dir() and not out.name.lower().endswith(".zarr"):
        raise InputError(f"the output {out} is a folder; give a file name such as {out / 'labels.tif'}")
    kind = check_writable(out, name=labels_name, overwrite=overwrite)
    if isinstance(stack, (str, os.PathLike)):
        src = Path(stack).expanduser().resolve()
        dst = out.resolve()
        same_image = dst == src and kind == "ome-zarr"
        if (dst == src or src in dst.parents) and not same_image:
            raise InputError(
                f"the output {out} would be written {'over' if dst == src else 'inside'} the input {stack}; "
                "write the labels elsewhere (only an OME-Zarr image takes labels inside, as labels/<name>)"
            )
    # the folder is made when the labels are written; here only whether it can be
    existing = out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotAFolderError(f"cannot create the output folder {out.parent}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NotWritableError(f"cannot write into the output folder {existing}: permission denied")
    return out


def prepare_track(
    stack: str | Path | Any,
    prompts_path: str | Path | Sequence[str | Path],
    output_path: str | Path,
    *,
    channels: Sequence[int] | None = None,
    overwrite: bool = False,
    frame_axis: int | None = None,
    all_positions: bool = False,
    window: Any = None,
    labels_name: str = DEFAULT_LABELS_NAME,
) -> BatchInputs:
    """Check everything a batch run needs before any frame is computed (see the module doc).

    ``prompts_path`` is one prompts file or several (one per position of a 3D+t image);
    ``frame_axis`` the axis to propagate along (default: the prompts file's, else the first
    axis that is neither the image plane nor channels); ``window`` a fixed intensity window
    (:func:`window_normalizer`). The caller closes the result (:meth:`BatchInputs.close`).
    """
    from napari_sam2.engine.frames.normalization import choose_channels
    from napari_sam2.engine.frames.open import open_frames

    if not labels_name or any(c in labels_name for c in "/\\") or labels_name in (".", ".."):
        raise InputError(f"the labels name {labels_name!r} must be a plain name, e.g. sam2")
    output = _check_output(output_path, overwrite, labels_name, stack)
    paths = [prompts_path] if isinstance(prompts_path, (str, os.PathLike)) else list(prompts_path)
    if not paths:
        raise PromptError("no prompts file was given")
    loaded = []
    for p in paths:
        prompts, info = load_prompts(p)
        if not prompts:
            raise PromptError(f"{Path(p).name} holds no prompt: add at least one point, box or mask")
        loaded.append((Path(p).name, prompts, info))
    stack_infos = [info for _, _, info in loaded if info.shape is not None]
    base = stack_infos[0] if stack_infos else StackInfo()
    for info in stack_infos[1:]:
        if (info.shape, info.channel_axis, info.channels, info.rgb) != (
            base.shape,
            base.channel_axis,
            base.channels,
            base.rgb,
        ):
            raise PromptError(
                f"the prompts files describe different images: {base.describe()} and {info.describe()}"
            )
    raw, metadata, closers = open_stack(stack)
    try:
        raw_shape = tuple(int(s) for s in raw.shape)
        shape, rgb, channel_axis, remap = stack_layout(raw_shape, metadata, base, channels)
        loaded = [(name, prompts, remap(info)) for name, prompts, info in loaded]
        base = remap(base)
        views = sequence_views(shape, rgb, channel_axis, loaded, frame_axis, all_positions)
        sequences = []
        for view, prompts, name in views:
            source = open_frames(view.frames(raw))
            prompts.check(source.num_frames, source.height, source.width)
            sequences.append(TrackSequence(view, source, prompts, name))
        num_channels = sequences[0].frames.num_channels
        chosen = channels if channels is not None else base.channels
        if chosen is not None:
            if num_channels == 1 and channels is not None:
                raise InputError(f"--channels {list(channels)} was given, but the stack has one channel")
            chosen = choose_channels(num_channels, chosen)
        normalizer = window_normalizer(window, num_channels, chosen)
        if normalizer is not None:
            chosen = normalizer.channels
        labels_shape = tuple(s for a, s in enumerate(shape) if a != channel_axis)
        return BatchInputs(
            tuple(sequences), base, chosen, output, labels_shape, metadata, labels_name, normalizer, closers
        )
    except BaseException:
        for close in closers:
            close()
        raise


def track_files(
    stack_path: str | Path,
    prompts_path: str | Path | Sequence[str | Path],
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
    *,
    frame_axis: int | None = None,
    all_positions: bool = False,
    window: Any = None,
    labels_name: str = DEFAULT_LABELS_NAME,
    embedding_cache: Any = "auto",
) -> Path:
    """Read a stack and its prompts file(s), track, and write the labels by the output's suffix.

    Inputs: see ``INPUT_FORMATS``; outputs: ``OUTPUT_FORMATS`` (:func:`~.io.write_labels`, with
    the input's axes, pixel size and affine). Every argument is checked before the model is
    loaded (:func:`prepare_track`); the labels appear under their final name only once complete,
    so a failure never leaves half a file. ``builder`` replaces the model builder (tests, the
    model cache of :mod:`.distributed`). Returns the path written (``<image>.zarr/labels/<name>``
    for labels added to an OME-Zarr image). ``embedding_cache`` is the option of
    :func:`~.embedding_cache.resolve_embedding_cache` for the default builder.
    """
    from napari_sam2.engine.track.session import build_predictor
    from napari_sam2.engine.weights.download import ensure_checkpoint

    if direction not in ("forward", "backward", "both"):
        raise SessionError(f"direction must be 'forward', 'backward' or 'both', not {direction!r}")
    inputs = prepare_track(
        stack_path,
        prompts_path,
        output_path,
        channels=channels,
        overwrite=overwrite,
        frame_axis=frame_axis,
        all_positions=all_positions,
        window=window,
        labels_name=labels_name,
    )
    try:
        spec = ModelSpec(
            config_name, None if checkpoint is None else str(checkpoint), device, precision, compile
        )
        if builder is None:
            from napari_sam2.engine.weights.build import resolve_device

            resolve_device(device)  # a bad device fails now, not after a download
            ensure_checkpoint(config_name, checkpoint, download=True)
            builder = functools.partial(build_predictor, embedding_cache=embedding_cache)
        predictor = builder(spec)
        labels = _track_all(predictor, inputs, direction, progress)
        return write_labels(
            inputs.output, labels, inputs.metadata, name=inputs.labels_name, overwrite=overwrite
        )
    finally:
        inputs.close()


def _track_all(predictor: Any, inputs: BatchInputs, direction: str, progress: bool) -> np.ndarray:
    """Every sequence tracked on its own, its labels put at its place in the whole image."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="tracking", unit="frame", total=inputs.num_frames)
    offset = 0

    def report(done: int, total: int) -> None:
        if bar is not None:
            bar.update(offset + done - bar.n)

    labels = np.zeros(inputs.labels_shape, dtype=np.uint16)
    try:
        for seq in inputs.sequences:
            if bar is not None and len(inputs.sequences) > 1:
                bar.set_postfix_str(position_text(seq.view))
            out = track_stack(
                predictor,
                seq.frames,
                seq.prompts,
                direction,
                report,
                None if inputs.normalizer is not None else inputs.channels,
                normalizer=inputs.normalizer,
            )
            labels[inputs.labels_index(seq.view)] = out
            offset += seq.frames.num_frames
    finally:
        if bar is not None:
            bar.close()
    return labels
