"""Single-image prompting (Meta's SAM2ImagePredictor API) on top of our SAM 2 model."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.engine.cache.embedding_cache import resolve_embedding_cache
from napari_sam2.engine.cache.frame_embedding import FrameEmbedder
from napari_sam2.engine.frames.normalization import Normalizer, preprocess
from napari_sam2.engine.validation import PromptError, check_box, check_points
from napari_sam2.engine.weights.build import resolve_autocast_dtype
from napari_sam2.errors import InputError, InputTypeError, StateError
from napari_sam2.model import FrameFeatures, SAM2Model

ArrayLike = np.ndarray | Sequence


def _as_image_array(image) -> np.ndarray:
    """One image as an array, with a message that says what to pass instead of a bad value."""
    if isinstance(image, (str, os.PathLike)):
        raise InputTypeError(
            f"set_image takes the image's pixels, not a file name ({str(image)!r}); read it first, e.g. "
            "tifffile.imread(path) or numpy.asarray(PIL.Image.open(path))"
        )
    if hasattr(image, "detach"):  # a torch tensor, as Meta's transforms would accept after ToTensor
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise InputTypeError(
            f"set_image takes a numeric (H, W) or (H, W, C) array; got {type(image).__name__} of dtype {arr.dtype}"
        )
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] > 4):
        raise InputError(
            f"expected one image of shape (H, W) or (H, W, C) with C <= 4; got shape {arr.shape}. "
            "For a stack of frames use the video predictor."
        )
    if min(arr.shape[:2]) == 0:
        raise InputError(f"the image is empty: shape {arr.shape}")
    return arr


class SAM2ImagePredictor:
    """Compute an image's embedding once, then predict masks for any number of prompts.

    ``set_image`` takes H x W (grayscale) or H x W x C arrays. An H x W x 3 uint8 image is
    treated exactly as Meta's predictor treats it (/255, resize to 1024, ImageNet mean/std);
    other dtypes and channel counts go through the microscopy normalisation of
    :class:`napari_sam2.normalization.Normalizer` first (or the one passed in).

    ``embedding_cache`` (None by default, as Meta's predictor; see
    :class:`~napari_sam2.engine.predict.video_predictor.SAM2VideoPredictor`) makes ``set_image`` read
    the image's features from the persistent on-disk cache when it has them, and store them
    when not; it shares entries with the video predictor. ``set_image_batch`` does not use it
    (a batch is encoded in one pass, whose numbers may differ from one image's in the last bits).

    ``set_image(image, normalizer, features=...)`` takes features already computed (e.g. by
    the video predictor for the same frame and normaliser: bit for bit what this predictor
    would compute) and runs no encoder pass. ``feature_provider``, when set, is asked
    ``provider(image, normalizer)`` on every ``set_image`` with a normaliser and returns such
    features or None (see :func:`napari_sam2.engine.cells.seeding.tracker_features`): so segment
    everything on a frame the tracker has encoded costs no second encoder pass.
    """

    #: ``(image, normalizer) -> FrameFeatures | None``, asked by :meth:`set_image` first
    feature_provider: Callable[[np.ndarray, Normalizer], FrameFeatures | None] | None = None

    def __init__(
        self,
        sam_model: SAM2Model,
        mask_threshold: float = 0.0,
        autocast_dtype: torch.dtype | None = None,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        embedding_cache: object = None,
    ) -> None:
        self.model = sam_model
        self.embedding_cache = resolve_embedding_cache(embedding_cache)
        self._embedder: FrameEmbedder | None = None
        self.mask_threshold = mask_threshold
        # Meta's low-res clean-up (off by default): background components of at most
        # max_hole_area low-res pixels become foreground, foreground components of at most
        # max_sprinkle_area become background, before upsampling (8-connected, see _clean_low_res).
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        # e.g. torch.bfloat16 for mixed precision; None (the parity reference) is float32.
        self.autocast_dtype = resolve_autocast_dtype(autocast_dtype)  # 'bf16' etc. mapped once
        self.reset_predictor()

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_predictor(self) -> None:
        self._features: dict[str, object] | None = None
        self._orig_hw: list[tuple[int, int]] = []
        self._is_batch = False

    # ------------------------------------------------------------------ images
    def _prepare(self, image: np.ndarray, normalizer: Normalizer | None) -> torch.Tensor:
        image = _as_image_array(image)
        if normalizer is None:
            normalizer = Normalizer.fit(image[None])
        rgb = normalizer.to_rgb(image)
        return preprocess(rgb, self.model.image_size, device=self.device)

    @torch.inference_mode()
    def _encode(self, batch: torch.Tensor) -> list[FrameFeatures]:
        with self._autocast():
            return self.model.forward_image(batch)

    @torch.inference_mode()
    def _use_features(self, feats: list[FrameFeatures]) -> None:
        no_mem = (
            self.model.no_mem_embed.view(1, -1, 1, 1) if self.model.tracking.directly_add_no_mem_embed else 0
        )
        self._features = {
            "image_embed": torch.cat([f.vision_feat.float() for f in feats]) + no_mem,
            "high_res_feats": [torch.cat([f.high_res[i].float() for f in feats]) for i in range(2)],
        }

    def _embed(self, batch: torch.Tensor) -> None:
        self._use_features(self._encode(batch))

    def _frame_embedder(self) -> FrameEmbedder:
        embedder = self._embedder
        if embedder is None or not embedder.matches(self.model, self.autocast_dtype, self.embedding_cache):
            embedder = self._embedder = FrameEmbedder(self.model, self.autocast_dtype, self.embedding_cache)
        return embedder

    def set_image(
        self,
        image: np.ndarray,
        normalizer: Normalizer | None = None,
        features: FrameFeatures | None = None,
    ) -> None:
        """Embed one image (H x W or H x W x C), or take its ``features`` (the image encoder's
        output for this image and normaliser, e.g. the video predictor's) without a pass."""
        if features is None and self.feature_provider is not None and normalizer is not None:
            features = self.feature_provider(_as_image_array(image), normalizer)
        if features is not None:
            arr = _as_image_array(image)
            self.reset_predictor()
            self._orig_hw = [tuple(arr.shape[:2])]
            self._use_features([features])
            return
        if self.embedding_cache is None:
            x = self._prepare(image, normalizer)  # a bad image is refused before the current one is dropped
            self.reset_predictor()
            self._orig_hw = [tuple(_as_image_array(image).shape[:2])]
            self._embed(x[None])
            return
        arr = _as_image_array(image)
        if normalizer is None:
            normalizer = Normalizer.fit(arr[None])
        feats = self._frame_embedder().embed(
            arr, normalizer, lambda: self._encode(self._prepare(arr, normalizer)[None])[0]
        )
        self.reset_predictor()
        self._orig_hw = [tuple(arr.shape[:2])]
        self._use_features([feats])

    def set_image_batch(self, image_list: list[np.ndarray], normalizer: Normalizer | None = None) -> None:
        """Embed several images at once, for :meth:`predict_batch`."""
        if not isinstance(image_list, (list, tuple)) or not image_list:
            raise InputError("set_image_batch expects a non-empty list of images")
        batch = torch.stack([self._prepare(im, normalizer) for im in image_list])
        self.reset_predictor()
        self._orig_hw = [tuple(_as_image_array(im).shape[:2]) for im in image_list]
        self._embed(batch)
        self._is_batch = True

    def get_image_embedding(self) -> torch.Tensor:
        self._require_image()
        return self._features["image_embed"]

    def _require_image(self) -> None:
        if self._features is None:
            raise StateError("an image must be set with set_image(...) before mask prediction")

    # ------------------------------------------------------------------ prompts
    def _prep_prompts(self, point_coords, point_labels, box, mask_input, normalize_coords, img_idx):
        """Checked prompts (engine/validation.py) as model-coordinate tensors."""
        h, w = self._orig_hw[img_idx]
        size = self.model.image_size
        coords = labels = boxes = mask = None
        if point_coords is not None or point_labels is not None:
            xy, lab = check_points(
                point_coords,
                point_labels,
                w,
                h,
                normalized=not normalize_coords,
                argument="point_coords",
                labels_argument="point_labels",
            )
            if xy.ndim == 2:
                xy, lab = xy[None], lab[None]
            if xy.ndim != 3:
                raise PromptError(
                    f"point_coords must be (N, 2) or (B, N, 2) with matching point_labels; got {xy.shape}"
                )
            coords = torch.as_tensor(xy, device=self.device)
            labels = torch.as_tensor(lab, device=self.device)
            coords = self._to_model_coords(coords, normalize_coords, h, w, size)
        if box is not None:
            b = check_box(box, w, h, normalized=not normalize_coords)
            boxes = torch.as_tensor(b, device=self.device)
            boxes = self._to_model_coords(boxes.reshape(-1, 2, 2), normalize_coords, h, w, size)
        if mask_input is not None:
            mask = torch.as_tensor(np.asarray(mask_input, dtype=np.float32), device=self.device)
            if mask.ndim == 3:
                mask = mask[None]
            expected = self.model.sam_prompt_encoder.mask_input_size
            if mask.ndim != 4 or tuple(mask.shape[-2:]) != expected:
                raise PromptError(
                    f"mask_input must be low-resolution logits of shape (1, {expected[0]}, {expected[1]}) "
                    f"(the third output of predict); got {tuple(mask.shape)}"
                )
            if not torch.isfinite(mask).all():
                raise PromptError("mask_input contains NaN or infinite values; pass a previous call's logits")
        return coords, labels, boxes, mask

    @staticmethod
    def _to_model_coords(xy: torch.Tensor, normalize: bool, h: int, w: int, size: int) -> torch.Tensor:
        if normalize:
            xy = xy / torch.tensor([w, h], dtype=torch.float32, device=xy.device)
        return xy * size

    @torch.inference_mode()
    def _predict(self, coords, labels, boxes, mask_input, multimask_output, return_logits, img_idx):
        if boxes is not None:
            # A box is its two corners, labelled 2 and 3, placed before any points.
            box_labels = torch.tensor([[2, 3]], dtype=torch.int32, device=boxes.device).repeat(
                boxes.shape[0], 1
            )
            if coords is not None:
                coords = torch.cat([boxes, coords], dim=1)
                labels = torch.cat([box_labels, labels], dim=1)
            else:
                coords, labels = boxes, box_labels
        points = (coords, labels) if coords is not None else None
        batched = coords is not None and coords.shape[0] > 1
        feats = self._features
        with self._autocast():
            sparse, dense = self.model.sam_prompt_encoder(points, mask_input)
            dec = self.model.sam_mask_decoder(
                feats["image_embed"][img_idx : img_idx + 1],
                self.model.sam_prompt_encoder.get_dense_pe(),
                sparse,
                dense,
                multimask_output=multimask_output,
                repeat_image=batched,
                high_res_features=[f[img_idx : img_idx + 1] for f in feats["high_res_feats"]],
            )
        low_res = dec.masks.float()
        masks = F.interpolate(
            self._clean_low_res(low_res), self._orig_hw[img_idx], mode="bilinear", align_corners=False
        )
        low_res = torch.clamp(low_res, -32.0, 32.0)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, dec.iou_pred.float(), low_res

    def _clean_low_res(self, low_res: torch.Tensor) -> torch.Tensor:
        """Meta's ``SAM2Transforms.postprocess_masks`` clean-up of the low-res logits (B, C, h, w).

        Both component searches run on the logits as the decoder gave them (holes are pixels
        <= mask_threshold, sprinkles pixels > mask_threshold), so a filled hole is never removed
        again. Meta needs a CUDA extension for this and skips it (with a warning) without one;
        here it runs with scikit-image on any device. The returned low-res logits stay raw.
        """
        if not (self.max_hole_area > 0 or self.max_sprinkle_area > 0):
            return low_res
        from napari_sam2.engine.predict.components import connected_component_areas

        flat = low_res.flatten(0, 1)
        out = low_res
        if self.max_hole_area > 0:
            labels, areas = connected_component_areas(flat <= self.mask_threshold)
            hole = torch.from_numpy((labels > 0) & (areas <= self.max_hole_area)).to(low_res.device)
            out = torch.where(hole.reshape_as(low_res), self.mask_threshold + 10.0, out)
        if self.max_sprinkle_area > 0:
            labels, areas = connected_component_areas(flat > self.mask_threshold)
            speck = torch.from_numpy((labels > 0) & (areas <= self.max_sprinkle_area)).to(low_res.device)
            out = torch.where(speck.reshape_as(low_res), self.mask_threshold - 10.0, out)
        return out

    def transform_coords(
        self, coords: torch.Tensor, normalize: bool = True, orig_hw: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Pixel (x, y) coordinates of an image of size ``orig_hw`` (default: the set image)
        -> the model's input frame (Meta's ``SAM2Transforms.transform_coords``);
        ``normalize=False`` takes coordinates already in [0, 1]."""
        h, w = orig_hw if orig_hw is not None else self._orig_hw[0]
        return self._to_model_coords(coords.float(), normalize, h, w, self.model.image_size)

    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prediction on tensors already in the model's frame (see :meth:`transform_coords`).

        ``point_coords`` (B, N, 2) with ``point_labels`` (B, N), ``boxes`` (B, 2, 2) corner points,
        ``mask_input`` (B, 1, 256, 256) low-res logits. Returns tensors on the model's device:
        masks (B, C, H, W) (logits if ``return_logits``), IoU predictions (B, C) and clamped
        low-res logits (B, C, 256, 256): Meta's ``SAM2ImagePredictor._predict``.
        """
        self._require_image()
        if (point_coords is None) != (point_labels is None):
            raise InputError("point_coords and point_labels must be given together")
        if point_coords is None and boxes is None and mask_input is None:
            raise InputError("give at least one prompt: point_coords/point_labels, boxes or mask_input")
        return self._predict(
            point_coords, point_labels, boxes, mask_input, multimask_output, return_logits, img_idx
        )

    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks (C, H, W), predicted IoUs (C,) and low-res logits (C, 256, 256) for the prompts.

        Points are (x, y) pixels of the original image, labels 1 (object) / 0 (background);
        a box is [x0, y0, x1, y1]; ``mask_input`` is a previous call's low-res logits (1, 256, 256).
        With several prompts in a batch (B, N, 2) the outputs gain a leading B axis.
        """
        self._require_image()
        if self._is_batch:
            raise StateError("images were set with set_image_batch; use predict_batch")
        if (point_coords is None) != (point_labels is None):
            raise InputError("point_coords and point_labels must be given together")
        if point_coords is None and box is None and mask_input is None:
            raise InputError("give at least one prompt: point_coords/point_labels, box or mask_input")
        prompts = self._prep_prompts(point_coords, point_labels, box, mask_input, normalize_coords, 0)
        masks, ious, low_res = self._predict(*prompts, multimask_output, return_logits, 0)
        return self._to_numpy(masks, ious, low_res)

    def predict_batch(
        self,
        point_coords_batch: list | None = None,
        point_labels_batch: list | None = None,
        box_batch: list | None = None,
        mask_input_batch: list | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """:meth:`predict` for each image given to :meth:`set_image_batch`."""
        self._require_image()
        if not self._is_batch:
            raise StateError("predict_batch needs images set with set_image_batch")
        out_masks, out_ious, out_low = [], [], []
        for i in range(len(self._orig_hw)):
            batches = (point_coords_batch, point_labels_batch, box_batch, mask_input_batch)
            per_image = [None if seq is None else seq[i] for seq in batches]
            prompts = self._prep_prompts(*per_image, normalize_coords, i)
            masks, ious, low_res = self._to_numpy(
                *self._predict(*prompts, multimask_output, return_logits, i)
            )
            out_masks.append(masks)
            out_ious.append(ious)
            out_low.append(low_res)
        return out_masks, out_ious, out_low

    @staticmethod
    def _to_numpy(masks, ious, low_res):
        return (
            masks.squeeze(0).cpu().numpy(),
            ious.squeeze(0).float().cpu().numpy(),
            low_res.squeeze(0).float().cpu().numpy(),
        )
