"""Tracking sessions: one predictor, one stack, and what the engine has seen of the prompts.

A :class:`TrackingSession` is shared by the plugin's annotator and the command line, so
that both send prompts to the engine the same way (:meth:`TrackingSession.send` is the one
place that does) and propagate along the same plan. It owns:

- which prompts the engine has (a fingerprint per frame and object), so that
  :meth:`~TrackingSession.sync` sends only what changed: new or edited prompts, prompts
  deleted from a frame, objects with no prompt left;
- which prompts are *corrections* (made on a frame the object had been tracked to: they
  refine the tracked mask) and which define an object from scratch (they are always sent
  afresh, so the same prompts give the same mask, in the widget and in a batch run);
- where a propagation starts (after a correction: from the corrected frame).

Every long step is a generator of typed events (:class:`Status`, :class:`Total`,
:class:`FrameDone`, :class:`ObjectRemoved`: :mod:`napari_sam2.engine.track.events`, shared with
the "All cells" run), which a GUI consumes one at a time from a worker thread and a script
simply iterates. All methods may run in a worker thread; the caller guarantees one call at
a time.

An "All cells" run (:mod:`napari_sam2.engine.cells.track_all`) is a client of the same session:
it adds objects from masks (:meth:`TrackingSession.add_mask`), removes them
(:meth:`TrackingSession.remove_object`) and propagates from a frame, on the one video state
the clicks use. Its objects are outside any prompt set: the next :meth:`~TrackingSession.sync`
of the clicks' prompts starts the engine over (the frames and their features stay).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sam2.engine.predict.protocols import (
    EXTENSION_NEED_OUTPUT,
    EXTENSION_REFINE,
    VideoPredictor,
    extensions_of,
)
from napari_sam2.engine.prompts.prompt_set import ObjectPrompt, PromptSet
from napari_sam2.engine.track.events import Event, FrameDone, ObjectRemoved, Status, Total
from napari_sam2.errors import NapariSam2Error

__all__ = [
    "DIRECTIONS",
    "Event",
    "FrameDone",
    "ModelSpec",
    "ObjectRemoved",
    "Pass",
    "SessionError",
    "Status",
    "Total",
    "TrackingSession",
    "build_predictor",
    "to_numpy_logits",
]

DIRECTIONS = ("forward", "backward", "both")
PRECISIONS = ("fp32", "bf16")


class SessionError(NapariSam2Error, RuntimeError):
    """A problem the user can fix, with a plain message (no traceback needed)."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run and how: the variant, a checkpoint file (None: the official one from
    the cache), the device (``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``), the precision
    (``"fp32"``, or ``"bf16"`` mixed precision) and whether to ``torch.compile`` it."""

    config_name: str = "sam2.1_hiera_t"
    checkpoint: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    compile: bool | str = False

    def __post_init__(self) -> None:
        # parsing only: each rule's home is engine/validation.py (aliases such as "bfloat16" map to "bf16")
        from napari_sam2.engine.validation import (
            ParameterError,
            check_compile_mode,
            check_device_name,
            check_precision_name,
        )

        try:
            name = check_precision_name(self.precision, allowed=("float32", "bfloat16"))
            object.__setattr__(self, "precision", {"float32": "fp32", "bfloat16": "bf16"}[name])
            check_device_name(self.device)
            check_compile_mode(self.compile)
        except ParameterError as exc:
            raise SessionError(str(exc)) from None


@dataclass(frozen=True)
class Pass:
    """One propagation pass: from ``start`` over ``count`` frames, backwards when ``reverse``."""

    start: int
    reverse: bool
    count: int


def to_numpy_logits(masks: Any) -> np.ndarray:
    """Engine masks ``(num_objs, 1, H, W)`` (torch or numpy) -> float32 ``(num_objs, H, W)``."""
    if hasattr(masks, "detach"):
        masks = masks.detach().float().cpu().numpy()
    # a copy: the GUI thread reads it while the engine goes on (and may reuse buffers)
    masks = np.array(masks, dtype=np.float32, copy=True)
    if masks.ndim == 4:
        masks = masks[:, 0]
    elif masks.ndim == 2:
        masks = masks[None]
    return masks


def _frame_done(out: tuple, tracked: bool = False) -> FrameDone:
    frame, obj_ids, masks = out
    return FrameDone(int(frame), tuple(int(o) for o in obj_ids), to_numpy_logits(masks), tracked)


def build_predictor(spec: ModelSpec, **options: Any):
    """The video predictor for ``spec``, as the plugin and the command line use it.

    Corrections are kept as conditioning frames (``add_all_frames_to_correct_as_cond``):
    with Meta's default a correction on a tracked frame is re-tracked, and so lost, by the
    next propagation that passes over it (measured: a corrected mask of 27,405 px went back
    to the tracked 21,790 px).

    Image features go through the persistent embedding cache by default
    (``embedding_cache="auto"``: :mod:`napari_sam2.engine.cache.embedding_cache`), so that
    re-propagations and later sessions read them instead of encoding again; the environment
    variable ``NAPARI_SAM2_EMBEDDING_CACHE=0`` or ``embedding_cache=None`` turns it off.
    """
    import torch

    from napari_sam2.engine.predict.video_predictor import build_sam2_video_predictor

    options.setdefault("add_all_frames_to_correct_as_cond", True)
    options.setdefault("embedding_cache", "auto")
    if spec.precision == "bf16":
        options.setdefault("autocast_dtype", torch.bfloat16)
    return build_sam2_video_predictor(
        config_name=spec.config_name,
        checkpoint=spec.checkpoint,
        device=spec.device,
        compile=spec.compile,
        **options,
    )


@dataclass
class _Seen:
    """What the engine has of one (frame, object): its prompts' fingerprint and its kind."""

    fingerprint: tuple
    correction: bool


