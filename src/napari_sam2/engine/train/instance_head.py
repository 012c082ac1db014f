"""Training the automatic instance head (every cell of a frame in one pass, without a point grid).

As micro-sam's instance segmentation decoder: a small convolutional head on the frozen image
features of SAM 2 (the stride-16 embedding and the decoder's stride-8 and stride-4 maps)
predicts, at stride 4,

- foreground (logit),
- the distance to the object's centre (0 at the centre, 1 at the farthest pixel of the object),
- the distance to the object's boundary (1 at the deepest pixel, 0 at the boundary),

and a seeded watershed turns them into instances: seeds where the centre distance is small
and the boundary distance large, grown over the foreground along the boundary distance.
Its cost per frame is the encoder (shared with tracking) plus one head pass and one
watershed, instead of the 1,024 decoder prompts of segment-everything.

Trained from instance label stacks with the image encoder frozen (features computed once per
frame): :func:`train_instance_head`. Saved as a small file (:meth:`InstanceHead.save`) that
names the SAM 2 variant whose features it reads. The head itself, the watershed and its use
in seeding and tracking live in :mod:`napari_sam2.engine.segment.instance_head` (re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.engine.segment.instance_head import (
    HEAD_FORMAT,
    InstanceHead,
    InstanceHeadGenerator,
    WatershedConfig,
    load_instance_head,
    maps_to_instances,
    predict_maps,
    segment_instances,
)
from napari_sam2.errors import InputError
from napari_sam2.model import SAM2Model

__all__ = [
    "HEAD_FORMAT",
    "HeadTrainConfig",
    "InstanceHead",
    "InstanceHeadGenerator",
    "WatershedConfig",
    "distance_targets",
    "evaluate_instance_head",
    "head_loss",
    "instance_f1",
    "load_instance_head",
    "maps_to_instances",
    "match_instances",
    "predict_maps",
    "segment_instances",
    "train_instance_head",
]


# ---------------------------------------------------------------------- targets
def distance_targets(labels: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 targets of an (H, W) label image: foreground, centre distance, boundary distance.

    Distances are normalised per object to [0, 1] (as micro-sam's per-object distance transform),
    so small and large cells weigh alike; outside objects they are 0 (and masked in the loss).
    """
    from scipy import ndimage as ndi

    out = np.zeros((3,) + labels.shape, np.float32)
    out[0] = labels > 0
    for sl, lab_id in zip(ndi.find_objects(labels), range(1, int(labels.max()) + 1)):
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        m = labels[sl] == lab_id
        if not m.any():
            continue
        edt = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        out[2][sl][m] = (edt / edt.max())[m]
        ys, xs = np.nonzero(m)
        cy, cx = ys.mean(), xs.mean()
        yy, xx = np.mgrid[: m.shape[0], : m.shape[1]]
        d = np.hypot(yy - cy, xx - cx)
        out[1][sl][m] = (d / max(d[m].max(), 1e-6))[m]
    return out


def head_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on foreground plus foreground-masked MSE of the (sigmoid) distances."""
    fg = target[:, 0:1]
    bce = F.binary_cross_entropy_with_logits(pred[:, 0:1], fg)
    dist = (torch.sigmoid(pred[:, 1:]) - target[:, 1:]) ** 2
    mse = (dist * fg).sum() / (fg.sum() * 2).clamp(min=1.0)
    return bce + mse


# ---------------------------------------------------------------------- metrics
def match_instances(pred: np.ndarray, gt: np.ndarray, iou_threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of a one-to-one match at IoU > threshold.

    Above 0.5 a match is unique, so counting pairs over the threshold is the matching.
    """
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    g_ids, g_inv = np.unique(gt, return_inverse=True)
    inter = np.zeros((len(p_ids), len(g_ids)), np.int64)
    np.add.at(inter, (p_inv.ravel(), g_inv.ravel()), 1)
    ps, gs = inter.sum(1), inter.sum(0)
    iou = inter / np.maximum(ps[:, None] + gs[None] - inter, 1)
    iou = iou[p_ids > 0][:, g_ids > 0]
    if iou_threshold >= 0.5:
        tp = int((iou > iou_threshold).sum())
    else:  # not unique below 0.5: optimal assignment
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(-iou)
        tp = int((iou[r, c] > iou_threshold).sum())
    n_pred, n_gt = iou.shape
    return tp, n_pred - tp, n_gt - tp


