"""Segment everything: masks for a grid of point prompts over an image (Meta's SAM2AutomaticMaskGenerator).

Same arguments, defaults, filters and output order as Meta's ``sam2/automatic_mask_generator.py``:
for each crop (the whole image, then ``crop_n_layers`` layers of overlapping crops), a grid of
single-point prompts is run in batches; the masks are filtered by predicted IoU and stability
score, thresholded, dropped when they touch a crop edge that is not an image edge, and
de-duplicated by box NMS within the crop (best predicted IoU first) and then across crops
(smaller crops first). Images of any dtype and channel count are accepted: they go through
the microscopy normalisation of :class:`~napari_sam2.engine.frames.normalization.Normalizer` (an
H x W x 3 uint8 image gets exactly Meta's ``/ 255``), fitted once on the whole image so that
every crop is mapped alike.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor
from napari_sam2.engine.predict.protocols import EXTENSION_NORMALIZER
from napari_sam2.engine.segment.mask_utils import (
    MaskRecords,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    batched_nms,
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    remove_small_regions,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from napari_sam2.engine.validation import check_generator_settings, check_image_not_path
from napari_sam2.errors import InputError
from napari_sam2.model import SAM2Model
from napari_sam2.model.transformer import ImageSide

__all__ = ["SAM2AutomaticMaskGenerator", "OUTPUT_MODES"]

#: Output modes offered. Meta's third, "coco_rle", needs pycocotools and is not offered:
#: ``mask_utils.rle_to_mask`` / pycocotools' ``frPyObjects`` convert the uncompressed RLE.
OUTPUT_MODES = ("binary_mask", "uncompressed_rle")


class SAM2AutomaticMaskGenerator:
    """Generate masks for a whole image from a grid of point prompts.

    Args:
        model: our :class:`~napari_sam2.model.SAM2Model` (e.g. from ``build_sam2``).
        points_per_side: points sampled along each side (points_per_side**2 in all);
            None when ``point_grids`` gives the points.
        points_per_batch: points run through the model at once (memory vs speed).
        pred_iou_thresh: keep masks whose predicted IoU is above this (0 turns it off).
        stability_score_thresh: keep masks whose stability score is at least this (0: off).
        stability_score_offset: logit offset of the stability score's two thresholds.
        mask_threshold: logit threshold that binarises masks.
        box_nms_thresh: box-IoU threshold of the NMS among one crop's masks.
        crop_n_layers: extra layers of crops; layer i has (2**i)**2 crops.
        crop_nms_thresh: box-IoU threshold of the NMS between crops.
        crop_overlap_ratio: overlap of first-layer crops, as a fraction of the short side.
        crop_n_points_downscale_factor: layer i uses points_per_side / factor**i points a side.
        point_grids: explicit grids, one (K, 2) array of [0, 1] (x, y) per crop layer.
        min_mask_region_area: if > 0, holes and specks of at most this many *low-res* (256 x 256)
            pixels are cleaned in each mask's logits before upsampling, as Meta does through
            its predictor's ``max_hole_area`` / ``max_sprinkle_area``.
        output_mode: "binary_mask" (H x W bool arrays) or "uncompressed_rle" ({"size", "counts"}).
        use_m2m: refine every mask once by re-running its point with its own low-res logits.
        multimask_output: three masks per point (True) or one.
    """

    #: generate(image, normalizer=...): the frame's contrast mapped as the tracker maps it
    api_extensions: ClassVar[frozenset[str]] = frozenset({EXTENSION_NORMALIZER})

    def __init__(
        self,
        model: SAM2Model,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
    ) -> None:
        check_generator_settings(  # percentages and pixel spacings are refused, not read as "nothing"
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
            crop_nms_thresh=crop_nms_thresh,
        )
        if (points_per_side is None) == (point_grids is None):
            raise InputError(
                "give exactly one of points_per_side (a regular grid) and point_grids (explicit points); "
                f"got points_per_side={points_per_side!r} and point_grids={'None' if point_grids is None else 'given'}"
            )
        if int(crop_n_layers) < 0:
            raise InputError(f"crop_n_layers must be >= 0; got {crop_n_layers}")
        if points_per_side is not None:
            if int(points_per_side) < 1:
                raise InputError(f"points_per_side must be >= 1; got {points_per_side}")
            if int(crop_n_points_downscale_factor) < 1:
                raise InputError(
                    f"crop_n_points_downscale_factor must be >= 1; got {crop_n_points_downscale_factor}"
                )
            if int(points_per_side / (int(crop_n_points_downscale_factor) ** int(crop_n_layers))) < 1:
                raise InputError(
                    f"points_per_side={points_per_side} with crop_n_points_downscale_factor="
                    f"{crop_n_points_downscale_factor} leaves no points in the deepest of {crop_n_layers} crop layers"
                )
            self.point_grids = build_all_layer_point_grids(
                int(points_per_side), int(crop_n_layers), int(crop_n_points_downscale_factor)
            )
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) < int(crop_n_layers) + 1:
                raise InputError(
                    f"point_grids has {len(grids)} grid(s) but crop_n_layers={crop_n_layers} needs "
                    f"{int(crop_n_layers) + 1} (one per layer, the whole image first)"
                )
            for i, g in enumerate(grids):
                if g.ndim != 2 or g.shape[1] != 2:
                    raise InputError(f"point_grids[{i}] must be (K, 2) (x, y) in [0, 1]; got shape {g.shape}")
            self.point_grids = grids
        if output_mode not in OUTPUT_MODES:
            extra = (
                " ('coco_rle' needs pycocotools and is not offered: take 'uncompressed_rle' and convert "
                "with pycocotools.mask.frPyObjects)"
                if output_mode == "coco_rle"
                else ""
            )
            raise InputError(
                f"unknown output_mode {output_mode!r}; supported modes: {', '.join(OUTPUT_MODES)}{extra}"
            )
        if int(points_per_batch) < 1:
            raise InputError(f"points_per_batch must be >= 1; got {points_per_batch}")

        # Meta's predictor keeps its own mask_threshold of 0 (the low-res clean-up uses it);
        # the generator's mask_threshold binarises and scores the upsampled logits.
        self.predictor = SAM2ImagePredictor(
            model,
            max_hole_area=min_mask_region_area,
            max_sprinkle_area=min_mask_region_area,
        )
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output
        # Points whose masks were drawn at crop resolution (a cost counter, see _predict_passing_masks).
        self.upscaled_points = 0

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def generate(self, image: np.ndarray, normalizer: Normalizer | None = None) -> list[dict[str, Any]]:
        """Masks for the whole image, as a list of records in Meta's order and format.

        ``image`` is (H, W) or (H, W, C) of any dtype (see the module doc); ``normalizer``
        overrides the intensity mapping fitted on the image (e.g. one fitted on a whole stack).
        Each record: ``segmentation`` (H x W bool, or an uncompressed RLE), ``area`` (pixels),
        ``bbox`` [x, y, w, h] (inclusive pixel box, so w = x_max - x_min), ``predicted_iou``,
        ``point_coords`` [[x, y]] (the prompt), ``stability_score`` and ``crop_box`` [x, y, w, h].
        """
        check_image_not_path(image, where="generate")
        image = self._check_image(image)
        if normalizer is None:
            normalizer = Normalizer.fit(image[None])
        data = self._generate_masks(image, normalizer)
        if self.output_mode == "binary_mask":
            segmentations = [rle_to_mask(rle) for rle in data["rles"]]
        else:
            segmentations = data["rles"]
        records = []
        for i, seg in enumerate(segmentations):
            records.append(
                {
                    "segmentation": seg,
                    "area": area_from_rle(data["rles"][i]),
                    "bbox": box_xyxy_to_xywh(data["boxes"][i]).tolist(),
                    "predicted_iou": data["iou_preds"][i].item(),
                    "point_coords": [data["points"][i].tolist()],
                    "stability_score": data["stability_score"][i].item(),
                    "crop_box": box_xyxy_to_xywh(data["crop_boxes"][i]).tolist(),
                }
            )
        return records

    @staticmethod
    def postprocess_small_regions(records: MaskRecords, min_area: int, nms_thresh: float) -> MaskRecords:
        """Fill holes and drop islands under ``min_area`` pixels in full-resolution masks, then box NMS.

        Meta's static method of the same name (the segment-anything v1 post-processing, which
        SAM 2's ``generate`` no longer calls; there ``min_mask_region_area`` acts on low-res
        logits instead). ``records`` needs "rles" and "boxes"; masks left unchanged win the NMS
        over changed ones, and only kept changed masks get new RLEs and boxes. Edits in place.
        """
        if len(records["rles"]) == 0:
            return records
        new_masks, scores = [], []
        for rle in records["rles"]:
            mask = rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(torch.as_tensor(mask)[None])
            scores.append(float(not (changed_holes or changed_islands)))
        masks = torch.cat(new_masks)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(
            boxes.float(), torch.as_tensor(scores), torch.zeros_like(boxes[:, 0]), iou_threshold=nms_thresh
        )
        for i in keep.tolist():
            if scores[i] == 0.0:
                records["rles"][i] = mask_to_rle_pytorch(masks[i][None])[0]
                target = records["boxes"]
                target[i] = boxes[i].numpy() if isinstance(target, np.ndarray) else boxes[i].to(target.dtype)
        records.filter(keep)
        return records

    # ------------------------------------------------------------------ pipeline
    @staticmethod
    def _check_image(image: Any) -> np.ndarray:
        arr = np.asarray(image)
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and not 1 <= arr.shape[-1] <= 4):
            raise InputError(
                f"expected one image of shape (H, W) or (H, W, C) with 1 to 4 channels; got shape {arr.shape}"
            )
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise InputError(f"the image is empty (shape {arr.shape})")
        if arr.dtype.kind not in "uifb":
            raise InputError(f"the image has dtype {arr.dtype}, which is not an image type")
        return arr

    def _generate_masks(self, image: np.ndarray, normalizer: Normalizer) -> MaskRecords:
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        data = MaskRecords()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
            data.cat(self._process_crop(image, normalizer, crop_box, layer_idx, orig_size))
        if len(crop_boxes) > 1 and len(data) > 0:
            # Duplicates between crops: the mask from the smaller crop wins.
            scores = 1 / box_area(data["crop_boxes"])
            keep = batched_nms(
                data["boxes"].float(), scores, torch.zeros_like(data["boxes"][:, 0]), self.crop_nms_thresh
            )
            data.filter(keep)
        if len(data) == 0:
            return MaskRecords(
                rles=[],
                boxes=np.zeros((0, 4), np.float32),
                iou_preds=np.zeros(0, np.float32),
                points=np.zeros((0, 2), np.float32),
                stability_score=np.zeros(0, np.float32),
                crop_boxes=np.zeros((0, 4), np.float32),
            )
        data.to_numpy()
        return data

    def _process_crop(
        self,
        image: np.ndarray,
        normalizer: Normalizer,
        crop_box: list[int],
        layer_idx: int,
        orig_size: tuple[int, int],
    ) -> MaskRecords:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_size = crop.shape[:2]
        self.predictor.set_image(crop, normalizer=normalizer)
        # The decoder's per-image part, once per crop for all its batches (two-stage path only).
        prepared = self._prepare_decoder() if self._decodes_in_two_stages() else None
        points_for_crop = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]
        data = MaskRecords()
        for (points,) in batch_iterator(self.points_per_batch, points_for_crop):
            data.cat(self._process_batch(points, crop_size, crop_box, orig_size, prepared))
        self.predictor.reset_predictor()
        if len(data) == 0:
            return data
        # Duplicates within this crop: the best predicted IoU wins.
        keep = batched_nms(
            data["boxes"].float(),
            data["iou_preds"],
            torch.zeros_like(data["boxes"][:, 0]),
            self.box_nms_thresh,
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box] * len(data["rles"]), dtype=torch.int64)
        return data

    def _process_batch(
        self,
        points: np.ndarray,
        crop_size: tuple[int, int],
        crop_box: list[int],
        orig_size: tuple[int, int],
        prepared: ImageSide | None = None,
    ) -> MaskRecords:
        orig_h, orig_w = orig_size
        device = self.predictor.device
        points = torch.as_tensor(points, dtype=torch.float32, device=device)
        in_points = self.predictor.transform_coords(points, normalize=True, orig_hw=crop_size)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int32, device=device)
        if prepared is not None:
            masks, iou_preds, source = self._predict_passing_masks(in_points, in_labels, crop_size, prepared)
            data = MaskRecords(masks=masks, iou_preds=iou_preds, points=points[source])
        else:
            data = self._predict_all_masks(points, in_points, in_labels, crop_size)
            if self.pred_iou_thresh > 0.0:
                data.filter(data["iou_preds"] > self.pred_iou_thresh)
        data["stability_score"] = calculate_stability_score(
            data["masks"], self.mask_threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)

        data["masks"] = data["masks"] > self.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)
        data["rles"] = mask_to_rle_pytorch(uncrop_masks(data["masks"], crop_box, orig_h, orig_w))
        del data["masks"]
        return data

    def _decodes_in_two_stages(self) -> bool:
        """Whether the decoder runs in two stages: tokens for every point, then masks only for
        outputs that pass the predicted-IoU filter (all outputs when it is off).

        Possible when the IoU filtered on is the decoder's first answer for each of the three
        outputs: not with m2m (the refined IoU decides) nor with a single output (the choice
        among outputs needs every output's mask). Only our own predictor exposes the stages.
        """
        return self.multimask_output and not self.use_m2m and isinstance(self.predictor, SAM2ImagePredictor)

    def _prepare_decoder(self) -> ImageSide:
        """The decoder's per-image part for the image set on the predictor (see MaskDecoder.prepare_image)."""
        pred = self.predictor
        model = pred.model
        pe = model.sam_prompt_encoder
        _, dense = pe(None, None, batch_size=1)  # no mask prompt: every point's dense prompt
        with pred._autocast():
            return model.sam_mask_decoder.prepare_image(
                pred._features["image_embed"][:1], pe.get_dense_pe(), dense
            )

    def _predict_all_masks(
        self,
        points: torch.Tensor,
        in_points: torch.Tensor,
        in_labels: torch.Tensor,
        crop_size: tuple[int, int],
    ) -> MaskRecords:
        """Every output of every point at crop resolution, refined by m2m if asked (Meta's order)."""
        masks, iou_preds, low_res = self.predictor.predict_torch(
            in_points[:, None, :],
            in_labels[:, None],
            multimask_output=self.multimask_output,
            return_logits=True,
        )
        per_point = masks.shape[1]
        data = MaskRecords(
            masks=masks.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=points.repeat_interleave(per_point, dim=0),
        )
        del masks
        if self.use_m2m:
            # One refinement step: each mask's own low-res logits as the mask prompt.
            in_points = self.predictor.transform_coords(data["points"], normalize=True, orig_hw=crop_size)
            labels = torch.ones(in_points.shape[0], dtype=torch.int32, device=in_points.device)
            refined, refined_iou = self._refine_with_m2m(in_points, labels, low_res.flatten(0, 1))
            data["masks"] = refined.squeeze(1)
            data["iou_preds"] = refined_iou.squeeze(1)
        return data

    @torch.inference_mode()
    def _predict_passing_masks(
        self,
        in_points: torch.Tensor,
        in_labels: torch.Tensor,
        crop_size: tuple[int, int],
        prepared: ImageSide,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The masks whose predicted IoU passes, drawn at crop resolution; the others never are.

        Returns the masks' logits (k, h, w), their predicted IoUs (k) and the index of each
        mask's point (k), in Meta's order (point by point, outputs in order). The numbers are
        those of ``predict_torch`` followed by the filter: the token heads see the same batch,
        and everything after them is per mask (tests/engine/test_amg_speed.py compares them).
        """
        pred = self.predictor
        model = pred.model
        decoder = model.sam_mask_decoder
        with pred._autocast():
            sparse, _ = model.sam_prompt_encoder((in_points[:, None, :], in_labels[:, None]), None)
            tokens = decoder.decode_tokens(None, None, sparse, None, repeat_image=True, prepared=prepared)
            iou = tokens.iou_pred[:, 1:].float()  # multimask: outputs 1-3, as the decoder's forward
            if self.pred_iou_thresh > 0.0:
                keep = iou > self.pred_iou_thresh  # (n, 3)
            else:
                keep = torch.ones_like(iou, dtype=torch.bool)
            rows = keep.any(dim=1).nonzero().squeeze(1)
            self.upscaled_points += int(rows.numel())
            if rows.numel() == 0:
                return iou.new_zeros((0, *crop_size)), iou.new_zeros(0), rows
            low = decoder.upscale_masks(tokens, [f[:1] for f in pred._features["high_res_feats"]], rows)
        low = low[:, 1:].float()[keep[rows]]  # (k, 4h, 4w)
        masks = F.interpolate(
            pred._clean_low_res(low[:, None]), crop_size, mode="bilinear", align_corners=False
        )
        return masks[:, 0], iou[keep], keep.flatten().nonzero().squeeze(1) // iou.shape[1]

    def _refine_with_m2m(
        self, points: torch.Tensor, labels: torch.Tensor, low_res_masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new_masks, new_ious = [], []
        for pts, lbl, low in batch_iterator(self.points_per_batch, points, labels, low_res_masks):
            masks, ious, _ = self.predictor.predict_torch(
                pts[:, None, :],
                lbl[:, None],
                mask_input=low[:, None],
                multimask_output=False,
                return_logits=True,
            )
            new_masks.append(masks)
            new_ious.append(ious)
        return torch.cat(new_masks), torch.cat(new_ious)
