"""Prompts sampled from ground truth as SAM 2 was trained (Meta's ``training/model/sam2.py``).

Facts taken from Meta's training code and its fine-tuning config
(``sam2.1_hiera_b+_MOSE_finetune.yaml``):

- on single images the first prompt is always points (``prob_to_use_pt_input`` is forced to
  1 when a clip has one frame); with probability ``prob_to_use_box_input`` (0.5) it is a box
  made of the noised corners of the mask's bounding box (noise 0.1 of the side, at most 20
  pixels, labels 2 and 3), otherwise one positive click drawn uniformly from the mask;
- then ``num_correction_pt_per_frame`` (7) correction clicks, each drawn uniformly from the
  error of the previous prediction (a positive click in a missed pixel, a negative one on a
  false positive; anywhere in the background when nothing is wrong), with probability
  ``prob_to_sample_from_gt_for_train`` (0.1) drawn from the ground truth instead, each
  decoder step also fed the previous step's low-resolution logits as mask prompt;
- for video, masks themselves are the prompt of the conditioning frame in half the clips.

Everything here works on the model's square input grid (``image_size`` pixels a side, 1024
for the official variants), where Meta samples too; coordinates are (x, y) floats.
Randomness comes from a numpy ``Generator`` so a run is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sam2.errors import InputError


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are drawn (defaults: Meta's SAM 2.1 fine-tuning settings for images)."""

    prob_box: float = 0.5
    correction_clicks: int = 7
    prob_correct_from_gt: float = 0.1
    box_noise: float = 0.1
    box_noise_bound: float = 20.0

    def __post_init__(self) -> None:
        for name in ("prob_box", "prob_correct_from_gt"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {v}")
        if self.correction_clicks < 0:
            raise InputError(f"correction_clicks must be >= 0, got {self.correction_clicks}")


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label image to (size, size), pixel centres aligned."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def uniform_point(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(x, y) of a pixel drawn uniformly from a non-empty boolean mask."""
    ys, xs = np.nonzero(mask)
    k = int(rng.integers(len(ys)))
    return np.array([xs[k], ys[k]], dtype=np.float32)


def noisy_box(mask: np.ndarray, rng: np.random.Generator, cfg: PromptConfig) -> np.ndarray:
    """The mask's bounding box corners (x0, y0), (x1, y1), each moved by up to ``box_noise`` of
    the box side (at most ``box_noise_bound`` pixels), clamped to the grid: shape (2, 2)."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)
    if cfg.box_noise > 0:
        w, h = box[2] - box[0], box[3] - box[1]
        dx = min(w * cfg.box_noise, cfg.box_noise_bound)
        dy = min(h * cfg.box_noise, cfg.box_noise_bound)
        box = box + (2 * rng.random(4).astype(np.float32) - 1) * np.array([dx, dy, dx, dy], dtype=np.float32)
        hh, ww = mask.shape
        box = np.clip(box, 0, np.array([ww - 1, hh - 1, ww - 1, hh - 1], dtype=np.float32))
    return box.reshape(2, 2)


def first_prompt(
    mask: np.ndarray, rng: np.random.Generator, cfg: PromptConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The initial prompt for one object: (points (N, 2), labels (N,)): a box or one click."""
    if rng.random() < cfg.prob_box:
        return noisy_box(mask, rng, cfg), np.array([2, 3], dtype=np.int32)
    return uniform_point(mask, rng)[None], np.array([1], dtype=np.int32)


def correction_click(
    gt: np.ndarray, pred: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """One click drawn uniformly from the error region, as Meta's ``sample_random_points_from_errors``.

    A missed pixel gives a positive click, a false positive a negative one; a prediction
    without error gives a negative click anywhere in the background. ``pred=None`` samples
    from the ground truth (a positive click in the object).
    """
    if pred is None:
        pred = np.zeros_like(gt)
    fn = gt & ~pred
    fp = pred & ~gt
    if not fn.any() and not fp.any():
        fp = ~gt
        if not fp.any():  # the object is the whole frame: nothing left to say but "here"
            return uniform_point(gt, rng), 1
    n_fn, n_fp = int(fn.sum()), int(fp.sum())
    if rng.random() * (n_fn + n_fp) < n_fn:
        return uniform_point(fn, rng), 1
    return uniform_point(fp, rng), 0


def centre_click(mask: np.ndarray) -> np.ndarray:
    """The deterministic validation click: the mask pixel farthest from its boundary, (x, y)."""
    from scipy.ndimage import distance_transform_edt

    d = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return np.array([x, y], dtype=np.float32)
