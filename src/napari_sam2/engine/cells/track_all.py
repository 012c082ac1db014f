"""Track all: seed every object on a start frame, propagate them together, keep the lineage.

The run, frame by frame from ``start_frame`` forward (see :class:`TrackAllConfig`):

1. **Seed.** The start frame's objects are the masks of "segment everything"
   (:func:`napari_sam2.engine.cells.seeding.seed_objects`: filtered, disjoint), or a label
   image the user edited; each becomes a track, prompted with ``add_new_mask``.
2. **Propagate.** All objects are tracked together by the video predictor. Where masks
   overlap, a pixel goes to the object with the highest logit, so the label stack has one
   object per pixel; every measurement is taken on these resolved masks.
3. **Lost.** An object with no pixel on a frame (an empty mask, which is also what the
   model gives when its object score is <= 0) is *missing* there; after ``lost_after``
   missing frames in a row its track ends (at the last frame it was seen) and the
   predictor forgets it. A track that comes back sooner continues, with a gap.
4. **Divisions** (:class:`DivisionRule`). An object whose mask falls into exactly two
   8-connected parts, each at least ``min_area`` pixels and ``min_fraction`` of the
   object, whose centroids lie at most ``max_distance_factor`` times the object's
   equivalent diameter apart, on ``persist_frames`` consecutive frames (the parts of
   consecutive frames overlapping), has divided: its track ends on the frame before the
   split began, two daughter tracks start on that frame with the two parts (parent ->
   daughters recorded), and the predictor follows the daughters, prompted with the parts'
   masks on the current frame. Smaller specks of the object on those frames are dropped.
   If the object was split from its very first frame, it never existed as one cell: it is
   dropped and the daughters take its parent (if any).
5. **Re-seed.** Every ``reseed_every`` frames, segment everything again. A mask whose IoU
   with a tracked object is at least ``match_iou`` is that object; any other mask, once
   filtered, becomes a new track with the pixels no object holds, unless more than
   ``seed_filter.max_overlap`` of it is held (then it is a part of tracked objects).
6. **Discover** (``discover_every_frame``, on by default when a generator is given). On
   every other frame after the start, the generator is prompted only where the frame's
   foreground is not covered by tracked objects (:mod:`napari_sam2.engine.cells.discovery`), so a
   cell that enters or appears becomes a track on its first frame (reason "discovery"),
   at a cost that scales with the uncovered foreground; the full re-seed is the safety net.

Because a division is only known ``persist_frames - 1`` frames after it began, frames are
final that much later: :class:`FrameTracked` events come when a frame can no longer change.

The run is a client of a :class:`~napari_sam2.engine.track.session.TrackingSession`, the one
the clicks use: one video state (one ``init_state``, one contrast mapping fitted per run),
objects added from masks, removed, and propagation restarted on that state. Give it an
open session (the widget's), or a predictor and frames and it opens one itself. Seeding
and re-seeding read the image features the tracker computed for the frame (or the
embedding cache's): segment everything on a tracked frame costs no second encoder pass
(:func:`napari_sam2.engine.cells.seeding.tracker_features`). It works with any object that has
the video predictor's methods (``init_state``, ``add_new_mask``, ``propagate_in_video``,
``remove_object``), so a stand-in can replace the model. It is a generator of typed events
(:meth:`TrackAllRun.events`, :mod:`napari_sam2.engine.track.events`) that a worker thread can
drive one event at a time; :meth:`TrackAllRun.cancel` stops it between frames (closing the
generator works too), and what was tracked so far stays in ``labels`` and ``graph``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_sam2.engine.cells.discovery import discover_objects
from napari_sam2.engine.cells.lineage import TrackGraph, measure_frame
from napari_sam2.engine.cells.seeding import (
    NoSeedsError,
    Seeds,
    claim_unclaimed,
    seed_objects,
    segment_frame,
    tracker_features,
    with_stack_contrast,
)
from napari_sam2.engine.cells.track_rules import (
    DivisionRule,
    TrackAllConfig,
    resolve_logits,
    split_candidates,
)
from napari_sam2.engine.cells.track_rules import Live as _Live
from napari_sam2.engine.cells.track_rules import Pending as _Pending
from napari_sam2.engine.frames.open import FrameSource, open_frames
from napari_sam2.engine.track.events import (
    Division,
    Finished,
    FrameTracked,
    Status,
    Total,
    TrackAllEvent,
    TrackEnded,
    TrackStarted,
)
from napari_sam2.engine.track.session import SessionError, TrackingSession
from napari_sam2.errors import CapacityError, InputError, StateError

__all__ = [
    "Division",
    "DivisionRule",
    "Finished",
    "FrameTracked",
    "NoSeedsError",
    "Status",
    "Total",
    "TrackAllConfig",
    "TrackAllResult",
    "TrackAllRun",
    "TrackEnded",
    "TrackStarted",
    "segment_frame",
    "track_all",
]


@dataclass
class TrackAllResult:
    labels: np.ndarray  # (T, H, W): track id per pixel, 0 background and untracked frames
    graph: TrackGraph
    first_frame: int
    last_frame: int | None  # last frame tracked; None if none was
    cancelled: bool


# ====================================================================== the run
class TrackAllRun:
    """One track-all run over a stack (see the module doc). Run it once.

    Args:
        predictor: an open :class:`~napari_sam2.engine.track.session.TrackingSession` (the
            widget's: the run drives its video state), or the video predictor (or anything
            with its methods): the run then opens a session of its own on ``frames``.
        frames: the stack: array (T, H, W[, C]), dask/zarr array, TIFF path or folder; with
            a session, the frames it was opened on (default: its state's).
        generator: the mask generator for seeding and re-seeding (see
            :mod:`napari_sam2.engine.cells.seeding`); may be None with ``start_labels`` and
            ``reseed_every=0``.
        config: the rules' parameters.
        start_labels: (H, W) label image of the start frame (e.g. the seeds after the user
            deleted or merged some); its ids become the track ids. None: segment everything.
        out: where the label stack goes, any writable (T, H, W) integer array (numpy,
            memmap, zarr); by default a new uint32 array. Written one final frame at a time.
        init_state_kwargs: extra arguments of ``predictor.init_state`` (e.g. ``channels``),
            when the run opens its own session.
    """

    def __init__(
        self,
        predictor: Any,
        frames: Any = None,
        generator: Any = None,
        config: TrackAllConfig | None = None,
        *,
        start_labels: np.ndarray | None = None,
        out: Any = None,
        init_state_kwargs: dict | None = None,
    ) -> None:
        self.init_state_kwargs = dict(init_state_kwargs or {})
        if isinstance(predictor, TrackingSession):
            if not predictor.ready:
                raise SessionError("the tracking session is not open: open it on the frames first")
            self.session, self._owns_session = predictor, False
            if frames is None:
                frames = getattr(predictor.state, "frames", None)
                if frames is None:
                    raise InputError("give the frames the session was opened on")
        else:
            if frames is None:
                raise InputError("give the frames to track")
            self.session, self._owns_session = TrackingSession(), True
            self.session.use_predictor(predictor)
        self.predictor = self.session.predictor
        self._owns_source = not isinstance(frames, FrameSource)  # opened here: closed here
        self.source = open_frames(frames)
        self.config = config or TrackAllConfig()
        T, H, W = self.source.shape[:3]
        cfg = self.config
        if cfg.start_frame >= T:
            raise InputError(f"start_frame {cfg.start_frame} is outside the stack (0 .. {T - 1})")
        if cfg.end_frame is not None and cfg.end_frame >= T:
            raise InputError(f"end_frame {cfg.end_frame} is outside the stack (0 .. {T - 1})")
        if generator is None and start_labels is None:
            raise InputError("give a mask generator (segment everything) or start_labels to seed from")
        if generator is None and cfg.reseed_every:
            raise InputError(
                "re-seeding every N frames needs a mask generator; pass one or set reseed_every=0"
            )
        if generator is None and cfg.discover_every_frame:
            raise InputError(
                "discover_every_frame needs a mask generator; pass one or set discover_every_frame=False"
            )
        self._discovery_generator = generator if cfg.discover_every_frame is not False else None
        if start_labels is not None:
            start_labels = np.asarray(start_labels)
            if start_labels.shape != (H, W):
                raise InputError(f"start_labels has shape {start_labels.shape}; the frames are {(H, W)}")
            if start_labels.dtype.kind not in "iu" or (start_labels.size and start_labels.min() < 0):
                raise InputError("start_labels must hold non-negative integer labels")
        self.start_labels = start_labels
        if out is None:
            out = np.zeros((T, H, W), dtype=np.uint32)
        elif tuple(out.shape) != (T, H, W) or np.dtype(out.dtype).kind not in "iu":
            raise InputError(
                f"out must be an integer array of shape {(T, H, W)}, got {out.shape} {out.dtype}"
            )
        self.labels = out
        self._raw_generator = generator
        self.generator: Any = None  # with the session's contrast mapping, once it is open
        self.graph = TrackGraph()
        self._cancel = threading.Event()
        self._used = False
        self._next_id = 1
        self._live: dict[int, _Live] = {}
        self._pending: list[_Pending] = []
        self._done = 0
        self._total = 0
        self._last_frame: int | None = None
        self._cancelled = False
        self.discovery_points = 0  # prompts discovery sent to the generator (its cost)

    # ------------------------------------------------------------------ public
    def cancel(self) -> None:
        """Stop after the current frame (thread-safe)."""
        self._cancel.set()

    def run(self) -> TrackAllResult:
        for _ in self.events():
            pass
        return self.result()

    def result(self) -> TrackAllResult:
        return TrackAllResult(
            self.labels, self.graph, self.config.start_frame, self._last_frame, self._cancelled
        )

    def events(self) -> Iterator[TrackAllEvent]:
        """Run, yielding events; closing the generator stops the run cleanly."""
        if self._used:
            raise StateError("a TrackAllRun runs once; make a new one")
        self._used = True
        cfg = self.config
        t0 = cfg.start_frame
        t_end = cfg.end_frame if cfg.end_frame is not None else len(self.source) - 1
        self._total = t_end - t0 + 1
        keep = max(cfg.division.persist_frames if cfg.division.enabled else 1, 1)
        session = self.session
        stream = None
        try:
            yield from self._open()
            yield Total(self._total)
            yield from self._seed_start(t0)
            for t in range(t0, t_end + 1):
                if self._cancel.is_set():
                    self._cancelled = True
                    break
                if self._live:
                    if stream is None:
                        stream = session.track_forward(t, t_end - t)
                    frame_idx, ids, logits = next(stream)
                    if frame_idx != t:
                        raise StateError(f"the predictor yielded frame {frame_idx} where {t} was expected")
                    labels, areas, scores = resolve_logits(ids, logits)
                else:
                    labels, areas, scores = np.zeros(self.labels.shape[1:], np.uint32), {}, {}
                current = _Pending(t, labels, scores)
                self._pending.append(current)
                changed = False
                for event in self._update_lost(t, areas):
                    changed = True
                    yield event
                if cfg.division.enabled:
                    for event in self._update_divisions(t, labels, areas):
                        changed = True
                        yield event
                for event in self._discover(t, current):
                    changed = changed or isinstance(event, TrackStarted)
                    yield event
                if cfg.reseed_every and t > t0 and (t - t0) % cfg.reseed_every == 0:
                    for event in self._reseed(t, current):
                        changed = changed or isinstance(event, TrackStarted)
                        yield event
                if changed and stream is not None:
                    stream.close()  # objects changed: propagation restarts on the next frame
                    stream = None
                while self._pending and self._pending[0].frame <= t - (keep - 1):
                    yield self._commit(self._pending.pop(0))
            while self._pending:
                yield self._commit(self._pending.pop(0))
            yield Finished(self._cancelled, self._done, self.graph.summary())
        finally:
            if stream is not None:
                stream.close()
            while self._pending:  # closed mid-run: keep what was tracked
                self._commit(self._pending.pop(0))
            if self._owns_session:
                session.close()
            if self._owns_source:
                self.source.close()

    # ------------------------------------------------------------------ steps
    def _new_track(self, parent: int | None, track_id: int | None = None) -> int:
        tid = self._next_id if track_id is None else int(track_id)
        self.graph.add_track(tid, parent)
        self._next_id = max(self._next_id, tid + 1)
        self._live[tid] = _Live(tid)
        return tid

    def _open(self) -> Iterator[TrackAllEvent]:
        """Open the run's own session (one ``init_state``), start a given one's objects over,
        and give the generator the session's contrast mapping (no second fit)."""
        session = self.session
        if self._owns_session:
            source = self.source
            yield from session.open(None, ("track-all", id(source)), lambda: source, **self.init_state_kwargs)
        else:
            session.reset()  # the clicks' objects leave the engine; frames and features stay
        if self._raw_generator is not None:
            normalizer = getattr(session.state, "normalizer", None) or self.init_state_kwargs.get(
                "normalizer"
            )
            channels = self.init_state_kwargs.get("channels")
            self.generator = with_stack_contrast(self._raw_generator, self.source, normalizer, channels)

    def _segment(self, t: int) -> Seeds:
        """Segment everything on frame ``t`` with the features the tracker has for it."""
        session = self.session
        with tracker_features(self._raw_generator, session.predictor, session.state, t):
            return seed_objects(self.source[t], self.generator, self.config.seed_filter)

    def _seed_start(self, t0: int) -> Iterator[TrackAllEvent]:
        if self.start_labels is not None:
            ids = [int(i) for i in np.unique(self.start_labels) if i > 0]
            if not ids:
                raise NoSeedsError(f"start_labels hold no object on frame {t0}: paint or keep at least one")
            masks = [self.start_labels == i for i in ids]
            yield Status(f"{len(ids)} objects given on frame {t0}", t0)
        else:
            yield Status(f"segmenting everything on frame {t0}", t0)
            seeds = self._segment(t0)
            if not len(seeds):  # nothing to track: stop before the first frame is tracked
                raise NoSeedsError(seeds.report.explain(t0))
            masks, ids = list(seeds.masks), [None] * len(seeds)
            yield Status(f"{len(seeds)} objects found on frame {t0}", t0)
        for track_id, mask in zip(ids, masks):
            tid = self._new_track(None, track_id)
            self.session.add_mask(t0, tid, mask)
            yield TrackStarted(tid, t0, None, "seed")

    def _forget(self, tid: int) -> None:
        del self._live[tid]
        self.session.remove_object(tid)

    def _update_lost(self, t: int, areas: dict[int, int]) -> Iterator[TrackAllEvent]:
        keep = self.config.division.persist_frames + self.config.lost_after + 1
        for tid, live in list(self._live.items()):
            if areas.get(tid, 0) > 0:
                live.see(t, keep)
                continue
            live.missing += 1
            live.reset_split()
            if live.missing >= self.config.lost_after:
                self._forget(tid)
                last = live.seen[-1] if live.seen else None
                if last is None:
                    self.graph.remove_track(tid)  # never seen: nothing to keep
                else:
                    self.graph[tid].ended_by = "lost"
                yield TrackEnded(tid, last, "lost")

    def _update_divisions(self, t: int, labels: np.ndarray, areas: dict[int, int]) -> Iterator[TrackAllEvent]:
        rule = self.config.division
        candidates = split_candidates(labels, areas, rule) if self._live else {}
        for tid, live in list(self._live.items()):
            parts = candidates.get(tid)
            if parts is None:
                live.reset_split()
                continue
            if live.split_parts:  # pair the parts with the previous frame's by overlap
                pa, pb = live.split_parts[-1]
                a, b = parts
                if (a & pb).sum() + (b & pa).sum() > (a & pa).sum() + (b & pb).sum():
                    a, b = b, a
                parts = (a, b)
                if not ((a & pa).any() and (b & pb).any()):  # not the same two parts: start again
                    live.reset_split()
            live.split_frames.append(t)
            live.split_parts.append(parts)
            if len(live.split_frames) >= rule.persist_frames:
                yield from self._divide(t, live)

    def _divide(self, t: int, live: _Live) -> Iterator[TrackAllEvent]:
        tid = live.track_id
        first = live.split_frames[0]
        before = [f for f in live.seen if f < first]  # `seen` reaches back further than a split
        existed = bool(before)
        parent = tid if existed else self.graph[tid].parent
        daughters = (self._new_track(parent), self._new_track(parent))
        pending = {p.frame: p for p in self._pending}
        for f, parts in zip(live.split_frames, live.split_parts):
            p = pending[f]
            score = p.scores.pop(tid, float("nan"))
            p.labels[p.labels == tid] = 0
            for d, mask in zip(daughters, parts):
                p.labels[mask] = d
                p.scores[d] = score
        for d in daughters:
            self._live[d].seen = list(live.split_frames)
        self._forget(tid)
        for d, mask in zip(daughters, live.split_parts[-1]):
            self.session.add_mask(t, d, mask)
        if existed:
            self.graph[tid].ended_by = "division"
            yield TrackEnded(tid, before[-1], "division")
        else:
            self.graph.remove_track(tid)
            yield TrackEnded(tid, None, "division")
        for d in daughters:
            yield TrackStarted(d, first, parent, "division")
        if parent is not None:
            yield Division(parent, daughters, first)

    def _reseed(self, t: int, current: _Pending) -> Iterator[TrackAllEvent]:
        cfg = self.config
        seeds = self._segment(t)
        ids, counts = np.unique(current.labels, return_counts=True)
        area_of = dict(zip(ids.tolist(), counts.tolist()))
        unmatched, unmatched_scores, matched = [], [], 0
        for mask, score in zip(seeds.masks, seeds.scores):
            on, overlap = np.unique(current.labels[mask], return_counts=True)
            size = int(mask.sum())
            ious = [c / (size + area_of[i] - c) for i, c in zip(on.tolist(), overlap.tolist()) if i]
            if ious and max(ious) >= cfg.match_iou:
                matched += 1
                continue
            unmatched.append(mask)
            unmatched_scores.append(float(score))
        taken = current.labels > 0
        kept = claim_unclaimed(unmatched, taken, cfg.seed_filter.min_area, cfg.seed_filter.max_overlap)
        yield Status(
            f"re-seeded frame {t}: {len(seeds)} masks, {matched} on tracked objects, {len(kept)} new", t
        )
        yield from self._start_tracks(
            t, current, [m for _, m in kept], [unmatched_scores[k] for k, _ in kept], "reseed"
        )

    def _start_tracks(
        self, t: int, current: _Pending, masks: list[np.ndarray], scores: list[float], reason: str
    ) -> Iterator[TrackAllEvent]:
        """New tracks on frame ``t`` from disjoint masks on pixels no track holds."""
        keep = self.config.division.persist_frames + self.config.lost_after + 1
        for mask, score in zip(masks, scores):
            tid = self._new_track(None)
            current.labels[mask] = tid
            current.scores[tid] = float(score)
            self._live[tid].see(t, keep)
            self.session.add_mask(t, tid, mask)
            yield TrackStarted(tid, t, None, reason)

    def _discover(self, t: int, current: _Pending) -> Iterator[TrackAllEvent]:
        """Every frame after the start that is not re-seeded, after lost tracks and divisions:
        new objects where the frame has uncovered foreground (the module doc, step 6), read
        from the tracker's image features of frame ``t`` (no second encoder pass)."""
        cfg = self.config
        t0 = cfg.start_frame
        if self._discovery_generator is None or t <= t0:
            return
        if cfg.reseed_every and (t - t0) % cfg.reseed_every == 0:
            return  # the full re-seed of this frame finds them
        with tracker_features(self._raw_generator, self.session.predictor, self.session.state, t):
            found = discover_objects(
                self.source[t],
                current.labels,
                self._discovery_generator,
                cfg.seed_filter,
                cfg.discovery,
                cfg.match_iou,
                call=self.generator,  # the stack's contrast mapping, as seeding sees the frames
            )
        self.discovery_points += len(found.points)
        if not found:
            return
        yield Status(f"frame {t}: {len(found)} new objects found in uncovered foreground", t)
        yield from self._start_tracks(t, current, list(found.masks), list(found.scores), "discovery")

    def _commit(self, p: _Pending) -> FrameTracked:
        info = np.iinfo(np.dtype(self.labels.dtype))
        if p.labels.size and int(p.labels.max()) > info.max:
            raise CapacityError(
                f"track id {int(p.labels.max())} does not fit the output's {np.dtype(self.labels.dtype)}; "
                "use a uint32 output array"
            )
        records = measure_frame(p.labels, p.frame, self.source[p.frame], p.scores)
        self.graph.extend(records)
        self.labels[p.frame] = p.labels
        self._done += 1
        self._last_frame = p.frame
        view = p.labels.view()
        view.flags.writeable = False
        return FrameTracked(p.frame, view, self._done, self._total, len(records), len(self.graph))


def track_all(
    predictor: Any,
    frames: Any,
    generator: Any = None,
    config: TrackAllConfig | None = None,
    **kwargs: Any,
) -> TrackAllResult:
    """Run :class:`TrackAllRun` to the end; returns the label stack and the track graph."""
    return TrackAllRun(predictor, frames, generator, config, **kwargs).run()
