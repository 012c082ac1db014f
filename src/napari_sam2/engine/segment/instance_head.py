"""The instance head at work: every cell of a frame in one pass, without a point grid.

A small convolutional head on SAM 2's frozen image features (the stride-16 embedding and the
decoder's stride-8 and stride-4 maps), as micro-sam's instance segmentation decoder,
predicts at stride 4 foreground, the distance to the object's centre and the distance to
its boundary; a seeded watershed turns the maps into instances
(:func:`maps_to_instances`). It is trained by :mod:`napari_sam2.engine.train.instance_head`
and saved as a small file naming the SAM 2 variant whose features it reads.

:class:`InstanceHeadGenerator` offers it where segment everything is used: a mask generator
(``generate(frame, normalizer=...)`` -> masks and scores) that seeding, re-seeding and
discovery of every-cell tracking take as they take the automatic mask generator. Given a
``feature_provider`` (set by :func:`napari_sam2.engine.cells.seeding.tracker_features`) it
reads the image features the tracker computed for the frame, so its cost per frame is one
head pass and one watershed; alone it runs the encoder once per frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_sam2.engine.frames.normalization import Normalizer, preprocess
from napari_sam2.engine.predict.protocols import EXTENSION_NORMALIZER
from napari_sam2.errors import AlreadyExistsError, InputError, InputTypeError, MissingFileError
from napari_sam2.model import FrameFeatures, SAM2Model

__all__ = [
    "HEAD_FORMAT",
    "InstanceHead",
    "InstanceHeadGenerator",
    "WatershedConfig",
    "load_instance_head",
    "maps_to_instances",
    "predict_maps",
    "segment_instances",
]

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
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets one message
            raise InputError(
                f"{p} is not an instance head file (expected format {HEAD_FORMAT!r}): {type(exc).__name__}"
            ) from exc
        if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
            raise InputError(f"{p} is not an instance head file (expected format {HEAD_FORMAT!r})")
        head = cls(tuple(obj["in_dims"]), obj["width"])
        head.load_state_dict(obj["state_dict"], strict=True)
        return head.eval(), obj["info"]


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


# ---------------------------------------------------------------------- a mask generator
def load_instance_head(path: str | os.PathLike, model: SAM2Model | None = None) -> tuple[InstanceHead, dict]:
    """``(head, info)`` of a head file, checked against ``model`` when given: the head reads
    the features of the variant it was trained on, and of no other."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{p} is a folder; choose an instance head file (<output>.instance-head.pt)")
    if not p.is_file():
        raise MissingFileError(
            f"instance head {p} does not exist; train one with napari-sam2 train --instance-head-steps N "
            "(it is written next to the checkpoint as <output>.instance-head.pt)"
        )
    head, info = InstanceHead.load(p)
    if model is not None:
        trained_on = info.get("model")
        variant = model.config.name
        if trained_on is not None and trained_on != variant:
            raise InputError(
                f"instance head {p.name} was trained on the features of {trained_on}, but the model is "
                f"{variant}: choose {trained_on} (and the checkpoint it was trained with), or train a head for "
                f"{variant}"
            )
        dims = _feature_dims(model)
        if dims is not None and tuple(head.in_dims) != dims:
            raise InputError(
                f"instance head {p.name} reads features of {tuple(head.in_dims)} channels; {variant} gives {dims}"
            )
    return head, info


def _feature_dims(model: SAM2Model) -> tuple[int, int, int] | None:
    """The channels of the model's stride-16, 8 and 4 features (None when it cannot tell)."""
    decoder = getattr(model, "sam_mask_decoder", None)
    conv_s0, conv_s1 = getattr(decoder, "conv_s0", None), getattr(decoder, "conv_s1", None)
    if conv_s0 is None or conv_s1 is None:
        return None
    return (int(conv_s0.in_channels), int(conv_s1.out_channels), int(conv_s0.out_channels))


class InstanceHeadGenerator:
    """Segment every object of a frame with an instance head (see the module doc).

    Args:
        model: the SAM 2 network whose features the head reads (e.g. ``predictor.model``).
        head: an :class:`InstanceHead`, or the path of a head file.
        watershed: the thresholds turning the maps into instances.

    ``generate(frame)`` returns ``(masks (K, H, W) bool, scores (K,))``, the score of a mask
    being its mean foreground probability. ``encoder_passes`` and ``head_passes`` count the
    work done (the tests pin one head pass and no encoder pass on a tracked frame).
    """

    api_extensions: ClassVar[frozenset[str]] = frozenset({EXTENSION_NORMALIZER})

    def __init__(
        self,
        model: SAM2Model,
        head: InstanceHead | str | os.PathLike,
        watershed: WatershedConfig | None = None,
    ) -> None:
        if isinstance(head, (str, os.PathLike)):
            head, _ = load_instance_head(head, model)
        elif not isinstance(head, InstanceHead):
            raise InputTypeError(
                f"head must be an InstanceHead or a head file's path, got {type(head).__name__}"
            )
        self.model = model
        self.head = head.to(model.device).eval()
        self.watershed = watershed or WatershedConfig()
        #: ``(image, normalizer) -> FrameFeatures | None``: features computed elsewhere for
        #: exactly this image (the tracker's), asked before the encoder runs
        self.feature_provider: Callable[[np.ndarray, Normalizer], FrameFeatures | None] | None = None
        self.encoder_passes = 0
        self.head_passes = 0

    def _features(self, frame: np.ndarray, normalizer: Normalizer) -> FrameFeatures:
        if self.feature_provider is not None:
            features = self.feature_provider(frame, normalizer)
            if features is not None:
                return features
        self.encoder_passes += 1
        x = preprocess(normalizer.to_rgb(frame), self.model.image_size, device=self.model.device)
        with torch.inference_mode():
            return self.model.forward_image(x[None])[0]

    def generate(
        self, frame: np.ndarray, normalizer: Normalizer | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every object of ``frame`` ((H, W) or (H, W, C), as stored): masks and scores, best first."""
        if isinstance(frame, (str, os.PathLike)):
            raise InputTypeError(
                f"the instance head got a path ({str(frame)!r}): read the image first (tifffile.imread) "
                "and pass the array"
            )
        frame = np.asarray(frame)
        if frame.ndim not in (2, 3):
            raise InputError(
                f"the instance head segments one frame, (H, W) or (H, W, C); got shape {frame.shape}"
            )
        if normalizer is None:
            normalizer = Normalizer.fit(frame[None])
        h, w = frame.shape[:2]
        maps = predict_maps(self.head, self._features(frame, normalizer), (h, w))
        self.head_passes += 1
        labels = maps_to_instances(maps, self.watershed)
        n = int(labels.max())
        if n == 0:
            return np.zeros((0, h, w), bool), np.zeros(0, np.float64)
        ids = np.arange(1, n + 1)
        masks = labels[None] == ids[:, None, None]
        counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        sums = np.bincount(labels.ravel(), weights=maps[0].ravel(), minlength=n + 1)[1:]
        scores = sums / np.maximum(counts, 1)
        order = np.argsort(-scores, kind="stable")
        return masks[order], scores[order].astype(np.float64)

    __call__ = generate
