"""Segment everything in large fields of view, tile by tile.

SAM 2 sees every image at 1024 x 1024: a 4096 x 4096 field of view shrinks 4x and small cells
vanish. :class:`TiledMaskGenerator` runs the automatic mask generator on overlapping tiles at
full resolution and merges the masks into one list, in full-image coordinates and in the
generator's record format.

Merge rule (for each tile's masks, then across tiles):

1. **Cut masks are dropped.** A mask whose box comes within ``edge_margin`` pixels of an
   *inner* edge of its tile (an edge that is not the image border) may be cut by the tile; it
   is dropped, because the neighbouring tile sees that part of the image with ``overlap``
   pixels of context. Empty masks are dropped too.
2. **Each tile owns a core**: the tiles' overlaps are split at their middles, so the cores
   partition the image. A mask whose box centre lies in its own tile's core is *owned*.
3. **Duplicates across tiles are removed greedily**: owned masks first, then by predicted IoU
   (then tile order), a mask is kept unless it overlaps an already kept mask *from another
   tile* with mask IoU > ``dedupe_iou_thresh``. Masks of the same tile are never compared (the
   generator's own NMS already ruled on them).

An object narrower than about ``overlap - 2 * edge_margin`` pixels lies whole inside the tile
that owns its centre, so it is found exactly once, whole. A larger object that crosses a tile
border may be cut in every tile and then be lost: choose ``overlap`` above the largest object
size (the default 256 px suits cells well below that).

Output order: by tile (row by row), then in the generator's order within the tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.engine.predict.protocols import EXTENSION_NORMALIZER
from napari_sam2.engine.segment.mask_utils import rle_from_box_mask, rle_to_mask
from napari_sam2.engine.validation import check_generator_settings, check_image_not_path
from napari_sam2.errors import InputError

__all__ = ["Tile", "TiledMaskGenerator", "plan_tiles", "tile_starts", "label_image"]


class MaskGenerator(Protocol):
    def generate(self, image: np.ndarray, normalizer: Normalizer | None = None) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Tile:
    """One tile: its pixels ``image[y0:y1, x0:x1]`` and the core it owns, ``[cy0:cy1, cx0:cx1]``."""

    y0: int
    x0: int
    y1: int
    x1: int
    cy0: int
    cx0: int
    cy1: int
    cx1: int

    @property
    def box_xywh(self) -> list[int]:
        return [self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0]


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile_size`` covering ``length`` with at least ``overlap`` shared.

    The fewest tiles that do it, spread evenly (so real overlaps may be larger); one tile when
    the image fits.
    """
    if length <= tile_size:
        return [0]
    n = math.ceil((length - overlap) / (tile_size - overlap))
    return [round(i * (length - tile_size) / (n - 1)) for i in range(n)]


