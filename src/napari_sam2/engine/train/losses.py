"""SAM 2's training losses (Meta's ``training/loss_fns.py``, ``MultiStepMultiMasksAndIous``).

Per decoder step: sigmoid focal loss (alpha 0.25, gamma 2) and dice loss on every output
mask, of which only the mask with the lowest ``20 * focal + dice`` is back-propagated; the
IoU prediction is regressed (L1) on the true IoU of every output mask (``supervise_all_iou``);
the object score by plain binary cross-entropy (focal with alpha -1, gamma 0). Mask and IoU
terms count only for objects present in the ground truth. Weights: mask 20, dice 1, IoU 1,
class 1 (the SAM 2.1 fine-tuning config). Losses are summed over correction steps and
divided by the number of objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    mask: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    cls: float = 1.0


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Per (object, mask) mean focal loss over pixels: (N, M, H, W) -> (N, M)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, M, H, W) -> (N, M) soft dice loss with +1 smoothing."""
    p = logits.sigmoid().flatten(2)
    t = target.flatten(2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def true_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded masks with the target: (N, M, H, W) -> (N, M)."""
    pred = logits.flatten(2) > 0
    gt = target.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return inter / union.clamp(min=1.0)


def step_losses(
    multimask_logits: torch.Tensor,
    pred_ious: torch.Tensor,
    object_score_logits: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights = LossWeights(),
) -> dict[str, torch.Tensor]:
    """Losses of one decoder step, summed over objects (divide by the object count after)."""
    target = target.float().expand_as(multimask_logits)
    focal = focal_loss(multimask_logits.float(), target)
    dice = dice_loss(multimask_logits.float(), target)
    iou_err = F.l1_loss(pred_ious.float(), true_iou(multimask_logits.detach(), target), reduction="none")
    present = target[:, 0].flatten(1).any(-1, keepdim=True).float()
    cls = F.binary_cross_entropy_with_logits(object_score_logits.float(), present, reduction="none")
    if focal.shape[1] > 1:
        best = torch.argmin(focal * weights.mask + dice * weights.dice, dim=-1, keepdim=True)
        focal, dice = focal.gather(1, best), dice.gather(1, best)
        iou_err = iou_err.mean(-1, keepdim=True)
    return {
        "mask": (focal * present).sum(),
        "dice": (dice * present).sum(),
        "iou": (iou_err * present).sum(),
        "class": cls.sum(),
    }


def total_loss(parts: dict[str, torch.Tensor], weights: LossWeights = LossWeights()) -> torch.Tensor:
    return (
        weights.mask * parts["mask"]
        + weights.dice * parts["dice"]
        + weights.iou * parts["iou"]
        + weights.cls * parts["class"]
    )
