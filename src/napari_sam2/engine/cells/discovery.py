"""Discovery: find new objects on a tracked frame by prompting only where no tracked object is.

A full re-seed ("segment everything" over a 32 x 32 grid) costs minutes per frame on a CPU,
so track-all can afford it only every N frames, and a cell that enters the field or appears
is found up to N frames late. Discovery runs on every frame instead, at a cost that scales
with what is *not* tracked:

1. **Uncovered foreground** (:func:`uncovered_foreground`): the frame's foreground on the
   lightly smoothed frame, minus the tracked objects dilated by ``margin`` pixels (their rims
   are not new objects), minus pieces under ``min_area`` pixels. The threshold
   (``DiscoveryConfig.threshold``): "background" (default) is the background's level plus
   ``noise_sigmas`` times its noise (median and MAD of the pixels on the background side of
   Otsu's threshold), never further from the background than Otsu's threshold and never
   nearer than halfway to it (so that a noise-free frame's blurred rims stay out); "otsu" is Otsu's threshold
   alone, which, when cells differ in brightness, can fall between dim and bright cells and
   leave most of a dim cell that enters the field under ``min_area`` (found frames late).
   Whether objects are brighter or darker than the background is read from the tracked
   objects themselves (bright when nothing is tracked yet).
2. **Prompt points** (:func:`prompt_points`): one point per uncovered piece, on its innermost
   pixel (the maximum of its distance transform; of several, the brightest, or darkest for
   dark objects: a sliver entering at the border is one pixel deep throughout), plus, in pieces much larger than a tracked
   object, points of a grid whose spacing is the tracked objects' median diameter, so that a
   clump of new cells gets one point per cell. At most ``max_points``, largest pieces first.
   No uncovered foreground: no point, and the generator is not called at all.
3. **Masks** (:func:`prompted_masks`): the points go through the mask generator's own
   machinery and quality filters (predicted IoU, stability, NMS) as explicit ``point_grids``
   (Meta's API), so a discovered mask is exactly what segment everything would have given
   for that point.
4. **New objects** (:func:`discover_objects`): the seeding filters
   (:func:`napari_sam2.engine.cells.seeding.filter_masks`: area, score, border, overlaps), then, as a
   re-seed does, masks matching a tracked object (IoU >= ``match_iou``) are dropped and the
   rest keep only the pixels no tracked object holds (dropped if more than ``max_overlap`` is
   held), and at least ``min_foreground`` of a new object must lie on the uncovered
   foreground (a point can give a mask of the background).

The functions are pure (the frame and the tracked labels in, masks out);
:class:`~napari_sam2.engine.cells.track_all.TrackAllRun` calls :func:`discover_objects` on every
frame after the start when ``TrackAllConfig.discover_every_frame`` is on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_sam2.engine.cells.seeding import SeedFilter, claim_unclaimed, filter_masks, run_mask_generator
from napari_sam2.errors import InputError

__all__ = [
    "DiscoveryConfig",
    "Discovered",
    "discover_objects",
    "prompt_points",
    "prompted_masks",
    "uncovered_foreground",
]


@dataclass(frozen=True)
class DiscoveryConfig:
    """Parameters of discovery (see the module doc).

    Attributes:
        margin: tracked objects are dilated by this many pixels before their area is excluded.
        min_area: uncovered pieces smaller than this get no prompt; None: the seed filter's.
        max_points: at most this many prompts per frame (the largest pieces first).
        spacing: grid spacing in pixels inside large pieces; 0: the tracked objects' median
            equivalent diameter (16 pixels when nothing is tracked).
        smooth: Gaussian sigma (pixels) applied before thresholding (noise makes specks).
        polarity: "auto" (from the tracked objects), "bright" or "dark" objects.
        min_foreground: a new object needs at least this fraction on uncovered foreground.
        threshold: "background" (noise-based, the default) or "otsu" (see the module doc, step 1).
        noise_sigmas: with "background", how many noise standard deviations above (below,
            for dark objects) the background's level a pixel must be to be foreground.
    """

    margin: int = 2
    min_area: int | None = None
    max_points: int = 64
    spacing: int = 0
    smooth: float = 1.0
    polarity: str = "auto"
    min_foreground: float = 0.5
    threshold: str = "background"
    noise_sigmas: float = 4.0

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise InputError(f"discovery margin must be >= 0 pixels, got {self.margin}")
        if self.min_area is not None and self.min_area < 1:
            raise InputError(f"discovery min_area must be >= 1 pixel (or None), got {self.min_area}")
        if self.max_points < 1:
            raise InputError(f"discovery max_points must be >= 1, got {self.max_points}")
        if self.spacing < 0:
            raise InputError(f"discovery spacing must be >= 0 (0: automatic), got {self.spacing}")
        if self.smooth < 0:
            raise InputError(f"discovery smooth must be >= 0, got {self.smooth}")
        if self.polarity not in ("auto", "bright", "dark"):
            raise InputError(f"discovery polarity must be 'auto', 'bright' or 'dark', got {self.polarity!r}")
        if not 0.0 <= self.min_foreground <= 1.0:
            raise InputError(f"discovery min_foreground must be in [0, 1], got {self.min_foreground}")
        if self.threshold not in ("background", "otsu"):
            raise InputError(f"discovery threshold must be 'background' or 'otsu', got {self.threshold!r}")
        if self.noise_sigmas <= 0:
            raise InputError(f"discovery noise_sigmas must be > 0, got {self.noise_sigmas}")


@dataclass(frozen=True)
class Discovered:
    """What discovery did on one frame."""

    points: np.ndarray  # (K, 2) float (x, y) pixel coordinates prompted
    masks: list[np.ndarray]  # new objects, disjoint from the tracked ones, best first
    scores: list[float]
    generated: int  # masks the generator returned for the points
    matched: int  # of those, masks that are tracked objects

    def __len__(self) -> int:
        return len(self.masks)


def _gray(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame, dtype=np.float32)
    return arr.mean(axis=-1) if arr.ndim == 3 else arr


def uncovered_foreground(
    frame: np.ndarray, tracked: np.ndarray, config: DiscoveryConfig | None = None, min_area: int = 16
) -> np.ndarray:
    """Foreground pixels of ``frame`` that no tracked object (dilated) covers, in pieces >= ``min_area``.

    ``frame`` is (H, W) or (H, W, C) (channels averaged); ``tracked`` is the (H, W) label
    image of the tracked objects (0: none).
    """
    return _uncovered(frame, tracked, config, min_area)[0]


def _uncovered(
    frame: np.ndarray, tracked: np.ndarray, config: DiscoveryConfig | None, min_area: int
) -> tuple[np.ndarray, np.ndarray]:
    """(uncovered foreground, object-likeness): the smoothed frame, negated for dark objects."""
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label
    from skimage.morphology import dilation, disk

    config = config or DiscoveryConfig()
    gray = _gray(frame)
    tracked = np.asarray(tracked)
    if gray.shape != tracked.shape:
        raise InputError(f"the frame is {gray.shape} but the tracked labels are {tracked.shape}")
    if config.smooth > 0:
        gray = gaussian(gray, sigma=config.smooth, preserve_range=True)
    if float(gray.max()) == float(gray.min()):  # a flat frame has no foreground
        return np.zeros(gray.shape, dtype=bool), gray
    threshold = threshold_otsu(gray)
    covered = tracked > 0
    bright = True
    if config.polarity == "dark":
        bright = False
    elif config.polarity == "auto" and covered.any() and (~covered).any():
        # the tracked objects say which side of the background objects lie on
        bright = float(np.median(gray[covered])) >= float(np.median(gray[~covered]))
    if config.threshold == "background":
        threshold = _background_threshold(gray, threshold, bright, config.noise_sigmas)
    fg = gray > threshold if bright else gray < threshold
    if covered.any():
        fg &= ~(dilation(covered, disk(config.margin)) if config.margin else covered)
    likeness = gray if bright else -gray
    if min_area <= 1:
        return fg, likeness
    pieces = label(fg, connectivity=2)
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    return (sizes >= min_area)[pieces], likeness


def _background_threshold(gray: np.ndarray, otsu: float, bright: bool, sigmas: float) -> float:
    """The background's level +- ``sigmas`` noise SDs, between halfway to Otsu's threshold
    and Otsu's threshold (module doc, step 1)."""
    background = gray[gray <= otsu] if bright else gray[gray >= otsu]
    level = float(np.median(background))
    noise = 1.4826 * float(np.median(np.abs(background - level)))  # MAD: robust to cells' rims
    distance = abs(otsu - level)
    step = min(max(sigmas * noise, 0.5 * distance), distance)
    return level + step if bright else level - step


