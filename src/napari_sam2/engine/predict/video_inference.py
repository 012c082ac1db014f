"""The inference steps of the video predictor (features, one frame of one or several objects,
memories, consolidation), kept apart from its public API (video_predictor.py)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.engine.cache.embedding_cache import EmbeddingCache
from napari_sam2.engine.cache.frame_embedding import FrameEmbedder
from napari_sam2.engine.frames.normalization import Normalizer, preprocess
from napari_sam2.engine.predict.output_store import FrameOutput
from napari_sam2.engine.predict.video_state import ObjectTrack, VideoSession
from napari_sam2.errors import InputError, StateError
from napari_sam2.model import NO_OBJ_SCORE, FrameFeatures, SAM2Model

__all__ = ["VideoInference", "fill_holes_in_mask_scores"]


class VideoInference:
    """The model steps a :class:`~napari_sam2.engine.predict.video_predictor.SAM2VideoPredictor` is made of.

    Subclasses set ``model``, ``autocast_dtype``, ``batch_objects``, ``fill_hole_area``,
    ``non_overlap_masks``, ``clear_non_cond_mem_around_input`` and ``embedding_cache``.
    """

    model: SAM2Model
    autocast_dtype: torch.dtype | None = None
    embedding_cache: EmbeddingCache | None = None
    batch_objects: bool | None = None
    fill_hole_area: int = 0
    non_overlap_masks: bool = False
    clear_non_cond_mem_around_input: bool = False

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def batches_objects(self) -> bool:
        """Whether objects with the same memory layout share one pass (see ``batch_objects``)."""
        if self.batch_objects is None:
            return self.device.type != "cpu"
        return self.batch_objects

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _frame_embedder(self) -> FrameEmbedder:
        """The embedder of this model, precision and cache (made again when one of them changes)."""
        embedder = self.__dict__.get("_embedder")
        if embedder is None or not embedder.matches(self.model, self.autocast_dtype, self.embedding_cache):
            embedder = FrameEmbedder(self.model, self.autocast_dtype, self.embedding_cache)
            self._embedder = embedder
        return embedder

    def _compute_features(self, frame: np.ndarray, normalizer: Normalizer, frame_idx: int) -> FrameFeatures:
        """The image encoder's output for one frame, in the dtype the model makes it."""
        rgb = normalizer.to_rgb(frame, frame_index=frame_idx)
        image = preprocess(rgb, self.image_size, device=self.device)
        with self._autocast():
            return self.model.forward_image(image[None])[0]

    def _features(self, state: VideoSession, frame_idx: int) -> FrameFeatures:
        feats = state.features.get(frame_idx)
        if feats is None:
            frame = state.frames[frame_idx]
            feats = self._frame_embedder().embed(
                frame,
                state.normalizer,
                lambda: self._compute_features(frame, state.normalizer, frame_idx),
                frame_idx,
            )
            feats = FrameFeatures(
                feats.vision_feat.float(),
                self._shared_pos(state, feats.vision_pos),
                [h.float() for h in feats.high_res],
            )
            state.features.put(frame_idx, feats)
        return feats

    @staticmethod
    def _shared_pos(state: VideoSession, pos: torch.Tensor) -> torch.Tensor:
        # The position encoding depends only on the map size: keep a single copy.
        key = f"vision_pos_{tuple(pos.shape)}"
        if key not in state.constants:
            state.constants[key] = pos.float()
        return state.constants[key]

    # ================================================================== inference
    def _run_frame(
        self,
        state,
        obj: ObjectTrack,
        frame_idx,
        is_init_cond_frame,
        coords,
        labels,
        mask_inputs,
        reverse,
        run_mem_encoder,
        prev_sam_mask_logits=None,
    ) -> FrameOutput:
        feats = self._features(state, frame_idx)
        with self._autocast():
            heads, memory = self.model.track_step(
                frame_idx,
                is_init_cond_frame,
                feats,
                coords,
                labels,
                mask_inputs,
                obj.cond,
                obj.non_cond,
                state.num_frames,
                reverse=reverse,
                run_mem_encoder=run_mem_encoder,
                prev_sam_mask_logits=prev_sam_mask_logits,
            )
        return self._frame_output(heads, memory, 0)

    def _frame_output(self, heads, memory: torch.Tensor | None, i: int) -> FrameOutput:
        """Row ``i`` of a (batched) heads output as a stored frame output."""
        pred_masks = heads.low_res_masks[i : i + 1].float()
        if self.fill_hole_area > 0:
            pred_masks = fill_holes_in_mask_scores(pred_masks, self.fill_hole_area)
        return FrameOutput(
            # The reference stores memories in bfloat16; later frames read them as float32.
            maskmem_features=None if memory is None else memory[i : i + 1].to(torch.bfloat16),
            obj_ptr=heads.obj_ptr[i : i + 1].float(),
            pred_masks=pred_masks,
            object_score_logits=heads.object_score_logits[i : i + 1].float(),
        )

    def _track_objects(
        self, state: VideoSession, frame_idx: int, objects: list[ObjectTrack], reverse: bool
    ) -> list[FrameOutput]:
        """Track unprompted objects on a frame, batching those whose memories line up."""
        selections = [
            self.model.select_memories(frame_idx, obj.cond, obj.non_cond, state.num_frames, reverse)
            for obj in objects
        ]
        groups: dict[tuple, list[int]] = {}
        for i, (mems, ptrs) in enumerate(selections):
            key = (tuple(t for t, _ in mems), tuple(d for d, _ in ptrs)) if self.batches_objects else (i,)
            groups.setdefault(key, []).append(i)
        feats = self._features(state, frame_idx)
        outputs: list[FrameOutput | None] = [None] * len(objects)
        for members in groups.values():
            with self._autocast():
                heads, memory = self.model.track_selected(
                    feats, [selections[i] for i in members], state.num_frames
                )
            for row, i in enumerate(members):
                outputs[i] = self._frame_output(heads, memory, row)
        return outputs

    def _encode_pending_memory(self, state: VideoSession, frame_idx: int, out: FrameOutput) -> None:
        """Memory of a prompted frame, from its binarised mask (encoded when tracking starts)."""
        feats = self._features(state, frame_idx)
        high_res = F.interpolate(
            out.pred_masks.to(self.device),
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
        )
        with self._autocast():
            memory = self.model.encode_memory(
                feats.vision_feat, high_res, out.object_score_logits, is_mask_from_pts=True
            )
        out.maskmem_features = memory.to(torch.bfloat16)

    def _consolidated_low_res(
        self, state: VideoSession, frame_idx: int, is_cond: bool | None
    ) -> list[FrameOutput | None]:
        outs = []
        for obj in state.objects.values():
            outs.append(obj.output_on(frame_idx, is_cond))
        return outs

    def _consolidated_video_res(
        self, state: VideoSession, frame_idx: int, is_cond: bool | None
    ) -> torch.Tensor:
        outs = self._consolidated_low_res(state, frame_idx, is_cond)
        size = self.image_size // 4
        low = torch.full((len(outs), 1, size, size), NO_OBJ_SCORE, dtype=torch.float32, device=self.device)
        for i, out in enumerate(outs):
            if out is not None:
                low[i : i + 1] = out.pred_masks.to(self.device)
        return self._to_video_res(state, low)

    def _to_video_res(self, state: VideoSession, low_res: torch.Tensor) -> torch.Tensor:
        h, w = state.video_height, state.video_width
        masks = low_res
        if tuple(masks.shape[-2:]) != (h, w):
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
        if self.non_overlap_masks:
            from napari_sam2.model.sam2 import apply_non_overlapping_constraints

            masks = apply_non_overlapping_constraints(masks)
        return masks

    @torch.inference_mode()
    def _preflight(self, state: VideoSession) -> None:
        """Turn pending prompt outputs into stored ones (encoding their memories)."""
        if not state.objects:
            raise StateError("no object has prompts yet: add points, a box or a mask first")
        for obj in state.objects.values():
            if not (obj.cond or obj.temp_cond):
                raise StateError(
                    f"object {obj.obj_id!r} has no prompt on any frame it was not tracked on; "
                    "add points, a box or a mask for it first (or remove it)"
                )
        for obj in state.objects.values():
            for is_cond in (False, True):
                pending = obj.temp(is_cond)
                for frame_idx, out in list(pending.items()):
                    if out.maskmem_features is None:
                        self._encode_pending_memory(state, frame_idx, out)
                    if is_cond:
                        obj.cond[frame_idx] = out
                    else:
                        obj.non_cond[frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_non_cond_mem_around_input(state, frame_idx)
                    del pending[frame_idx]
            for frame_idx in obj.cond:
                obj.non_cond.pop(frame_idx, None)

    def _clear_non_cond_mem_around_input(self, state: VideoSession, frame_idx: int) -> None:
        r = self.model.tracking.memory_temporal_stride_for_eval
        lo, hi = frame_idx - r * self.model.num_maskmem, frame_idx + r * self.model.num_maskmem
        for obj in state.objects.values():
            for t in range(lo, hi + 1):
                obj.non_cond.pop(t, None)

    @staticmethod
    def _processing_order(state: VideoSession, start: int, max_num: int | None, reverse: bool) -> range:
        if max_num is None:
            max_num = state.num_frames
        if max_num < 0:
            raise InputError("max_frame_num_to_track must be >= 0")
        if reverse:
            end = max(start - max_num, 0)
            return range(start, end - 1, -1) if start > 0 else range(0)
        end = min(start + max_num, state.num_frames - 1)
        return range(start, end + 1)


def fill_holes_in_mask_scores(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """Turn background holes (8-connected, area <= max_area) of low-res logits into foreground (0.1).

    Meta does this with a CUDA connected-components kernel. Here it is the same rule computed on
    the mask's own device with a fixed number of kernels and no read-back to the host (which would
    make the host wait for a GPU each frame):

    1. every background pixel (logit <= 0) starts with its own label (its index); for
       ``max_area - 1`` steps each takes the smallest label of its 8-neighbourhood within the
       background. A component of at most ``max_area`` pixels spans at most ``max_area - 1`` steps,
       so all its pixels then share one label;
    2. per label: how many pixels carry it, and whether any of them touches a background neighbour
       with another label;
    3. a pixel is a hole when its label is carried by at most ``max_area`` pixels and by none that
       touches another label. Those pixels are closed under 8-adjacency within the background, so
       they are a whole component, of at most ``max_area`` pixels; every component that small is
       found by step 1. The rule is exact for any mask, whatever the number of steps beyond that.

    Step 1 costs ``max_area`` kernels: for large areas on the CPU, where nothing waits for a device,
    scikit-image's labelling (one pass) is used instead; it gives the same result.
    """
    if max_area <= 0:
        return mask
    if mask.device.type == "cpu" and max_area > _DEVICE_FILL_MAX_AREA_ON_CPU:
        return _fill_holes_by_labelling(mask, max_area)
    return _fill_holes_on_device(mask, max_area)


# Above this area the kernel-per-step fill is slower on a CPU than one labelling pass (measured:
# 2 masks of 256 x 256, area 8: 0.2 s against 0.6 s; area 64: 1.2 s).
_DEVICE_FILL_MAX_AREA_ON_CPU = 32


def _fill_holes_by_labelling(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """The same rule with scikit-image's connected-component labelling, on the host."""
    from skimage.measure import label

    bg = (mask <= 0).cpu().numpy()
    fill = np.zeros_like(bg)
    for idx in np.ndindex(bg.shape[:-2]):
        lab = label(bg[idx], connectivity=2)
        areas = np.bincount(lab.ravel())
        small = areas <= max_area
        small[0] = False  # label 0 is the foreground
        fill[idx] = small[lab]
    return torch.where(torch.from_numpy(fill).to(mask.device), 0.1, mask)


def _fill_holes_on_device(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """:func:`fill_holes_in_mask_scores` in a fixed number of kernels on ``mask``'s device."""
    shape = mask.shape
    h, w = shape[-2:]
    bg = (mask <= 0).reshape(-1, 1, h, w)
    n = bg.shape[0]
    # float32 holds every label exactly (h * w < 2**24 for low-res masks); float64 beyond.
    dtype = torch.float32 if h * w < 2**24 else torch.float64
    inf = torch.finfo(dtype).max
    index = torch.arange(1, h * w + 1, device=mask.device, dtype=dtype).reshape(1, 1, h, w)
    labels = torch.where(bg, index, inf)

    def neighbourhood_min(x: torch.Tensor) -> torch.Tensor:
        return -F.max_pool2d(-x, kernel_size=3, stride=1, padding=1)

    for _ in range(min(max_area, h * w) - 1):
        labels = torch.where(bg, neighbourhood_min(labels), inf)
    # A background pixel next to another label; the 3x3 window holds the pixel itself.
    lo = neighbourhood_min(labels)
    hi = F.max_pool2d(torch.where(bg, labels, -inf), kernel_size=3, stride=1, padding=1)
    touches_other = bg & ((lo != labels) | (hi != labels))
    slot = torch.where(bg, labels, 0).long().flatten(1)  # label L -> slot L; non-background -> 0
    count = torch.zeros(n, h * w + 1, device=mask.device, dtype=torch.int64)
    count.scatter_add_(1, slot, bg.flatten(1).long())
    open_ = torch.zeros(n, h * w + 1, device=mask.device, dtype=torch.int64)
    open_.scatter_add_(1, slot, touches_other.flatten(1).long())
    hole = bg.flatten(1) & (count.gather(1, slot) <= max_area) & (open_.gather(1, slot) == 0)
    return torch.where(hole.reshape(shape), 0.1, mask)