def _cores(starts: list[int], tile_size: int, length: int) -> list[tuple[int, int]]:
    ends = [min(s + tile_size, length) for s in starts]
    cuts = [0] + [(starts[i + 1] + ends[i]) // 2 for i in range(len(starts) - 1)] + [length]
    return [(cuts[i], cuts[i + 1]) for i in range(len(starts))]


def plan_tiles(shape_hw: tuple[int, int], tile_size: int, overlap: int) -> list[Tile]:
    """The tiles of an image of ``shape_hw``, row by row."""
    h, w = shape_hw
    ys, xs = tile_starts(h, tile_size, overlap), tile_starts(w, tile_size, overlap)
    cy, cx = _cores(ys, tile_size, h), _cores(xs, tile_size, w)
    return [
        Tile(y0, x0, min(y0 + tile_size, h), min(x0 + tile_size, w), cy[i][0], cx[j][0], cy[i][1], cx[j][1])
        for i, y0 in enumerate(ys)
        for j, x0 in enumerate(xs)
    ]


@dataclass
class _Candidate:
    tile: int
    rank: int  # position in the tile's output
    sub: np.ndarray  # the mask inside its box (full-image box below)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive, full image
    owned: bool
    record: dict[str, Any]
    area: int = 0

    def __post_init__(self) -> None:
        self.area = int(self.sub.sum())


class TiledMaskGenerator:
    """Automatic mask generation on overlapping tiles of a large image, merged (see the module doc).

    Args:
        model: our SAM2Model; a :class:`SAM2AutomaticMaskGenerator` is built with ``generator_kwargs``.
        tile_size: tile side in pixels (1024: the model's input, so tiles are not resized).
        overlap: minimum overlap of neighbouring tiles in pixels.
        edge_margin: a mask within this many pixels of a tile's inner edge counts as cut.
        dedupe_iou_thresh: masks from different tiles with a higher mask IoU are duplicates.
        output_mode: "uncompressed_rle" (default: compact for large images) or "binary_mask"
            (one full-size bool array per mask: 64 MiB each at 8192 x 8192).
        generator: instead of ``model``, any object with the generator's ``generate(image,
            normalizer=...)`` (then no ``generator_kwargs``).
        **generator_kwargs: passed to :class:`SAM2AutomaticMaskGenerator` (points_per_side, ...).
    """

    #: generate(image, normalizer=...): the frame's contrast mapped as the tracker maps it
    api_extensions: ClassVar[frozenset[str]] = frozenset({EXTENSION_NORMALIZER})

    def __init__(
        self,
        model: Any = None,
        *,
        tile_size: int = 1024,
        overlap: int = 256,
        edge_margin: int = 4,
        dedupe_iou_thresh: float = 0.5,
        output_mode: str = "uncompressed_rle",
        generator: MaskGenerator | None = None,
        **generator_kwargs: Any,
    ) -> None:
        if (model is None) == (generator is None):
            raise InputError(
                "give either a model (a generator is built from it) or a ready generator, not both"
            )
        if generator is not None and generator_kwargs:
            raise InputError(
                f"generator keyword arguments {sorted(generator_kwargs)} only apply when building from a model"
            )
        if not 0 <= int(overlap) < int(tile_size):
            raise InputError(f"overlap must be >= 0 and smaller than tile_size ({tile_size}); got {overlap}")
        if int(edge_margin) < 0 or 2 * int(edge_margin) >= int(overlap) > 0:
            raise InputError(
                f"edge_margin must be >= 0 and less than half the overlap ({overlap}); got {edge_margin}"
            )
        check_generator_settings(dedupe_iou_thresh=dedupe_iou_thresh)
        if output_mode not in ("binary_mask", "uncompressed_rle"):
            raise InputError(
                f"unknown output_mode {output_mode!r}; supported modes: binary_mask, uncompressed_rle"
            )
        if generator is None:
            from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator

            generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **generator_kwargs)
        self.generator = generator
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.edge_margin = int(edge_margin)
        self.dedupe_iou_thresh = float(dedupe_iou_thresh)
        self.output_mode = output_mode

    def generate(self, image: np.ndarray, normalizer: Normalizer | None = None) -> list[dict[str, Any]]:
        """Masks of the whole image: the generator's records in full-image coordinates.

        Each record also has ``tile_box`` [x, y, w, h], the tile it came from. The intensity
        normalisation is fitted once on the whole image (or ``normalizer`` is used), so every
        tile is mapped alike.
        """
        check_image_not_path(image, where="generate")
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
            raise InputError(f"expected one image of shape (H, W) or (H, W, C); got shape {image.shape}")
        if normalizer is None:
            normalizer = Normalizer.fit(image[None])
        h, w = image.shape[:2]
        tiles = plan_tiles((h, w), self.tile_size, self.overlap)
        candidates: list[_Candidate] = []
        for t, tile in enumerate(tiles):
            records = self.generator.generate(
                image[tile.y0 : tile.y1, tile.x0 : tile.x1], normalizer=normalizer
            )
            for rank, rec in enumerate(records):
                cand = self._candidate(t, rank, tile, rec, h, w)
                if cand is not None:
                    candidates.append(cand)
        kept = self._dedupe(candidates)
        kept.sort(key=lambda c: (c.tile, c.rank))
        return [self._record(c, tiles[c.tile], h, w) for c in kept]

    # ------------------------------------------------------------------ merge
    def _candidate(self, t: int, rank: int, tile: Tile, rec: dict, h: int, w: int) -> _Candidate | None:
        seg = rec["segmentation"]
        mask = rle_to_mask(seg) if isinstance(seg, dict) else np.asarray(seg, dtype=bool)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if len(rows) == 0:
            return None
        by0, by1, bx0, bx1 = rows[0], rows[-1], cols[0], cols[-1]
        th, tw = mask.shape
        m = self.edge_margin
        cut = (
            (tile.x0 > 0 and bx0 <= m)
            or (tile.y0 > 0 and by0 <= m)
            or (tile.x1 < w and bx1 >= tw - 1 - m)
            or (tile.y1 < h and by1 >= th - 1 - m)
        )
        if cut:
            return None
        box = (int(bx0 + tile.x0), int(by0 + tile.y0), int(bx1 + tile.x0), int(by1 + tile.y0))
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        owned = tile.cx0 <= cx < tile.cx1 and tile.cy0 <= cy < tile.cy1
        return _Candidate(t, rank, mask[by0 : by1 + 1, bx0 : bx1 + 1].copy(), box, owned, rec)

    def _dedupe(self, candidates: list[_Candidate]) -> list[_Candidate]:
        order = sorted(
            candidates,
            key=lambda c: (not c.owned, -float(c.record.get("predicted_iou", 0.0)), c.tile, c.rank),
        )
        kept: list[_Candidate] = []
        boxes = np.zeros((len(order), 4), dtype=np.int64)
        tiles = np.zeros(len(order), dtype=np.int64)
        for cand in order:
            n = len(kept)
            x0, y0, x1, y1 = cand.box
            b = boxes[:n]
            near = np.flatnonzero(
                (tiles[:n] != cand.tile)
                & (b[:, 0] <= x1)
                & (b[:, 2] >= x0)
                & (b[:, 1] <= y1)
                & (b[:, 3] >= y0)
            )
            if any(_mask_iou(cand, kept[i]) > self.dedupe_iou_thresh for i in near):
                continue
            boxes[n], tiles[n] = cand.box, cand.tile
            kept.append(cand)
        return kept

    def _record(self, c: _Candidate, tile: Tile, h: int, w: int) -> dict[str, Any]:
        x0, y0, x1, y1 = c.box
        if self.output_mode == "binary_mask":
            seg: Any = np.zeros((h, w), dtype=bool)
            seg[y0 : y1 + 1, x0 : x1 + 1] = c.sub
        else:
            seg = rle_from_box_mask(c.sub, y0, x0, h, w)
        rec = c.record
        out = {
            "segmentation": seg,
            "area": c.area,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "predicted_iou": rec.get("predicted_iou"),
            "point_coords": [[p[0] + tile.x0, p[1] + tile.y0] for p in rec.get("point_coords", [])],
            "stability_score": rec.get("stability_score"),
            "crop_box": None,
            "tile_box": [float(v) for v in tile.box_xywh],
        }
        if rec.get("crop_box") is not None:
            cb = rec["crop_box"]
            out["crop_box"] = [cb[0] + tile.x0, cb[1] + tile.y0, cb[2], cb[3]]
        return out


