"""Masks, boxes, run-length encoding, NMS, point grids and crops for "segment everything".

Each function follows the definition of the same-named helper in Meta's ``sam2/utils/amg.py``
(and, for :func:`nms` / :func:`batched_nms`, torchvision's CPU kernel), so that the automatic
mask generator gives Meta's result; none needs torchvision, OpenCV or pycocotools.

Conventions (Meta's): boxes are XYXY with *inclusive* pixel indices (a one-pixel mask at
(x, y) has the box [x, y, x, y]); an empty mask has the box [0, 0, 0, 0]; crop boxes are
XYXY with exclusive ends; an uncompressed RLE is ``{"size": [h, w], "counts": [...]}`` over the
mask in column-major (Fortran) order, starting with a run of zeros (0 if the first pixel is set).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

import numpy as np
import torch

from napari_sam2.engine.predict.components import connected_component_areas  # noqa: F401 - re-exported
from napari_sam2.errors import InputError, InputTypeError

Rle = dict[str, Any]


# ---------------------------------------------------------------------------------- records
class MaskRecords:
    """Parallel per-mask fields (tensors, arrays or lists) that are filtered and joined together."""

    def __init__(self, **fields: Any) -> None:
        self._fields: dict[str, Any] = {}
        for key, value in fields.items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(value, (list, np.ndarray, torch.Tensor)):
            raise InputTypeError(
                f"field {key!r} must be a list, numpy array or torch tensor; got {type(value)}"
            )
        self._fields[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __delitem__(self, key: str) -> None:
        del self._fields[key]

    def __contains__(self, key: str) -> bool:
        return key in self._fields

    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        return 0

    def items(self):
        return self._fields.items()

    def filter(self, keep: torch.Tensor) -> None:
        """Keep the rows selected by a boolean mask or an index tensor, in that order."""
        keep = torch.as_tensor(keep)
        if keep.dtype == torch.bool:
            # The selected rows found once: indexing each field by the boolean mask would make a
            # GPU's host wait for the row count once per field.
            keep = keep.nonzero().squeeze(1)
        on_device: dict[torch.device, torch.Tensor] = {keep.device: keep}
        host = None
        for key, value in self._fields.items():
            if isinstance(value, torch.Tensor):
                if value.device not in on_device:
                    on_device[value.device] = keep.to(value.device)
                self._fields[key] = value[on_device[value.device]]
                continue
            if host is None:
                host = keep.cpu().numpy()
            if isinstance(value, np.ndarray):
                self._fields[key] = value[host]
            else:
                self._fields[key] = [value[i] for i in host.tolist()]

    def cat(self, other: MaskRecords) -> None:
        """Append another record set's rows (fields absent here are taken over)."""
        for key, value in other.items():
            mine = self._fields.get(key)
            if mine is None:
                self._fields[key] = value
            elif isinstance(value, torch.Tensor):
                self._fields[key] = torch.cat([mine, value.to(mine.device)])
            elif isinstance(value, np.ndarray):
                self._fields[key] = np.concatenate([mine, value])
            else:
                self._fields[key] = mine + list(value)

    def to_numpy(self) -> None:
        """Tensors -> float32 numpy arrays (as Meta's records end up)."""
        for key, value in self._fields.items():
            if isinstance(value, torch.Tensor):
                self._fields[key] = value.float().cpu().numpy()


def batch_iterator(batch_size: int, *arrays: Sequence) -> Iterator[list]:
    """Slices of ``batch_size`` rows of parallel sequences (the last one may be shorter)."""
    if not arrays or any(len(a) != len(arrays[0]) for a in arrays):
        raise InputError("batch_iterator needs one or more sequences of the same length")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1; got {batch_size}")
    for start in range(0, len(arrays[0]), batch_size):
        yield [a[start : start + batch_size] for a in arrays]


# ---------------------------------------------------------------------------------- grids and crops
def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points (x, y) at the centres of an n x n grid of cells over [0, 1]^2, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n_per_side / scale_per_layer**i)`` points a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY, exclusive ends) and their layer: the whole image, then (2^i)^2 crops in layer i.

    In layer i the crops overlap by ``int(overlap_ratio * short_side * 2 / 2^i)`` pixels; crops
    are listed x-major (all y for the first x, then the next x), as Meta's ``product(x0s, y0s)``.
    """
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_per_side))
        crop_w = crop_len(im_w, n_per_side, overlap)
        crop_h = crop_len(im_h, n_per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def _shift_xy(xy: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``xy`` (..., 2k) in (x, y) pairs shifted by (dx, dy). Python numbers, not a tensor of the
    offsets: a tensor made from host data is a copy the host waits for on a GPU."""
    if dx == 0 and dy == 0:
        return xy.clone()
    out = xy.clone()
    out[..., 0::2] += dx
    out[..., 1::2] += dy
    return out


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    return _shift_xy(boxes, crop_box[0], crop_box[1])


