"""An automatic instance head: every cell of a frame in one pass, without a point grid.

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
names the SAM 2 variant whose features it reads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_sam2.engine.frames.normalization import preprocess
from napari_sam2.errors import AlreadyExistsError, InputError
from napari_sam2.model import FrameFeatures, SAM2Model

HEAD_FORMAT = "napari-sam2-instance-head/1"


def _block(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.GELU())


class InstanceHead(nn.Module):
    """Features (stride 16, 8, 4) -> (B, 3, S/4, S/4): foreground logit, centre and boundary distances (logits)."""

    def __init__(self, in_dims: tuple[int, int, int] = (256, 64, 32), width: int = 64) -> None:
        super().__init__()
        self.in_dims, self.width = tuple(in_dims), width
        # GroupNorm after each lateral: the frozen features' scale varies between checkpoints
        self.lat16 = nn.Sequential(nn.Conv2d(in_dims[0], width, 1), nn.GroupNorm(8, width))
        self.lat8 = nn.Sequential(nn.Conv2d(in_dims[1], width, 1), nn.GroupNorm(8, width))
        self.lat4 = nn.Sequential(nn.Conv2d(in_dims[2], width, 1), nn.GroupNorm(8, width))
        self.block16, self.block8, self.block4 = _block(width), _block(width), _block(width)
        self.out = nn.Conv2d(width, 3, 1)

    def forward(self, vision_feat: torch.Tensor, high_res: Sequence[torch.Tensor]) -> torch.Tensor:
        h4, h8 = high_res[0], high_res[1]
        x = self.block16(self.lat16(vision_feat))
        x = F.interpolate(x, size=h8.shape[-2:], mode="bilinear", align_corners=False) + self.lat8(h8)
        x = self.block8(x)
        x = F.interpolate(x, size=h4.shape[-2:], mode="bilinear", align_corners=False) + self.lat4(h4)
        return self.out(self.block4(x))

    def forward_features(self, feats: FrameFeatures) -> torch.Tensor:
        return self(feats.vision_feat.float(), [h.float() for h in feats.high_res])

    # ------------------------------------------------------------------ files
    def save(
        self, path: str | os.PathLike, info: dict[str, Any] | None = None, overwrite: bool = False
    ) -> Path:
        """Write the head with ``info`` (which SAM 2 variant's features it reads, training summary)."""
        p = Path(path).expanduser()
        if p.exists() and not overwrite:
            raise AlreadyExistsError(f"{p} already exists; choose another name or pass overwrite=True")
        p.parent.mkdir(parents=True, exist_ok=True)
        obj = {
            "format": HEAD_FORMAT,
            "in_dims": list(self.in_dims),
            "width": self.width,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "info": info or {},
        }
        tmp = p.with_name(p.name + ".tmp")
        torch.save(obj, tmp)
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[InstanceHead, dict[str, Any]]:
        """``(head, info)`` from a file written by :meth:`save`."""
        p = Path(path).expanduser()
        obj = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
            raise InputError(f"{p} is not an instance head file (expected format {HEAD_FORMAT!r})")
        head = cls(tuple(obj["in_dims"]), obj["width"])
        head.load_state_dict(obj["state_dict"], strict=True)
        return head.eval(), obj["info"]


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


# ---------------------------------------------------------------------- instances
@dataclass(frozen=True)
class WatershedConfig:
    """Thresholds of the seeded watershed (micro-sam's defaults for its distance maps)."""

    foreground_threshold: float = 0.5
    center_distance_threshold: float = 0.5
    boundary_distance_threshold: float = 0.5
    min_size: int = 10


def maps_to_instances(maps: np.ndarray, cfg: WatershedConfig = WatershedConfig()) -> np.ndarray:
    """(3, H, W) probabilities (foreground, centre distance, boundary distance) -> (H, W) int32 labels."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    fg = maps[0] > cfg.foreground_threshold
    seeds_mask = fg & (maps[1] < cfg.center_distance_threshold) & (maps[2] > cfg.boundary_distance_threshold)
    seeds, _ = ndi.label(seeds_mask)
    labels = watershed(-maps[2], markers=seeds, mask=fg)
    # drop objects under min_size pixels and number the rest 1..N
    sizes = np.bincount(labels.ravel())
    keep = (sizes >= cfg.min_size) & (np.arange(len(sizes)) > 0)
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


@torch.no_grad()
def predict_maps(head: InstanceHead, feats: FrameFeatures, out_shape: tuple[int, int]) -> np.ndarray:
    """The head's (3, H, W) probability maps, resized from the model grid to the frame's (H, W)."""
    logits = head.to(feats.vision_feat.device).forward_features(feats)
    probs = torch.sigmoid(F.interpolate(logits, size=tuple(out_shape), mode="bilinear", align_corners=False))
    return probs[0].cpu().numpy()


@torch.no_grad()
def segment_instances(
    model: SAM2Model,
    head: InstanceHead,
    frame_rgb: np.ndarray | None = None,
    *,
    features: FrameFeatures | None = None,
    out_shape: tuple[int, int] | None = None,
    watershed: WatershedConfig = WatershedConfig(),
) -> np.ndarray:
    """Every object of one frame as an (H, W) int32 label image, in one encoder + head pass.

    Give the frame as float RGB in [0, 1] (``Normalizer.to_rgb``) or its already computed
    ``features`` with the frame's ``out_shape``.
    """
    if features is None:
        if frame_rgb is None:
            raise InputError("segment_instances needs frame_rgb (float RGB in [0, 1]) or features")
        features = model.forward_image(preprocess(frame_rgb, model.image_size, device=model.device)[None])[0]
        out_shape = frame_rgb.shape[:2]
    if out_shape is None:
        raise InputError("with features, give out_shape: the (H, W) of the frame they were computed from")
    return maps_to_instances(predict_maps(head, features, out_shape), watershed)


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
