"""The plugin's link to the engine: one predictor, one inference state, no Qt.

:class:`EngineSession` keeps the engine in step with a :class:`~napari_sam2._prompts.PromptSet`:
it remembers which prompts the engine has seen (a fingerprint per frame and
object) and, on :meth:`EngineSession.sync`, sends only what changed --
``add_new_mask`` / ``add_new_points_or_box`` for new or edited prompts,
``clear_all_prompts_in_frame`` for prompts that were deleted on a frame and
``remove_object`` for objects that have no prompts left.  Propagation is a
generator over ``propagate_in_video`` so that a caller can stop it after any frame.

All methods may run in a worker thread; the caller guarantees one call at a time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .prompts import PromptSet


class SessionError(RuntimeError):
    """A problem the user can fix, with a plain message (no traceback needed)."""


@dataclass(frozen=True)
class ModelKey:
    config_name: str
    checkpoint: str | None
    device: str


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


@dataclass
class FrameResult:
    """The engine's masks for every known object on one frame."""

    frame: int
    obj_ids: list[int]
    logits: np.ndarray  # (num_objs, H, W) float32; mask = logits > 0


def _default_builder(key: ModelKey):
    from .video_predictor import build_sam2_video_predictor

    return build_sam2_video_predictor(
        config_name=key.config_name, checkpoint=key.checkpoint, device=key.device
    )