def uncrop_points(points: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    return _shift_xy(points, crop_box[0], crop_box[1])


def uncrop_masks(masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int) -> torch.Tensor:
    """(N, h, w) masks of a crop placed into (N, orig_h, orig_w), zero outside the crop."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    pad = (x0, orig_w - x1, y0, orig_h - y1)  # left, right, top, bottom
    return torch.nn.functional.pad(masks, pad, value=0)


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """(N,) True for boxes (crop coordinates) within ``atol`` px of an edge of the crop that is
    not also an edge of the image: such masks are probably cut by the crop."""
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()

    def near(edges: Sequence[int]) -> torch.Tensor:
        # torch.isclose(boxes, edges, atol, rtol=0) for finite boxes, with the edges as Python
        # numbers (a tensor of them would be a copy from the host each batch)
        return torch.stack([(boxes[:, k] - float(e)).abs() <= atol for k, e in enumerate(edges)], dim=1)

    return torch.any(near(crop_box) & ~near(orig_box), dim=1)


def box_xyxy_to_xywh(box: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """One box [x0, y0, x1, y1] -> [x0, y0, x1 - x0, y1 - y0] (a copy)."""
    out = box.clone() if isinstance(box, torch.Tensor) else np.array(box, copy=True)
    out[2] = out[2] - out[0]
    out[3] = out[3] - out[1]
    return out


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N,) areas of XYXY boxes, (x1 - x0) * (y1 - y0); integer boxes are computed in int64."""
    if not boxes.is_floating_point():
        boxes = boxes.long()
    elif boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


# ---------------------------------------------------------------------------------- masks
def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool masks -> (..., 4) int64 XYXY boxes, inclusive; [0, 0, 0, 0] for an empty mask."""
    h, w = masks.shape[-2:]
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=-1)  # (..., H): the rows the mask occupies
    cols = masks.any(dim=-2)  # (..., W)
    ry = torch.arange(h, device=masks.device)
    rx = torch.arange(w, device=masks.device)
    top = torch.where(rows, ry, h).amin(dim=-1)
    bottom = torch.where(rows, ry, -1).amax(dim=-1)
    left = torch.where(cols, rx, w).amin(dim=-1)
    right = torch.where(cols, rx, -1).amax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    empty = ~rows.any(dim=-1)
    return torch.where(empty[..., None], torch.zeros_like(boxes), boxes)


def calculate_stability_score(masks: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """IoU of a logit mask thresholded at ``mask_threshold + offset`` and at ``- offset``.

    The high-threshold mask lies inside the low one, so the IoU is a ratio of areas (NaN for
    an empty low-threshold mask, as in Meta's code).
    """
    inter = (masks > (mask_threshold + offset)).flatten(-2).sum(-1, dtype=torch.int32)
    union = (masks > (mask_threshold - offset)).flatten(-2).sum(-1, dtype=torch.int32)
    return inter / union


def mask_to_rle_pytorch(masks: torch.Tensor) -> list[Rle]:
    """(N, H, W) bool masks -> uncompressed RLEs (column-major, first count = leading zeros).

    Meta's version reads each mask's changes and first pixel back from the device on its own
    (three waits of the host per mask on a GPU); here the whole batch comes back in one copy.
    """
    n, h, w = masks.shape
    flat = masks.permute(0, 2, 1).flatten(1)
    # A virtual background pixel before each mask: a mask starting with foreground changes at 0,
    # which gives its leading count of 0 zeros, so the first pixel needs no read of its own.
    padded = torch.cat([flat.new_zeros(n, 1), flat], dim=1)
    changes = (padded[:, 1:] ^ padded[:, :-1]).nonzero().cpu().numpy()  # (K, 2), rows in order
    starts = np.searchsorted(changes[:, 0], np.arange(n + 1))
    out = []
    for i in range(n):
        bounds = np.concatenate([[0], changes[starts[i] : starts[i + 1], 1], [h * w]])
        out.append({"size": [h, w], "counts": np.diff(bounds).tolist()})
    return out


def rle_to_mask(rle: Rle) -> np.ndarray:
    """Uncompressed RLE -> (H, W) bool mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise InputError(f"RLE counts sum to {flat.size} but its size {h}x{w} needs {h * w}")
    return flat.reshape(w, h).T


def area_from_rle(rle: Rle) -> int:
    return int(sum(rle["counts"][1::2]))


def rle_from_box_mask(sub_mask: np.ndarray, y0: int, x0: int, height: int, width: int) -> Rle:
    """RLE of a (height, width) mask that is zero except ``sub_mask`` placed at row y0, column x0.

    Used to put tile masks into a large image without ever building the full-size mask.
    """
    sub = np.asarray(sub_mask, dtype=bool)
    h, w = sub.shape
    if y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
        raise InputError(f"a {h}x{w} mask at ({y0}, {x0}) does not fit in {height}x{width}")
    padded = np.zeros((w, h + 2), dtype=np.int8)  # column-major: one row per image column
    padded[:, 1:-1] = sub.T
    edges = np.diff(padded, axis=1)
    col_s, row_s = np.nonzero(edges == 1)  # run starts, in column then row order
    col_e, row_e = np.nonzero(edges == -1)  # run ends (exclusive)
    starts = (col_s + x0) * height + row_s + y0
    ends = (col_e + x0) * height + row_e + y0
    if len(starts) > 1:  # a run ending at a column's bottom continues at the next column's top
        join = starts[1:] == ends[:-1]
        starts = np.concatenate([starts[:1], starts[1:][~join]])
        ends = np.concatenate([ends[:-1][~join], ends[-1:]])
    bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, height * width
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    return {"size": [height, width], "counts": np.diff(bounds).tolist()}


# ---------------------------------------------------------------------------------- NMS
def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS, by decreasing score: torchvision's CPU ``nms``.

    Same arithmetic as torchvision's kernel, in the boxes' dtype: areas ``(x1-x0)*(y1-y0)``,
    IoU ``inter / (area_i + area_j - inter)``, suppressed when ``IoU > iou_threshold`` (compared
    in double). Same visiting order: by decreasing score, equal scores by increasing index (a
    stable sort; checked against torchvision 0.29.1 on the same torch build with many tied
    scores, see benchmarks/meta_amg_reference.py). Computed on the CPU whatever the device.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise InputError(
            f"nms needs boxes (N, 4) and scores (N,); got {tuple(boxes.shape)}, {tuple(scores.shape)}"
        )
    device = boxes.device
    boxes, scores = boxes.detach().cpu(), scores.detach().cpu()
    order = torch.sort(scores, dim=0, descending=True, stable=True)[1]
    b = boxes[order].numpy()
    x0, y0, x1, y1 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    areas = (x1 - x0) * (y1 - y0)
    n = len(b)
    suppressed = np.zeros(n, dtype=bool)
    zero = b.dtype.type(0)
    kept = []
    for p in range(n):
        if suppressed[p]:
            continue
        kept.append(p)
        if p + 1 == n:
            break
        ww = np.maximum(zero, np.minimum(x1[p], x1[p + 1 :]) - np.maximum(x0[p], x0[p + 1 :]))
        hh = np.maximum(zero, np.minimum(y1[p], y1[p + 1 :]) - np.maximum(y0[p], y0[p + 1 :]))
        inter = ww * hh
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 for empty boxes: NaN, never "> thr"
            iou = inter / ((areas[p] + areas[p + 1 :]) - inter)
        suppressed[p + 1 :] |= iou.astype(np.float64) > iou_threshold
    return order[torch.as_tensor(kept, dtype=torch.int64)].to(device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each category ``idxs``: torchvision's ``batched_nms`` as it runs on the CPU.

    Like torchvision, up to 1000 boxes are shifted apart by category and go through one
    :func:`nms`; more are run per category and the kept indices re-sorted by score with
    ``Tensor.sort(descending=True)`` (not stable), the call torchvision makes there.
    """
    if boxes.numel() > 4000:
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for category in torch.unique(idxs):
            members = torch.where(idxs == category)[0]
            keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


# ---------------------------------------------------------------------------------- regions
def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``area_thresh``.

    Meta's definition: 8-connected regions of the background (holes) or of the mask (islands)
    with fewer than ``area_thresh`` pixels. Holes are any background region, the one touching
    the border included. If every island is small, the largest is kept (the first in raster
    order among equals). Returns the mask and whether it changed.
    """
    from skimage.measure import label

    if mode not in ("holes", "islands"):
        raise InputError(f"mode must be 'holes' or 'islands'; got {mode!r}")
    holes = mode == "holes"
    working = np.asarray(mask, dtype=bool) ^ holes
    regions = label(working, connectivity=2)
    sizes = np.bincount(regions.ravel())[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0, *small]
    if not holes:
        fill = [i for i in range(len(sizes) + 1) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True