def _auto_spacing(tracked: np.ndarray) -> int:
    ids, counts = np.unique(tracked[tracked > 0], return_counts=True)
    if len(ids) == 0:
        return 16
    return max(4, int(round(2.0 * np.sqrt(float(np.median(counts)) / np.pi))))


def prompt_points(
    uncovered: np.ndarray,
    tracked: np.ndarray | None = None,
    config: DiscoveryConfig | None = None,
    likeness: np.ndarray | None = None,
) -> np.ndarray:
    """Prompt points (K, 2) float (x, y) on the uncovered foreground: see the module doc, step 2.

    The number of points grows with the uncovered area (one per piece, one per grid cell
    of ``spacing`` squared in large pieces), never with the frame's size. ``likeness``
    ((H, W), higher: more like an object, e.g. the smoothed frame for bright objects) breaks
    ties between a piece's innermost pixels: a cell entering the field is a sliver along
    the border whose pixels are all one pixel deep, and the first of them in raster order
    can be the smoothing's rim beside the cell, not the cell.
    """
    from scipy.ndimage import distance_transform_edt
    from skimage.measure import label, regionprops

    config = config or DiscoveryConfig()
    uncovered = np.asarray(uncovered, dtype=bool)
    if not uncovered.any():
        return np.zeros((0, 2), dtype=np.float64)
    spacing = config.spacing or _auto_spacing(np.zeros_like(uncovered) if tracked is None else tracked)
    pieces = label(uncovered, connectivity=2)
    # distance to the nearest pixel outside the uncovered foreground: the innermost pixels
    depth = distance_transform_edt(np.pad(uncovered, 1))[1:-1, 1:-1]
    points: list[tuple[float, float]] = []
    regions = sorted(regionprops(pieces), key=lambda r: -r.area)
    for region in regions:
        r0, c0, _, _ = region.bbox
        local = region.image
        d = np.where(local, depth[region.slice], 0.0)
        if likeness is None:
            iy, ix = np.unravel_index(int(np.argmax(d)), d.shape)
        else:  # the most object-like of the innermost pixels
            inner = d >= d.max() - 0.5
            like = np.where(inner, likeness[region.slice], -np.inf)
            iy, ix = np.unravel_index(int(np.argmax(like)), d.shape)
        mine = [(float(c0 + ix), float(r0 + iy))]
        if region.area > 2 * spacing * spacing:  # a clump: a grid point per object-sized cell
            gy, gx = np.mgrid[
                spacing // 2 : local.shape[0] : spacing, spacing // 2 : local.shape[1] : spacing
            ]
            inside = local[gy, gx] & (d[gy, gx] >= 1.0)
            for y, x in zip(gy[inside].tolist(), gx[inside].tolist()):
                if (x - ix) ** 2 + (y - iy) ** 2 >= (spacing / 2) ** 2:
                    mine.append((float(c0 + x), float(r0 + y)))
        points.extend(mine)
        if len(points) >= config.max_points:
            break
    return np.asarray(points[: config.max_points], dtype=np.float64).reshape(-1, 2)