class EngineSession:
    """A predictor plus the inference state of one sequence of frames."""

    def __init__(self, builder: Callable[[ModelKey], Any] | None = None) -> None:
        self._builder = builder or _default_builder
        self._predictors: dict[ModelKey, Any] = {}
        self.model_key: ModelKey | None = None
        self.predictor = None
        self.state = None
        self.frames_key: Any = None
        self.synced: dict[tuple[int, int], tuple] = {}
        self.objects: set[int] = set()
        self.tracking_started = False
        #: frames whose prompts changed since the last propagation (for "auto" start)
        self.dirty_frames: set[int] = set()
        self.propagated_once = False
        self.lock = threading.Lock()

    # ---- lifecycle
    def set_predictor(self, key: ModelKey, predictor) -> None:
        """Use an already built predictor for ``key`` (tests, scripts)."""
        self._predictors[key] = predictor

    def ensure_model(self, key: ModelKey) -> bool:
        """Build (or reuse) the predictor for ``key``; True when it changed."""
        if key == self.model_key and self.predictor is not None:
            return False
        predictor = self._predictors.get(key)
        if predictor is None:
            predictor = self._builder(key)
            self._predictors.clear()  # one model in memory at a time
            self._predictors[key] = predictor
        self.predictor = predictor
        self.model_key = key
        self._drop_state()
        return True

    def ensure_state(self, frames_key: Any, frames_fn: Callable[[], Any]) -> bool:
        """Open the inference state for the frames identified by ``frames_key``."""
        if self.predictor is None:
            raise SessionError("no model loaded")
        if self.state is not None and frames_key == self.frames_key:
            return False
        self._drop_state()
        self.state = self.predictor.init_state(frames_fn())
        self.frames_key = frames_key
        return True

    def _drop_state(self) -> None:
        if self.state is not None and self.predictor is not None:
            with contextlib.suppress(Exception):  # a stale state is discarded anyway
                self.predictor.reset_state(self.state)
        self.state = None
        self.frames_key = None
        self._forget_prompts()
        self.propagated_once = False

    def _forget_prompts(self) -> None:
        self.synced.clear()
        self.objects.clear()
        self.tracking_started = False
        self.dirty_frames.clear()

    def close(self) -> None:
        self._drop_state()
        self.predictor = None
        self.model_key = None
        self._predictors.clear()

    @property
    def ready(self) -> bool:
        return self.predictor is not None and self.state is not None

    # ---- prompts
    def pending(self, prompts: PromptSet) -> bool:
        """True when ``prompts`` differ from what the engine has."""
        return prompts.fingerprints() != self.synced

    def sync(self, prompts: PromptSet) -> tuple[dict[int, FrameResult], list[int]]:
        """Send the prompt changes to the engine.

        Returns the masks of every frame whose prompts changed (the engine's
        answer for that frame, all objects) and the ids of objects removed
        from the engine.
        """
        if not self.ready:
            raise SessionError("no model loaded")
        new_objs = set(prompts.objects()) - self.objects
        try:
            return self._sync(prompts)
        except Exception:
            if not (new_objs and self.tracking_started):
                raise
            # Some engines (Meta's among them) take no new object once tracking
            # started: start over with all prompts (cached image features stay).
            self.predictor.reset_state(self.state)
            self._forget_prompts()
            self.dirty_frames.update(prompts.frames())
            return self._sync(prompts)

    def _sync(self, prompts: PromptSet) -> tuple[dict[int, FrameResult], list[int]]:
        pred, state = self.predictor, self.state
        current = prompts.fingerprints()
        wanted_objs = set(prompts.objects())
        results: dict[int, FrameResult] = {}
        removed: list[int] = []

        # objects without prompts anywhere
        for obj in sorted(self.objects - wanted_objs):
            out = pred.remove_object(state, obj)
            self.objects.discard(obj)
            removed.append(obj)
            for key in [k for k in self.synced if k[1] == obj]:
                self.dirty_frames.add(key[0])
                del self.synced[key]
            # remove_object may return (obj_ids, [(frame, masks), ...])
            if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list):
                obj_ids = [int(o) for o in out[0]]
                for item in out[1]:
                    if isinstance(item, tuple) and len(item) == 2 and obj_ids:
                        f, m = item
                        results[int(f)] = FrameResult(int(f), obj_ids, to_numpy_logits(m))

        # prompts deleted from a frame of an object that still has others
        for key in sorted(set(self.synced) - set(current)):
            f, obj = key
            out = pred.clear_all_prompts_in_frame(state, f, obj)
            del self.synced[key]
            self.dirty_frames.add(f)
            if isinstance(out, tuple) and len(out) == 3:
                results[int(f)] = FrameResult(int(out[0]), [int(o) for o in out[1]], to_numpy_logits(out[2]))

        # new or edited prompts
        for f, obj, p in prompts.items():
            fp = current[(f, obj)]
            if self.synced.get((f, obj)) == fp:
                continue
            out = None
            if p.mask is not None:
                out = pred.add_new_mask(state, f, obj, p.mask)
            if p.has_points_or_box:
                points, labels = p.engine_points()
                out = pred.add_new_points_or_box(
                    state, f, obj, points=points, labels=labels, clear_old_points=True, box=p.engine_box()
                )
            self.synced[(f, obj)] = fp
            self.objects.add(obj)
            self.dirty_frames.add(f)
            fi, obj_ids, masks = out
            results[int(fi)] = FrameResult(int(fi), [int(o) for o in obj_ids], to_numpy_logits(masks))
        return results, removed

    # ---- propagation
    def plan(
        self, prompts: PromptSet, n_frames: int, direction: str, start: str | int = "auto"
    ) -> list[tuple[int, bool, int]]:
        """The propagation passes for ``direction`` ('forward', 'backward', 'both'):
        ``(start_frame_idx, reverse, number of frames)`` each.

        Forward starts at the first prompted frame and backward at the last; "both"
        runs forward and then backward from the first one (Meta's convention).
        ``start="auto"`` does that on the first run and, after an earlier complete
        propagation, starts at the first (last) frame whose prompts changed since,
        so that a correction re-propagates from there; ``"first"`` always uses the
        prompted frames; an int starts at that frame.
        """
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"direction must be 'forward', 'backward' or 'both', not {direction!r}")
        frames = prompts.frames()
        if not frames:
            raise SessionError("there are no prompts: add a point or a box on a frame first")
        n = int(n_frames)
        if isinstance(start, (int, np.integer)) and not isinstance(start, bool):
            first = last = int(np.clip(start, 0, n - 1))
        elif start == "auto" and self.propagated_once and self.dirty_frames:
            first, last = min(self.dirty_frames), max(self.dirty_frames)
        elif start in ("auto", "first"):
            first, last = min(frames), max(frames)
        else:
            raise ValueError(f"start must be 'auto', 'first' or a frame index, not {start!r}")
        first, last = int(np.clip(first, 0, n - 1)), int(np.clip(last, 0, n - 1))
        passes = []
        if direction in ("forward", "both"):
            passes.append((first, False, n - first))
        if direction == "backward":
            passes.append((last, True, last + 1))
        elif direction == "both" and first > 0:
            # like Meta's predictor: backward from the same frame the forward pass began at
            passes.append((first, True, first + 1))
        return passes

    def propagate(
        self,
        passes: list[tuple[int | None, bool, int]],
        max_frames: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[FrameResult]:
        """Yield the masks frame by frame; stops early (cleanly) when ``cancel`` is set."""
        if not self.ready:
            raise SessionError("no model loaded")
        completed = True
        for start, reverse, _ in passes:
            self.tracking_started = True
            gen = self.predictor.propagate_in_video(
                self.state, start_frame_idx=start, max_frame_num_to_track=max_frames, reverse=reverse
            )
            try:
                for f, obj_ids, masks in gen:
                    yield FrameResult(int(f), [int(o) for o in obj_ids], to_numpy_logits(masks))
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
