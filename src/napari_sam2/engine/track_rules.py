"""The per-frame rules of "track all": one object per pixel, and when a mask is two daughters.

Pure functions of one frame's data, so they can be tested (and reused) on their own; the
run that applies them over time is :mod:`napari_sam2.engine.track_all`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DivisionRule", "resolve_logits", "split_candidates"]


@dataclass(frozen=True)
class DivisionRule:
    """When one object's mask counts as two daughters (rule 4 of :mod:`napari_sam2.engine.track_all`)."""

    enabled: bool = True
    persist_frames: int = 3
    min_area: int = 16
    min_fraction: float = 0.2
    max_distance_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.persist_frames < 1:
            raise ValueError(f"division persist_frames must be >= 1, got {self.persist_frames}")
        if self.min_area < 1:
            raise ValueError(f"division min_area must be >= 1 pixel, got {self.min_area}")
        if not 0.0 < self.min_fraction <= 0.5:
            raise ValueError(f"division min_fraction must be in (0, 0.5], got {self.min_fraction}")
        if self.max_distance_factor <= 0:
            raise ValueError(f"division max_distance_factor must be > 0, got {self.max_distance_factor}")


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