def _mask_iou(a: _Candidate, b: _Candidate) -> float:
    ix0, iy0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    ix1, iy1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if ix0 > ix1 or iy0 > iy1:
        return 0.0
    wa = a.sub[iy0 - a.box[1] : iy1 - a.box[1] + 1, ix0 - a.box[0] : ix1 - a.box[0] + 1]
    wb = b.sub[iy0 - b.box[1] : iy1 - b.box[1] + 1, ix0 - b.box[0] : ix1 - b.box[0] + 1]
    inter = int((wa & wb).sum())
    return inter / (a.area + b.area - inter) if inter else 0.0


def label_image(records: list[dict[str, Any]], shape_hw: tuple[int, int]) -> np.ndarray:
    """A label image (int32, 0 = background) of the records: record i gets label i + 1.

    Larger masks are painted first, so a small mask lying on a larger one stays visible.
    """
    labels = np.zeros(shape_hw, dtype=np.int32)
    areas = [r["area"] for r in records]
    for i in sorted(range(len(records)), key=lambda i: -areas[i]):
        seg = records[i]["segmentation"]
        mask = rle_to_mask(seg) if isinstance(seg, dict) else np.asarray(seg, dtype=bool)
        if mask.shape != tuple(shape_hw):
            raise InputError(f"record {i} has a mask of shape {mask.shape}, not {tuple(shape_hw)}")
        labels[mask] = i + 1
    return labels
