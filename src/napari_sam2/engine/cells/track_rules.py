"""The per-frame rules of "track all": one object per pixel, and when a mask is two daughters.

Pure functions of one frame's data, so they can be tested (and reused) on their own; the
run that applies them over time is :mod:`napari_sam2.engine.cells.track_all`. Its parameters
(:class:`TrackAllConfig`) and the per-object bookkeeping it keeps (:class:`Live`,
:class:`Pending`) live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sam2.engine.cells.discovery import DiscoveryConfig
from napari_sam2.engine.cells.seeding import SeedFilter
from napari_sam2.errors import InputError

__all__ = ["DivisionRule", "Live", "Pending", "TrackAllConfig", "resolve_logits", "split_candidates"]


@dataclass(frozen=True)
class DivisionRule:
    """When one object's mask counts as two daughters (rule 4 of :mod:`napari_sam2.engine.cells.track_all`)."""

    enabled: bool = True
    persist_frames: int = 3
    min_area: int = 16
    min_fraction: float = 0.2
    max_distance_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.persist_frames < 1:
            raise InputError(f"division persist_frames must be >= 1, got {self.persist_frames}")
        if self.min_area < 1:
            raise InputError(f"division min_area must be >= 1 pixel, got {self.min_area}")
        if not 0.0 < self.min_fraction <= 0.5:
            raise InputError(f"division min_fraction must be in (0, 0.5], got {self.min_fraction}")
        if self.max_distance_factor <= 0:
            raise InputError(f"division max_distance_factor must be > 0, got {self.max_distance_factor}")


@dataclass(frozen=True)
class TrackAllConfig:
    """Parameters of a track-all run (see the module doc for the rules).

    Attributes:
        start_frame: the frame seeded first; tracking runs forward from it.
        end_frame: the last frame tracked (inclusive); None for the stack's last.
        reseed_every: segment everything again every N frames after the start; 0 never.
        lost_after: end a track after this many missing frames in a row.
        match_iou: a re-seeded mask with at least this IoU with an object is that object.
        seed_filter: which generator masks become objects (start and re-seeding).
        division: the division rule.
        discover_every_frame: look for new objects on every frame that is not re-seeded,
            only where no tracked object is (see :mod:`napari_sam2.engine.cells.discovery`);
            None: on when a mask generator is given.
        discovery: discovery's parameters.
    """

    start_frame: int = 0
    end_frame: int | None = None
    reseed_every: int = 10
    lost_after: int = 3
    match_iou: float = 0.5
    seed_filter: SeedFilter = field(default_factory=SeedFilter)
    division: DivisionRule = field(default_factory=DivisionRule)
    discover_every_frame: bool | None = None
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)

    def __post_init__(self) -> None:
        if self.start_frame < 0:
            raise InputError(f"start_frame must be >= 0, got {self.start_frame}")
        if self.end_frame is not None and self.end_frame < self.start_frame:
            raise InputError(f"end_frame ({self.end_frame}) must be >= start_frame ({self.start_frame})")
        if self.reseed_every < 0:
            raise InputError(f"reseed_every must be >= 0 (0: never), got {self.reseed_every}")
        if self.lost_after < 1:
            raise InputError(f"lost_after must be >= 1 frame, got {self.lost_after}")
        if not 0.0 < self.match_iou <= 1.0:
            raise InputError(f"match_iou must be in (0, 1], got {self.match_iou}")


@dataclass
class Live:
    """An object the predictor follows."""

    track_id: int
    seen: list[int] = field(default_factory=list)  # recent frames it was present on
    missing: int = 0
    split_frames: list[int] = field(default_factory=list)
    split_parts: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def see(self, t: int, keep: int) -> None:
        self.seen.append(t)
        del self.seen[:-keep]
        self.missing = 0

    def reset_split(self) -> None:
        self.split_frames, self.split_parts = [], []


@dataclass
class Pending:
    """A tracked frame that a division may still relabel."""

    frame: int
    labels: np.ndarray
    scores: dict[int, float]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        return x.detach().cpu().numpy()
    return np.asarray(x)


def resolve_logits(ids: list, logits: Any) -> tuple[np.ndarray, dict[int, int], dict[int, float]]:
    """(N, 1, H, W) logits -> label image (uint32), areas and mean mask probability per id.

    A pixel belongs to the object with the highest logit there, if that logit is > 0.
    """
    if hasattr(logits, "detach"):  # reduce on the tensor's device: only (H, W) crosses over
        values, index = logits[:, 0].max(dim=0)
        values, index = _to_numpy(values.float()), _to_numpy(index)
    else:
        x = np.asarray(logits)[:, 0]
        index = x.argmax(axis=0)
        values = np.take_along_axis(x, index[None], axis=0)[0]
    ids_arr = np.asarray([int(i) for i in ids], dtype=np.uint32)
    fg = values > 0
    labels = np.zeros(values.shape, dtype=np.uint32)
    labels[fg] = ids_arr[index[fg]]
    owners = index[fg]
    prob = 1.0 / (1.0 + np.exp(-values[fg].astype(np.float64)))
    counts = np.bincount(owners, minlength=len(ids_arr))
    sums = np.bincount(owners, weights=prob, minlength=len(ids_arr))
    areas = {int(i): int(c) for i, c in zip(ids_arr, counts) if c > 0}
    scores = {int(i): float(s / c) for i, s, c in zip(ids_arr, sums, counts) if c > 0}
    return labels, areas, scores


def split_candidates(labels: np.ndarray, areas: dict[int, int], rule: DivisionRule) -> dict:
    """Objects of a label image whose pixels form exactly two significant parts (rule 4)."""
    from scipy import ndimage as ndi
    from skimage.measure import label as connected

    comp, n = connected(labels, connectivity=2, background=0, return_num=True)
    if n <= len(areas):  # every object is one piece
        return {}
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    owners = np.asarray(ndi.maximum(labels, comp, np.arange(1, n + 1)), dtype=np.int64)
    pieces: dict[int, list[int]] = {}
    for c, owner in enumerate(owners, start=1):
        pieces.setdefault(int(owner), []).append(c)
    out = {}
    for tid, cs in pieces.items():
        if len(cs) < 2:
            continue
        total = areas.get(tid, int(sizes[cs].sum()))
        big = [c for c in cs if sizes[c] >= rule.min_area and sizes[c] >= rule.min_fraction * total]
        if len(big) != 2:
            continue
        a, b = comp == big[0], comp == big[1]
        ca, cb = np.argwhere(a).mean(axis=0), np.argwhere(b).mean(axis=0)
        if np.hypot(*(ca - cb)) > rule.max_distance_factor * math.sqrt(4.0 * total / math.pi):
            continue
        out[tid] = (a, b)
    return out