def instance_f1(pred: np.ndarray, gt: np.ndarray, iou_threshold: float = 0.5) -> float:
    """F1 of the instance match at IoU > ``iou_threshold`` (1.0 when both are empty)."""
    tp, fp, fn = match_instances(pred, gt, iou_threshold)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


# ---------------------------------------------------------------------- training
@dataclass
class HeadTrainConfig:
    steps: int = 300
    lr: float = 2e-3
    weight_decay: float = 1e-4
    frames_per_step: int = 4
    width: int = 64
    seed: int = 0
    flips: bool = True  # random flips of features and targets, the cheap augmentation

    def __post_init__(self) -> None:
        for name in ("steps", "frames_per_step", "width"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % 8:
            raise InputError(f"width must be a multiple of 8 (GroupNorm of 8 groups), got {self.width}")


def train_instance_head(
    model: SAM2Model,
    stacks: Sequence[Any],
    frames: Sequence[Any],
    config: HeadTrainConfig | None = None,
    *,
    val: Sequence[Any] = (),
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[InstanceHead, dict[str, Any]]:
    """Train a head on ``frames`` (:class:`~napari_sam2.engine.train.FrameRef` of ``stacks``) with
    the encoder frozen; returns ``(head, summary)`` with the held-out F1 at IoU 0.5 when ``val`` is given."""
    from napari_sam2.engine.train.features import FrameStore

    config = config or HeadTrainConfig()
    if not frames:
        raise InputError("no training frames for the instance head: label some cells first")
    torch.manual_seed(config.seed)
    store = FrameStore(model, stacks)
    dev = model.device
    feats = [store.features(r) for r in frames]
    grid = feats[0].high_res[0].shape[-1]
    targets = [
        torch.from_numpy(distance_targets(_resize(store.stacks[r.stack].label_frame(r.t), grid)))
        for r in frames
    ]
    v16 = torch.cat([f.vision_feat for f in feats]).to(dev)
    h8 = torch.cat([f.high_res[1] for f in feats]).to(dev)
    h4 = torch.cat([f.high_res[0] for f in feats]).to(dev)
    tgt = torch.stack(targets).to(dev)
    head = InstanceHead((v16.shape[1], h8.shape[1], h4.shape[1]), config.width).to(dev)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    losses = []
    t0 = time.perf_counter()
    head.train()
    for step in range(config.steps):
        idx = torch.from_numpy(
            rng.choice(len(frames), min(config.frames_per_step, len(frames)), replace=False)
        )
        a, b, c, t = v16[idx], h8[idx], h4[idx], tgt[idx]
        if config.flips:
            dims = [d for d, flip in ((-1, rng.random() < 0.5), (-2, rng.random() < 0.5)) if flip]
            if dims:
                a, b, c, t = (x.flip(dims) for x in (a, b, c, t))
        for g in opt.param_groups:  # cosine to a tenth
            g["lr"] = config.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / config.steps)))
        loss = head_loss(head(a, [c, b]), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress({"step": step + 1, "steps": config.steps, "loss": losses[-1]})
    head.eval()
    summary: dict[str, Any] = {
        "steps": config.steps,
        "seconds": round(time.perf_counter() - t0, 2),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "train_frames": len(frames),
        "config": asdict(config),
        "model": model.config.name,
    }
    if val:
        summary["val_f1"] = evaluate_instance_head(model, head, store, val)
    return head, summary


def evaluate_instance_head(model: SAM2Model, head: InstanceHead, store: Any, refs: Sequence[Any]) -> float:
    """Mean instance F1 at IoU 0.5 over ``refs``, at the frames' own resolution."""
    scores = []
    for r in refs:
        gt = store.stacks[r.stack].label_frame(r.t)
        pred = segment_instances(model, head, features=store.features(r), out_shape=gt.shape)
        scores.append(instance_f1(pred, gt))
    return float(np.mean(scores)) if scores else float("nan")


def _resize(labels: np.ndarray, size: int) -> np.ndarray:
    from napari_sam2.engine.train.prompts import resize_labels

    return resize_labels(np.asarray(labels), size)
