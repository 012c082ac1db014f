"""Seeding: "segment everything" on one frame -> one object per mask, filtered and without overlaps.

The masks come from a *mask generator*: any callable that takes a frame, an ``(H, W)`` or
``(H, W, C)`` array as stored in the stack, and returns either

- a list of dicts as Meta's ``SAM2AutomaticMaskGenerator.generate`` returns them (keys
  ``segmentation`` (H, W) bool, ``area``, ``bbox``, ``predicted_iou``, ``stability_score``,
  ...; only ``segmentation`` is required, the score is ``predicted_iou``, else ``score``), or
- a pair ``(masks, scores)``: ``(K, H, W)`` bool and ``(K,)`` float.

An object with a ``generate`` method (the generator itself) is accepted too.
:func:`default_mask_generator` builds the real one lazily.

:func:`seed_objects` applies a :class:`SeedFilter` and then makes the masks disjoint, so that
every pixel belongs to at most one object:

1. masks outside ``[min_area, max_area]``, scoring below ``min_score`` or (with
   ``drop_border_touching``, off by default) touching the frame's border are dropped;
2. the rest are taken in order of decreasing score; each one keeps only the pixels no
   earlier mask took, and is dropped when more than ``max_overlap`` of it was taken (it
   is mostly a duplicate or a part of an object already seeded);
3. of what it keeps, only the largest 8-connected piece, which must still hold
   ``min_area`` pixels (a seed is one connected object).

Cells touching the border are kept by default: in the Cell Tracking Challenge's ground
truth a cell entering the field is tracked from its first frame, so seeding must keep it.

:class:`Seeds` carries a :class:`SeedReport` of how many masks each filter removed, so
that a seeding that keeps nothing can say why (:class:`NoSeedsError`).

:func:`tracker_features` lets segment everything on a frame the video predictor has
encoded use those image features (or the embedding cache's), not a second encoder pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sam2.engine.predict.protocols import EXTENSION_NORMALIZER, extensions_of
from napari_sam2.errors import InputError, InputTypeError, MissingDependencyError, NapariSam2Error

__all__ = [
    "MaskGenerator",
    "NoSeedsError",
    "SeedFilter",
    "SeedReport",
    "Seeds",
    "automatic_mask_generator_class",
    "default_mask_generator",
    "run_mask_generator",
    "seed_objects",
    "segment_frame",
    "tracker_features",
    "with_stack_contrast",
]

#: what :func:`seed_objects` accepts as a generator (see the module docstring)
MaskGenerator = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class SeedFilter:
    """Which masks of "segment everything" become objects.

    Attributes:
        min_area: smallest object, in pixels (also after overlaps are removed).
        max_area: largest object in pixels; None for no limit (a mask of the whole
            background is the usual reason to set one).
        min_score: lowest generator score (``predicted_iou``) kept.
        drop_border_touching: drop masks with a pixel on the frame's outermost rows or
            columns (cells cut by the border). Off (the default), cells entering the field
            are seeded as soon as they are found, as the field's ground truth tracks them.
        max_overlap: a mask more than this fraction of which lies on masks already kept
            (or, when re-seeding, on tracked objects) is a duplicate and is dropped.
    """

    min_area: int = 16
    max_area: int | None = None
    min_score: float = 0.0
    drop_border_touching: bool = False
    max_overlap: float = 0.5

    def __post_init__(self) -> None:
        if self.min_area < 1:
            raise InputError(f"min_area must be >= 1 pixel, got {self.min_area}")
        if self.max_area is not None and self.max_area < self.min_area:
            raise InputError(f"max_area ({self.max_area}) must be >= min_area ({self.min_area})")
        if not 0.0 <= self.max_overlap < 1.0:
            raise InputError(f"max_overlap must be in [0, 1), got {self.max_overlap}")


class NoSeedsError(NapariSam2Error, ValueError):
    """Seeding kept no object: nothing to track (the message says which filter to change)."""


#: per filter, what to change when it removed the masks (API name; CLI flag)
_ADVICE = {
    "min_area": "lower min_area (--min-area)",
    "max_area": "raise or unset max_area (--max-area)",
    "score": "lower min_score (--min-score)",
    "border": "keep cells touching the border (drop_border_touching=False; leave out --drop-border)",
    "overlap": "raise max_overlap (duplicates of kept masks) or lower min_area",
}


@dataclass(frozen=True)
class SeedReport:
    """How many masks the generator produced and how many each filter removed (each mask is
    counted under the first filter, in this order, that removed it)."""

    produced: int = 0
    min_area: int = 0
    max_area: int = 0
    score: int = 0
    border: int = 0
    overlap: int = 0
    filters: SeedFilter | None = None

    def explain(self, frame: int | None = None) -> str:
        """Why no object was kept, and what to change."""
        where = "" if frame is None else f" on frame {frame}"
        if self.produced == 0:
            return (
                f"segment everything{where} found no mask: nothing to track. Check the frame's contrast "
                "and channels, or use more points (points_per_side) or lower the generator's "
                "pred_iou_thresh / stability_score_thresh (an instance head: lower its "
                "WatershedConfig.foreground_threshold, or train it longer on more labelled frames)"
            )
        removed = {k: getattr(self, k) for k in _ADVICE}
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in removed.items())
        advice = "; ".join(_ADVICE[k] for k, v in sorted(removed.items(), key=lambda kv: -kv[1]) if v)
        f = self.filters
        settings = (
            ""
            if f is None
            else f" (min_area={f.min_area}, max_area={f.max_area}, min_score={f.min_score}, "
            f"drop_border_touching={f.drop_border_touching}, max_overlap={f.max_overlap})"
        )
        return (
            f"seeding kept no object{where}: nothing to track. Segment everything produced "
            f"{self.produced} mask(s); the filters{settings} removed: {counts}. To keep some: {advice}"
        )


@dataclass(frozen=True)
class Seeds:
    """Disjoint object masks of one frame, best first (``report``: what the filters removed)."""

    masks: np.ndarray  # (K, H, W) bool
    scores: np.ndarray  # (K,) float64
    report: SeedReport = field(default_factory=SeedReport, compare=False)

    def __len__(self) -> int:
        return len(self.masks)

    def to_labels(self, first_id: int = 1) -> np.ndarray:
        """The seeds as one label image (uint32): seed k gets ``first_id + k``."""
        labels = np.zeros(self.masks.shape[1:], dtype=np.uint32)
        for k, mask in enumerate(self.masks):
            labels[mask] = first_id + k
        return labels


def run_mask_generator(generator: Any, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Call a mask generator and normalise its answer to ``(masks (K, H, W) bool, scores (K,))``."""
    call = getattr(generator, "generate", generator)
    if not callable(call):
        raise InputTypeError(
            f"a mask generator must be callable or have a generate() method, got {type(generator).__name__}"
        )
    frame = np.asarray(frame)
    h, w = frame.shape[:2]
    out = call(frame)
    if isinstance(out, tuple) and len(out) == 2:
        masks = np.asarray(out[0]).astype(bool, copy=False)
        scores = np.asarray(out[1], dtype=np.float64).reshape(-1)
        if masks.ndim == 2 and masks.size == 0:
            masks = masks.reshape(0, h, w)
    else:
        records = list(out)
        for r in records:
            if not isinstance(r.get("segmentation"), np.ndarray):
                raise InputError(
                    "the mask generator returned masks that are not arrays (run-length encoded?); "
                    "use its output_mode='binary_mask'"
                )
        masks = (
            np.stack([np.asarray(r["segmentation"], dtype=bool) for r in records])
            if records
            else np.zeros((0, h, w), dtype=bool)
        )
        scores = np.asarray(
            [float(r.get("predicted_iou", r.get("score", 1.0))) for r in records], dtype=np.float64
        )
    if masks.ndim != 3 or masks.shape[1:] != (h, w):
        raise InputError(f"the mask generator returned masks of shape {masks.shape}; expected (K, {h}, {w})")
    if len(scores) != len(masks):
        raise InputError(f"the mask generator returned {len(masks)} masks but {len(scores)} scores")
    return masks, scores


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected piece of a boolean mask (the mask itself if it is one piece)."""
    from skimage.measure import label

    comp, n = label(mask, connectivity=2, return_num=True)
    if n <= 1:
        return mask
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return comp == int(np.argmax(sizes))


def claim_unclaimed(
    masks: Sequence[np.ndarray], taken: np.ndarray, min_area: int, max_overlap: float
) -> list[tuple[int, np.ndarray]]:
    """Give each mask, in order, the pixels not yet ``taken`` (updated in place).

    Returns ``(index, kept_mask)`` for the masks that survive: at most ``max_overlap`` of
    it taken already, and a largest connected remainder of at least ``min_area`` pixels.
    """
    kept = []
    for k, mask in enumerate(masks):
        area = int(mask.sum())
        if area == 0:
            continue
        free = mask & ~taken
        if area - int(free.sum()) > max_overlap * area:
            continue
        free = largest_component(free)
        if int(free.sum()) < min_area:
            continue
        taken |= free
        kept.append((k, free))
    return kept


def seed_objects(frame: np.ndarray, generator: Any, filters: SeedFilter | None = None) -> Seeds:
    """Segment everything on ``frame`` and return disjoint, filtered object masks (see the module doc)."""
    filters = filters or SeedFilter()
    masks, scores = run_mask_generator(generator, frame)
    return filter_masks(masks, scores, filters)


def filter_masks(masks: np.ndarray, scores: np.ndarray, filters: SeedFilter) -> Seeds:
    """Steps 1-3 of the module doc on given masks and scores."""
    h, w = masks.shape[1:]
    areas = masks.reshape(len(masks), h * w).sum(axis=1)
    removed = {}
    keep = np.ones(len(masks), dtype=bool)
    checks = [("min_area", areas >= filters.min_area)]
    if filters.max_area is not None:
        checks.append(("max_area", areas <= filters.max_area))
    checks.append(("score", scores >= filters.min_score))
    if filters.drop_border_touching:
        checks.append(("border", np.array([not _touches_border(m) for m in masks], dtype=bool)))
    for name, ok in checks:
        removed[name] = int((keep & ~ok).sum())
        keep &= ok
    candidates = np.flatnonzero(keep)
    # best score first; equal scores keep the generator's order (stable sort)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    taken = np.zeros((h, w), dtype=bool)
    kept = claim_unclaimed([masks[i] for i in order], taken, filters.min_area, filters.max_overlap)
    report = SeedReport(len(masks), **removed, overlap=len(order) - len(kept), filters=filters)
    if not kept:
        return Seeds(np.zeros((0, h, w), dtype=bool), np.zeros(0, dtype=np.float64), report)
    return Seeds(
        np.stack([m for _, m in kept]),
        np.asarray([scores[order[k]] for k, _ in kept], dtype=np.float64),
        report,
    )


def segment_frame(
    session: Any,
    frame: int,
    generator: Any,
    filters: SeedFilter | None = None,
    *,
    frames: Any = None,
    require_objects: bool = True,
) -> Seeds:
    """Segment everything on ``frame`` of an open session's stack (the widget's "Segment
    everything"): with the session's contrast mapping and the image features the tracker has
    for the frame (computed once, through the embedding cache), so that seeding and tracking
    share one encoder pass. ``frames``: the frames the session was opened on (default: its
    state's). Raises :class:`NoSeedsError` when no object is kept and ``require_objects``."""
    from napari_sam2.engine.frames.open import open_frames

    if not session.ready:
        raise InputError("the tracking session is not open: open it on the frames first")
    source = open_frames(frames if frames is not None else session.state.frames)
    normalizer = getattr(session.state, "normalizer", None)
    with tracker_features(generator, session.predictor, session.state, frame):
        seeds = seed_objects(source[frame], with_stack_contrast(generator, source, normalizer), filters)
    if require_objects and not len(seeds):
        raise NoSeedsError(seeds.report.explain(frame))
    return seeds


def with_stack_contrast(generator: Any, frames: Any, normalizer: Any = None, channels: Any = None) -> Any:
    """``generator``, mapping every frame's contrast the same way, when it can.

    A generator whose ``generate`` takes a ``normalizer`` (ours) would otherwise fit one per
    frame; the video predictor fits one for the whole stack, and seeding should see the
    frames as tracking does. ``normalizer`` is used if given, else one is fitted on
    ``frames`` (with ``channels``). Other generators are returned unchanged.
    """
    generate = getattr(generator, "generate", None)
    if generate is None or EXTENSION_NORMALIZER not in extensions_of(generator):
        return generator
    if normalizer is None:
        from napari_sam2.engine.frames.normalization import Normalizer

        normalizer = Normalizer.fit(frames, channels=channels)

    def generate_with_stack_contrast(frame: np.ndarray) -> Any:
        return generate(frame, normalizer=normalizer)

    return generate_with_stack_contrast


def automatic_mask_generator_class() -> type:
    """``SAM2AutomaticMaskGenerator``, imported on first use, with a clear error when absent."""
    try:
        from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator
    except ImportError as exc:
        raise MissingDependencyError(
            "segment everything needs napari_sam2.engine.segment.automatic_mask_generator."
            "SAM2AutomaticMaskGenerator, which this installation lacks; pass your own mask generator "
            f"(a callable frame -> masks) instead ({exc})"
        ) from exc
    return SAM2AutomaticMaskGenerator


def default_mask_generator(model: Any, **generator_kwargs: Any) -> Any:
    """The real "segment everything": ``SAM2AutomaticMaskGenerator(model, **generator_kwargs)``.

    ``model`` is the network (e.g. ``predictor.model`` of a :class:`SAM2VideoPredictor`, so
    tracking and seeding share one copy of the weights).
    """
    return automatic_mask_generator_class()(model, **generator_kwargs)


def _image_predictors(generator: Any) -> list[Any]:
    """What inside a generator takes a feature provider: the image predictors of ours (or ours
    tiled), or the generator itself (the instance head reads features without a predictor)."""
    found, seen = [], set()
    stack = [generator]
    while stack:
        g = stack.pop()
        if g is None or id(g) in seen:
            continue
        seen.add(id(g))
        if hasattr(g, "feature_provider") and hasattr(g, "generate"):
            found.append(g)
            continue
        predictor = getattr(g, "predictor", None)
        if predictor is not None and hasattr(predictor, "feature_provider"):
            found.append(predictor)
        stack.append(getattr(g, "generator", None))  # a tiled generator wraps one
    return found


class _TrackerFeatures:
    """A feature provider: frame ``frame_idx``'s features from the video predictor's state,
    for the image that is exactly that frame, seen with the state's contrast mapping."""

    def __init__(self, predictor: Any, state: Any, frame_idx: int) -> None:
        self.predictor, self.state, self.frame_idx = predictor, state, frame_idx
        self.frame = np.asarray(state.frames[frame_idx])

    def __call__(self, image: np.ndarray, normalizer: Any) -> Any:
        if normalizer is not self.state.normalizer:
            return None
        if image.shape != self.frame.shape or not np.array_equal(image, self.frame):
            return None  # a crop or a tile: it needs its own pass
        return self.predictor.frame_features(self.state, self.frame_idx)


@contextlib.contextmanager
def tracker_features(generator: Any, predictor: Any, state: Any, frame_idx: int) -> Iterator[None]:
    """While inside, segment everything on frame ``frame_idx`` reads the image features the
    video ``predictor`` has (or computes once, through its embedding cache) for that frame
    of ``state``, instead of encoding it again: tracking and seeding share one encoder pass
    per frame. The generator must see the frame with the state's normaliser (pass
    ``state.normalizer`` to :func:`with_stack_contrast`). A generator or predictor without
    this protocol (stand-ins, other generators) is left alone."""
    targets = _image_predictors(generator)
    if not targets or not hasattr(predictor, "frame_features") or not hasattr(state, "normalizer"):
        yield
        return
    provider = _TrackerFeatures(predictor, state, frame_idx)
    old = [t.feature_provider for t in targets]
    for t in targets:
        t.feature_provider = provider
    try:
        yield
    finally:
        for t, o in zip(targets, old):
            t.feature_provider = o