@dataclass
class TrackingSession:
    """A predictor plus the inference state of one sequence of frames (see the module doc)."""

    builder: Callable[[ModelSpec], Any] = build_predictor
    predictor: VideoPredictor | None = None
    model: ModelSpec | None = None
    state: Any = None
    frames_key: Any = None
    #: frames the engine has tracked, per object (a prompt there is a correction)
    tracked: dict[int, set[int]] = field(default_factory=dict)
    #: frames whose prompts changed since the last complete propagation ("auto" start)
    dirty_frames: set[int] = field(default_factory=set)
    propagated_once: bool = False
    _seen: dict[tuple[int, int], _Seen] = field(default_factory=dict)
    _given: bool = False
    _refine_kw: bool = False
    #: objects added from masks by a client ("All cells"), outside any prompt set
    _external: set[int] = field(default_factory=set)

    # ---- lifecycle
    def use_predictor(self, predictor: VideoPredictor) -> None:
        """Use this predictor (anything with the video predictor's methods) instead of building one."""
        self._drop_state()
        self.predictor, self.model, self._given = predictor, None, True
        self._refine_kw = EXTENSION_REFINE in extensions_of(predictor)

    def open(
        self, model: ModelSpec | None, frames_key: Any, frames_fn: Callable[[], Any], **init: Any
    ) -> Iterator[Event]:
        """Load the model (unless given or already loaded) and open the state of the frames
        identified by ``frames_key`` (``frames_fn()`` makes them; ``init`` goes to ``init_state``)."""
        if not self._given and (self.predictor is None or model != self.model):
            if model is None:
                raise SessionError("no model chosen")
            yield Status(f"Loading {model.config_name} on {model.device}…")
            self._drop_state()
            self.predictor = None
            self.predictor = self.builder(model)
            self.model = model
            self._refine_kw = EXTENSION_REFINE in extensions_of(self.predictor)
        if self.state is None or frames_key != self.frames_key:
            yield Status("Reading the frames…")
            self._drop_state()
            self.state = self.predictor.init_state(frames_fn(), **init)
            self.frames_key = frames_key

    @property
    def ready(self) -> bool:
        return self.predictor is not None and self.state is not None

    def _drop_state(self) -> None:
        if self.state is not None and self.predictor is not None:
            with contextlib.suppress(Exception):  # a stale state is discarded anyway
                self.predictor.reset_state(self.state)
            close = getattr(self.state, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
        self.state = None
        self.frames_key = None
        self._forget_prompts()
        self.propagated_once = False

    def _forget_prompts(self) -> None:
        self._seen.clear()
        self._external.clear()
        self.tracked.clear()
        self.dirty_frames.clear()

    def forget_sent(self) -> None:
        """After a failure: what reached the engine is unsure, so the next sync sends every
        prompt again (the tracked frames are kept)."""
        self._seen.clear()

    def reset(self) -> None:
        """Forget every prompt and result in the engine (the frames and their features stay)."""
        if self.state is not None:
            self.predictor.reset_state(self.state)
        self._forget_prompts()
        self.propagated_once = False

    def close(self) -> None:
        self._drop_state()
        self.predictor, self.model, self._given = None, None, False

    # ---- prompts
    @property
    def objects(self) -> set[int]:
        return {o for _, o in self._seen}

    @property
    def corrections(self) -> set[tuple[int, int]]:
        """(frame, object) pairs whose prompts the engine took as corrections of a tracked mask."""
        return {k for k, v in self._seen.items() if v.correction}

    def pending(self, prompts: PromptSet) -> bool:
        """True when ``prompts`` differ from what the engine has."""
        return prompts.fingerprints() != {k: v.fingerprint for k, v in self._seen.items()}

    def send(self, frame: int, obj_id: int, prompt: ObjectPrompt, correction: bool) -> FrameDone:
        """Send one object's prompts on one frame: the one place prompts reach the engine.

        A correction refines the mask the object has on the frame (Meta's semantics). Other
        prompts are sent afresh: the frame's earlier prompts and result for the object are
        cleared first and the mask is made from these prompts alone (a mask prompt first, then
        the clicks refining it), so the same prompts always give the same mask.
        """
        pred, state = self.predictor, self.state
        fresh = not correction
        if fresh and (frame, obj_id) in self._seen:
            _clear(pred, state, frame, obj_id)
        out = None
        if prompt.mask is not None:
            out = pred.add_new_mask(state, frame, obj_id, prompt.mask)
        if prompt.has_points_or_box:
            points, labels = prompt.engine_points()
            kwargs = {
                "points": points,
                "labels": labels,
                "clear_old_points": True,
                "box": prompt.engine_box(),
            }
            if self._refine_kw:
                # afresh: no earlier result feeds in, except the mask prompt given just above
                kwargs["refine"] = correction or prompt.mask is not None
            out = pred.add_new_points_or_box(state, frame, obj_id, **kwargs)
        if out is None:
            raise SessionError(f"object {obj_id} has no prompt on frame {frame}")
        return _frame_done(out)

    # ---- objects from masks ("All cells")
    def add_mask(self, frame: int, obj_id: int, mask: np.ndarray) -> FrameDone:
        """Define object ``obj_id`` on ``frame`` by a mask (a seed, a daughter, a new cell),
        outside any prompt set; it is tracked by the next :meth:`propagate`."""
        if not self.ready:
            raise SessionError("no model loaded")
        out = self.predictor.add_new_mask(self.state, frame, obj_id, mask)
        self._external.add(int(obj_id))
        return _frame_done(out)

    def remove_object(self, obj_id: int) -> None:
        """Forget an object in the engine (a lost cell, a mother after its division)."""
        self.predictor.remove_object(self.state, obj_id, need_output=False)
        self._external.discard(int(obj_id))
        for key in [k for k in self._seen if k[1] == obj_id]:
            del self._seen[key]
        self.tracked.pop(obj_id, None)

    def track_forward(self, start: int, count: int) -> Iterator[tuple[int, list, Any]]:
        """Propagate forward from ``start`` over ``count`` more frames, yielding the predictor's
        own ``(frame, obj_ids, masks)`` (masks stay on its device: a client that reduces them
        there copies only what it keeps). Close it to stop; restart it after objects changed."""
        if not self.ready:
            raise SessionError("no model loaded")
        gen = self.predictor.propagate_in_video(
            self.state, start_frame_idx=start, max_frame_num_to_track=count, reverse=False
        )
        try:
            for frame, obj_ids, masks in gen:
                for obj in obj_ids:
                    self.tracked.setdefault(int(obj), set()).add(int(frame))
                yield frame, obj_ids, masks
        finally:
            gen.close()

    def sync(self, prompts: PromptSet) -> Iterator[Event]:
        """Send the prompt changes to the engine; yields the masks of every frame whose prompts
        changed (all objects) and the objects removed (no prompt left anywhere)."""
        if not self.ready:
            raise SessionError("no model loaded")
        if self._external:  # an "All cells" run's objects are not the clicks': start over
            self.reset()
        new_objects = set(prompts.objects()) - self.objects
        try:
            events = list(self._sync(prompts))
        except Exception:
            if not (new_objects and self.tracked):
                raise
            # Some engines (Meta's among them) take no new object once tracking started:
            # start over with every prompt (cached image features stay).
            self.predictor.reset_state(self.state)
            self._forget_prompts()
            self.dirty_frames.update(prompts.frames())
            events = list(self._sync(prompts))
        yield from events

    def _sync(self, prompts: PromptSet) -> Iterator[Event]:
        pred, state = self.predictor, self.state
        current = prompts.fingerprints()
        wanted = set(prompts.objects())
        results: dict[int, FrameDone] = {}
        for obj in sorted(self.objects - wanted):
            out = pred.remove_object(state, obj)
            for key in [k for k in self._seen if k[1] == obj]:
                self.dirty_frames.add(key[0])
                del self._seen[key]
            self.tracked.pop(obj, None)
            yield ObjectRemoved(obj)
            # remove_object may return (obj_ids, [(frame, masks), ...])
            if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list) and out[0]:
                for item in out[1]:
                    if isinstance(item, tuple) and len(item) == 2:
                        results[int(item[0])] = _frame_done((item[0], out[0], item[1]))
        for key in sorted(set(self._seen) - set(current)):
            f, obj = key
            out = _clear(pred, state, f, obj, need_output=True)
            del self._seen[key]
            self.dirty_frames.add(f)
            if isinstance(out, tuple) and len(out) == 3:
                results[int(out[0])] = _frame_done(out)
        for f, obj, p in prompts.items():
            seen = self._seen.get((f, obj))
            if seen is not None and seen.fingerprint == current[(f, obj)]:
                continue
            if seen is not None:
                correction = seen.correction
            elif prompts.is_correction(f, obj):
                correction = True  # a saved correction, replayed
            else:
                correction = f in self.tracked.get(obj, ())
            results[f] = self.send(f, obj, p, correction)
            self._seen[(f, obj)] = _Seen(current[(f, obj)], correction)
            self.dirty_frames.add(f)
        for f in sorted(results):
            yield results[f]

    # ---- propagation
    def plan(
        self,
        prompts: PromptSet,
        num_frames: int,
        direction: str = "both",
        start: str | int = "auto",
        max_frames: int | None = None,
    ) -> list[Pass]:
        """The passes for ``direction`` ('forward', 'backward', 'both').

        Forward starts at the first prompted frame and backward at the last; "both" runs
        forward and then backward from the first one (Meta's convention). ``start="auto"``
        does that on the first run and, after a complete propagation, starts at the first
        (last) frame whose prompts changed since, so that a correction re-propagates from
        there; ``"first"`` always uses the prompted frames; an int starts at that frame.
        ``max_frames`` bounds the frames tracked per pass after the start frame.
        """
        if direction not in DIRECTIONS:
            raise SessionError(f"direction must be 'forward', 'backward' or 'both', not {direction!r}")
        frames = prompts.frames()
        if not frames:
            raise SessionError("there are no prompts: add a point, a box or a mask on a frame first")
        n = int(num_frames)
        if isinstance(start, (int, np.integer)) and not isinstance(start, bool):
            first = last = int(start)
        elif start == "auto" and self.propagated_once and self.dirty_frames:
            first, last = min(self.dirty_frames), max(self.dirty_frames)
        elif start in ("auto", "first"):
            first, last = min(frames), max(frames)
        else:
            raise SessionError(f"start must be 'auto', 'first' or a frame index, not {start!r}")
        first, last = int(np.clip(first, 0, n - 1)), int(np.clip(last, 0, n - 1))
        passes = []
        if direction in ("forward", "both"):
            passes.append(Pass(first, False, n - first))
        if direction == "backward":
            passes.append(Pass(last, True, last + 1))
        elif direction == "both" and first > 0:
            # like Meta's predictor: backward from the same frame the forward pass began at
            passes.append(Pass(first, True, first + 1))
        if max_frames:
            passes = [Pass(p.start, p.reverse, min(p.count, int(max_frames) + 1)) for p in passes]
        return passes

    def propagate(
        self, passes: list[Pass], max_frames: int | None = None, cancel: threading.Event | None = None
    ) -> Iterator[Event]:
        """Yield the masks frame by frame; stops cleanly after a frame when ``cancel`` is set."""
        if not self.ready:
            raise SessionError("no model loaded")
        yield Total(sum(p.count for p in passes))
        completed = True
        for p in passes:
            gen = self.predictor.propagate_in_video(
                self.state, start_frame_idx=p.start, max_frame_num_to_track=max_frames, reverse=p.reverse
            )
            try:
                for out in gen:
                    done = _frame_done(out, tracked=True)
                    for obj in done.obj_ids:
                        self.tracked.setdefault(obj, set()).add(done.frame)
                    yield done
                    if cancel is not None and cancel.is_set():
                        completed = False
                        break
            finally:
                gen.close()
            if not completed:
                break
        if completed:
            self.dirty_frames.clear()
            self.propagated_once = True

    def run(
        self,
        prompts: PromptSet,
        num_frames: int,
        direction: str = "both",
        start: str | int = "auto",
        max_frames: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Send what changed, then propagate (see :meth:`plan`)."""
        if self.pending(prompts):
            yield Status("Segmenting the prompted frames…")
            yield from self.sync(prompts)
        passes = self.plan(prompts, num_frames, direction, start, max_frames)
        yield Status(f"Propagating {direction}…")
        yield from self.propagate(passes, max_frames, cancel)

    def replay(
        self,
        prompts: PromptSet,
        num_frames: int,
        direction: str = "both",
        max_frames: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """A batch run of saved prompts as they were made: the prompts that define objects
        first, propagated; then the corrections, which refine the tracked masks, propagated
        again from the corrected frames. Without corrections it is :meth:`run`."""
        initial = prompts.copy()
        corrections = prompts.copy()
        for f, o, _ in prompts.items():
            (initial if prompts.is_correction(f, o) else corrections).remove(frame=f, obj_id=o)
        if not corrections:
            yield from self.run(prompts, num_frames, direction, "first", max_frames, cancel)
            return
        yield from self.run(initial, num_frames, direction, "first", max_frames, cancel)
        if cancel is not None and cancel.is_set():
            return
        yield Status("Applying the corrections…")
        yield from self.run(prompts, num_frames, direction, "auto", max_frames, cancel)


def _clear(predictor: Any, state: Any, frame: int, obj_id: int, need_output: bool = False):
    """``clear_all_prompts_in_frame``, asking for no output where the predictor allows it."""
    if need_output or EXTENSION_NEED_OUTPUT not in extensions_of(predictor):
        return predictor.clear_all_prompts_in_frame(state, frame, obj_id)
    return predictor.clear_all_prompts_in_frame(state, frame, obj_id, need_output=False)