def prompted_masks(
    generator: Any,
    frame: np.ndarray,
    points: np.ndarray,
    call: Callable[[np.ndarray], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks and scores of the mask generator prompted at ``points`` ((K, 2) pixel (x, y)) only.

    A generator with Meta's ``point_grids`` (ours or Meta's SAM2AutomaticMaskGenerator) runs
    with the points as its one grid and no crop layers, through all its quality filters; it
    is restored afterwards. ``call`` is how to run it on a frame (e.g. the track-all run's
    wrapper that applies the stack's contrast mapping); by default ``generator`` itself. Any
    other generator (a callable frame -> masks, e.g. a stand-in) is run on the frame and its
    masks that hold a prompt point are kept: what prompting at those points would give.
    """
    frame = np.asarray(frame)
    h, w = frame.shape[:2]
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        return np.zeros((0, h, w), dtype=bool), np.zeros(0, dtype=np.float64)
    call = call or generator
    if hasattr(generator, "point_grids") and hasattr(generator, "generate"):
        # pixel (x, y) -> Meta's normalised grid: pixel centres are at (x + 0.5) / w
        grid = (points + 0.5) / np.array([w, h], dtype=np.float64)
        saved = generator.point_grids, getattr(generator, "crop_n_layers", 0)
        generator.point_grids, generator.crop_n_layers = [grid], 0
        try:
            return run_mask_generator(call, frame)
        finally:
            generator.point_grids, generator.crop_n_layers = saved
    masks, scores = run_mask_generator(call, frame)
    xs = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    hit = masks[:, ys, xs].any(axis=1) if len(masks) else np.zeros(0, dtype=bool)
    return masks[hit], scores[hit]


def discover_objects(
    frame: np.ndarray,
    tracked: np.ndarray,
    generator: Any,
    seed_filter: SeedFilter | None = None,
    config: DiscoveryConfig | None = None,
    match_iou: float = 0.5,
    call: Callable[[np.ndarray], Any] | None = None,
) -> Discovered:
    """New objects on ``frame`` where ``tracked`` (H, W labels) has none: the module doc, steps 1-4."""
    seed_filter = seed_filter or SeedFilter()
    config = config or DiscoveryConfig()
    tracked = np.asarray(tracked)
    min_area = config.min_area if config.min_area is not None else seed_filter.min_area
    uncovered, likeness = _uncovered(frame, tracked, config, min_area)
    points = prompt_points(uncovered, tracked, config, likeness)
    if len(points) == 0:
        return Discovered(points, [], [], 0, 0)
    masks, scores = prompted_masks(generator, frame, points, call)
    candidates = filter_masks(masks, scores, seed_filter) if len(masks) else None
    if candidates is None or len(candidates) == 0:
        return Discovered(points, [], [], len(masks), 0)
    ids, counts = np.unique(tracked, return_counts=True)
    area_of = dict(zip(ids.tolist(), counts.tolist()))
    taken = tracked > 0
    unmatched, unmatched_scores, matched = [], [], 0
    for mask, score in zip(candidates.masks, candidates.scores):
        on, overlap = np.unique(tracked[mask], return_counts=True)
        size = int(mask.sum())
        ious = [c / (size + area_of[i] - c) for i, c in zip(on.tolist(), overlap.tolist()) if i]
        if ious and max(ious) >= match_iou:
            matched += 1
            continue
        free = mask & ~taken
        if int((free & uncovered).sum()) < config.min_foreground * int(free.sum()):
            continue  # mostly background or a tracked object's rim: not a new object
        unmatched.append(mask)
        unmatched_scores.append(float(score))
    kept = claim_unclaimed(unmatched, taken, seed_filter.min_area, seed_filter.max_overlap)
    return Discovered(
        points, [m for _, m in kept], [unmatched_scores[k] for k, _ in kept], len(masks), matched
    )
