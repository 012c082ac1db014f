"""Streaming video / stack predictor with Meta's SAM2VideoPredictor semantics.

Same method names and call semantics as Meta's current (per-object independent) predictor:
``init_state``, ``add_new_points_or_box``, ``add_new_mask``, ``propagate_in_video``,
``clear_all_prompts_in_frame``, ``remove_object``, ``reset_state``. What differs is the data
path and the memory:

- frames come from any array-like (numpy, dask, zarr, memory-mapped TIFF) or a TIFF/folder
  path, read and normalised lazily, one frame at a time (nothing is decoded up front);
- image features live in a cache bounded in bytes (LRU), not one per frame forever, and,
  when asked (``embedding_cache=``), in a persistent cache on disk that later sessions and
  other processes read instead of encoding again (:mod:`napari_sam2.engine.cache.embedding_cache`);
- each object's per-frame outputs keep only the newest frames in RAM and spill the rest,
  bit-exactly, to a scratch file, so memory stays flat however long the stack is while
  corrections on any frame still work.

The state is an explicit :class:`VideoSession` object passed where Meta passes its dict.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.engine.cache.embedding_cache import resolve_embedding_cache
from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.engine.frames.open import open_frames
from napari_sam2.engine.predict.heap import trim_heap
from napari_sam2.engine.predict.output_store import FrameOutput
from napari_sam2.engine.predict.protocols import EXTENSION_NEED_OUTPUT, EXTENSION_REFINE
from napari_sam2.engine.predict.video_inference import VideoInference
from napari_sam2.engine.predict.video_state import ObjectTrack, VideoSession
from napari_sam2.engine.validation import (
    PromptError,
    check_box,
    check_frame_index,
    check_mask,
    check_obj_id,
    check_points,
)
from napari_sam2.engine.weights.build import build_sam2_model, resolve_autocast_dtype, resolve_device
from napari_sam2.errors import InputError, UnknownKeyError
from napari_sam2.model import FrameFeatures, SAM2Model

__all__ = ["SAM2VideoPredictor", "VideoSession", "build_sam2_video_predictor"]


class SAM2VideoPredictor(VideoInference):
    """Track objects through a stack with SAM 2 (wraps a :class:`SAM2Model`).

    Args:
        model: the network (see :func:`build_sam2_video_predictor`).
        fill_hole_area: fill background holes up to this many pixels (8-connected) in the
            low-res masks, as Meta's builder does with 8; 0 disables it.
        non_overlap_masks: keep only the highest-scoring object at each output pixel.
        clear_non_cond_mem_around_input / add_all_frames_to_correct_as_cond: Meta's options.
        feature_cache_bytes: budget of the per-frame image-feature cache.
        hot_frames: per object, how many tracked frames stay whole in RAM before older ones
            spill to disk (tracking needs the last ``num_maskmem`` frames; 16 covers the
            object pointers too).
        spill_to_disk: False keeps everything in RAM (Meta's behaviour).
        autocast_dtype: e.g. ``torch.bfloat16`` for faster mixed precision on GPU; None (the
            default and the parity reference) runs in float32.
        batch_objects: track all objects of a frame whose memories line up (the usual
            case: prompted on the same frames) in one batched pass instead of one by one.
            None (default): batched on GPUs and other accelerators, where one pass saves
            kernel launches and syncs; one by one on CPU, where the per-object memory
            attention dominates and the batched pass measured 6 % slower (5 objects, tiny).
            Both give the same results up to float rounding.
        embedding_cache: a persistent on-disk cache of the image features, shared by
            sessions and processes (:mod:`napari_sam2.engine.cache.embedding_cache`): an
            :class:`~napari_sam2.engine.cache.embedding_cache.EmbeddingCache`, a folder, True (the
            default folder) or ``"auto"`` (the default folder unless
            ``NAPARI_SAM2_EMBEDDING_CACHE=0``). None (the default, as Meta's predictor):
            features are only kept in RAM. Masks are the same with and without it.
    """

    #: keywords beyond Meta's API this predictor takes (see predictor_protocols)
    api_extensions: ClassVar[frozenset[str]] = frozenset({EXTENSION_REFINE, EXTENSION_NEED_OUTPUT})

    def __init__(
        self,
        model: SAM2Model,
        fill_hole_area: int = 8,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        feature_cache_bytes: int = 256 * 2**20,
        hot_frames: int = 16,
        spill_to_disk: bool = True,
        spill_dir: str | None = None,
        autocast_dtype: torch.dtype | None = None,
        batch_objects: bool | None = None,
        embedding_cache: Any = None,
    ) -> None:
        self.model = model
        self.embedding_cache = resolve_embedding_cache(embedding_cache)
        self.batch_objects = batch_objects
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.feature_cache_bytes = feature_cache_bytes
        self.hot_frames = hot_frames
        self.spill_to_disk = spill_to_disk
        self.spill_dir = spill_dir
        self.autocast_dtype = resolve_autocast_dtype(autocast_dtype)  # 'bf16' etc. mapped once

    # ================================================================== session
    @torch.inference_mode()
    def init_state(
        self,
        frames: Any,
        normalizer: Normalizer | None = None,
        *,
        channel_axis: int | None = None,
        channels: Any = None,
    ) -> VideoSession:
        """Open a stack (T, H, W) / (T, H, W, C) array-like, TIFF path or image folder.

        Frames are read lazily. Contrast normalisation is fitted once for the whole
        sequence (or given as ``normalizer``); uint8 RGB frames get exactly Meta's
        treatment. The first frame is embedded right away, as Meta's predictor does.
        """
        source = open_frames(frames, channel_axis=channel_axis)
        if len(source) == 0:
            raise InputError("the stack has no frames")
        if normalizer is None:
            normalizer = Normalizer.fit(source, channels=channels)
        session = VideoSession(
            source,
            normalizer,
            self.image_size,
            self.device,
            self.feature_cache_bytes,
            self.hot_frames,
            self.spill_to_disk,
            self.spill_dir,
        )
        self._features(session, 0)
        return session

    def reset_state(self, state: VideoSession) -> None:
        """Forget all objects, prompts and results (the frames and cached features stay)."""
        for obj in state.objects.values():
            obj.non_cond.close()
        state.objects.clear()

    # ================================================================== features
    # ================================================================== validation
    def _check_frame(self, state: VideoSession, frame_idx: int) -> int:
        return check_frame_index(frame_idx, state.num_frames)

    def _object(self, state: VideoSession, obj_id: Any, create: bool) -> ObjectTrack:
        obj_id = check_obj_id(obj_id)
        obj = state.objects.get(obj_id)
        if obj is None:
            if not create:
                raise UnknownKeyError(f"unknown object id {obj_id!r}; known ids: {state.obj_ids}")
            obj = ObjectTrack(obj_id=obj_id, non_cond=state.new_store(obj_id))
            state.objects[obj_id] = obj
        return obj

    def _parse_points(self, state, points, labels, box, normalize_coords):
        """Checked prompts (engine/validation.py) as model coordinates: box corners first (labels 2, 3)."""
        if points is None and labels is None and box is None:
            raise PromptError(
                "give points (with labels) or a box: an empty prompt says nothing about the object"
            )
        w, h = state.video_width, state.video_height
        xy = np.zeros((0, 2), np.float32)
        lbl = np.zeros(0, np.int32)
        if points is not None or labels is not None:
            xy, lbl = check_points(points, labels, w, h, normalized=not normalize_coords)
            if xy.ndim == 3 and xy.shape[0] == 1:
                xy, lbl = xy[0], lbl[0]
            if xy.ndim != 2:
                raise PromptError(f"points must have shape (N, 2) as (x, y) for one object; got {xy.shape}")
            if len(xy) == 0 and box is None:
                raise PromptError("points is empty: give at least one point or a box")
        if box is not None:
            b = check_box(box, w, h, normalized=not normalize_coords)
            if b.size != 4:
                raise PromptError(f"give one box [x0, y0, x1, y1] per object and frame; got {b.size // 4}")
            xy = np.concatenate([b.reshape(2, 2), xy])
            lbl = np.concatenate([np.array([2, 3], np.int32), lbl])
        pts = torch.from_numpy(xy)
        if normalize_coords:
            pts = pts / torch.tensor([w, h], dtype=torch.float32)
        pts = pts * self.image_size
        return pts[None].to(self.device), torch.from_numpy(lbl)[None].to(self.device)

    # ================================================================== prompts
    @torch.inference_mode()
    def add_new_points_or_box(
        self,
        state: VideoSession,
        frame_idx: int,
        obj_id: Any,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
        *,
        refine: bool = True,
    ) -> tuple[int, list, torch.Tensor]:
        """Add clicks (x, y pixels; label 1 object, 0 background) and/or a box on one frame.

        Returns ``(frame_idx, obj_ids, video_res_masks)`` with logits (N, 1, H, W) for every
        known object on that frame. Points outside the frame, labels other than 1/0 and
        non-integer object ids are refused (:mod:`napari_sam2.engine.validation`).

        ``refine`` (ours, not in Meta's API): True, as Meta does, feeds the mask this object
        already has on the frame to the decoder with the clicks, so each call refines the
        last result; False makes the mask from these prompts alone, so that the same prompts
        always give the same mask (the plugin uses it on frames it prompts from scratch).
        """
        frame_idx = self._check_frame(state, frame_idx)
        if box is not None and not clear_old_points:
            raise InputError(
                "a box must come before any point on a frame: use clear_old_points=True with a box"
            )
        coords, lbls = self._parse_points(state, points, labels, box, normalize_coords)
        obj = self._object(state, obj_id, create=True)
        if not clear_old_points and frame_idx in obj.point_inputs:
            old_c, old_l = obj.point_inputs[frame_idx]
            coords, lbls = torch.cat([old_c, coords], dim=1), torch.cat([old_l, lbls], dim=1)
        obj.point_inputs[frame_idx] = (coords, lbls)
        obj.mask_inputs.pop(frame_idx, None)

        is_init_cond_frame = frame_idx not in obj.frames_tracked
        reverse = False if is_init_cond_frame else obj.frames_tracked[frame_idx]
        is_cond = is_init_cond_frame or self.add_all_frames_to_correct_as_cond
        # A correction refines the mask this object already has on the frame.
        prev = obj.output_on(frame_idx, is_cond) if refine else None
        prev_logits = None
        if prev is not None and prev.pred_masks is not None:
            prev_logits = torch.clamp(prev.pred_masks.to(self.device), -32.0, 32.0)

        out = self._run_frame(
            state,
            obj,
            frame_idx,
            is_init_cond_frame,
            coords,
            lbls,
            None,
            reverse,
            run_mem_encoder=False,
            prev_sam_mask_logits=prev_logits,
        )
        obj.temp(is_cond)[frame_idx] = out
        return frame_idx, state.obj_ids, self._consolidated_video_res(state, frame_idx, is_cond)

    def add_new_points(self, *args, **kwargs):
        """Deprecated alias of :meth:`add_new_points_or_box` (as in Meta's API)."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    def add_new_mask(
        self, state: VideoSession, frame_idx: int, obj_id: Any, mask: Any
    ) -> tuple[int, list, torch.Tensor]:
        """Give an object's mask (H, W) on one frame (bool or 0/1), e.g. from a Labels layer."""
        frame_idx = self._check_frame(state, frame_idx)
        m = torch.from_numpy(
            check_mask(
                mask, state.video_height, state.video_width, where=f"of object {obj_id} on frame {frame_idx}"
            )
        )
        obj = self._object(state, obj_id, create=True)
        mask_in = m[None, None].float().to(self.device)
        size = self.image_size
        if tuple(mask_in.shape[-2:]) != (size, size):
            mask_in = F.interpolate(
                mask_in, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
            mask_in = (mask_in >= 0.5).float()
        obj.mask_inputs[frame_idx] = mask_in
        obj.point_inputs.pop(frame_idx, None)

        is_init_cond_frame = frame_idx not in obj.frames_tracked
        reverse = False if is_init_cond_frame else obj.frames_tracked[frame_idx]
        is_cond = is_init_cond_frame or self.add_all_frames_to_correct_as_cond
        out = self._run_frame(
            state, obj, frame_idx, is_init_cond_frame, None, None, mask_in, reverse, run_mem_encoder=False
        )
        obj.temp(is_cond)[frame_idx] = out
        return frame_idx, state.obj_ids, self._consolidated_video_res(state, frame_idx, is_cond)

    def propagate_in_video(
        self,
        state: VideoSession,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[int, list, torch.Tensor]]:
        """Track every object frame by frame, yielding ``(frame_idx, obj_ids, video_res_masks)``.

        Starts at ``start_frame_idx`` (default: the earliest prompted frame) and processes
        ``max_frame_num_to_track`` frames after it (inclusive of both ends), backwards when
        ``reverse``. Closing the generator early keeps every frame already yielded.
        """
        with torch.inference_mode():
            self._preflight(state)
            if start_frame_idx is None:
                start_frame_idx = min(t for obj in state.objects.values() for t in obj.cond)
            start_frame_idx = self._check_frame(state, start_frame_idx)
            order = self._processing_order(state, start_frame_idx, max_frame_num_to_track, reverse)
        for frame_idx in order:
            with torch.inference_mode():
                outs: dict[Any, FrameOutput] = {}
                to_track = []
                for obj in state.objects.values():
                    out = obj.cond.get(frame_idx)
                    if out is None:
                        to_track.append(obj)
                    else:
                        outs[obj.obj_id] = out
                if outs and self.clear_non_cond_mem_around_input:
                    # Clears every object's memories around the frame: once, not once per prompted object.
                    self._clear_non_cond_mem_around_input(state, frame_idx)
                if to_track:
                    for obj, out in zip(to_track, self._track_objects(state, frame_idx, to_track, reverse)):
                        obj.non_cond[frame_idx] = out
                        outs[obj.obj_id] = out
                for obj in state.objects.values():
                    obj.frames_tracked[frame_idx] = reverse
                low = torch.cat([outs[i].pred_masks.to(self.device) for i in state.obj_ids], dim=0)
                masks = self._to_video_res(state, low)
            # Freed per-frame buffers would otherwise stay resident (heap fragmentation).
            trim_heap()
            yield frame_idx, state.obj_ids, masks

    def propagate(
        self,
        state: VideoSession,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        direction: str = "both",
    ) -> Iterator[tuple[int, list, torch.Tensor]]:
        """Propagate ``"forward"``, ``"backward"`` or ``"both"`` ways from the prompts in one call.

        ``"both"`` tracks forward from the earliest prompted frame, then backward from it;
        each frame is yielded once.
        """
        if direction not in ("forward", "backward", "both"):
            raise InputError("direction must be 'forward', 'backward' or 'both'")
        if start_frame_idx is None:
            with torch.inference_mode():
                self._preflight(state)
            start_frame_idx = min(t for obj in state.objects.values() for t in obj.cond)
        if direction in ("forward", "both"):
            yield from self.propagate_in_video(state, start_frame_idx, max_frame_num_to_track, reverse=False)
        if direction in ("backward", "both"):
            for item in self.propagate_in_video(state, start_frame_idx, max_frame_num_to_track, reverse=True):
                if direction == "both" and item[0] == start_frame_idx:
                    continue
                yield item

    # ================================================================== removal
    @torch.inference_mode()
    def clear_all_prompts_in_frame(
        self, state: VideoSession, frame_idx: int, obj_id: Any, need_output: bool = True
    ) -> tuple[int, list, torch.Tensor] | None:
        """Remove an object's prompts (and their pending outputs) on one frame."""
        frame_idx = self._check_frame(state, frame_idx)
        obj = self._object(state, obj_id, create=False)
        obj.point_inputs.pop(frame_idx, None)
        obj.mask_inputs.pop(frame_idx, None)
        obj.temp_cond.pop(frame_idx, None)
        obj.temp_non_cond.pop(frame_idx, None)
        out = obj.cond.pop(frame_idx, None)
        if out is not None:
            # The frame keeps its result, now as an ordinary tracked frame.
            obj.non_cond[frame_idx] = out
            obj.frames_tracked.pop(frame_idx, None)
        if not need_output:
            return None
        is_cond = any(frame_idx in o.temp_cond for o in state.objects.values())
        return frame_idx, state.obj_ids, self._consolidated_video_res(state, frame_idx, is_cond)

    @torch.inference_mode()
    def remove_object(
        self, state: VideoSession, obj_id: Any, strict: bool = False, need_output: bool = True
    ) -> tuple[list, list]:
        """Forget an object. Returns the remaining ids and (frame, masks) for its prompted frames."""
        obj_id = check_obj_id(obj_id)
        if obj_id not in state.objects:
            message = f"cannot remove object id {obj_id!r}: it is not tracked (known ids: {state.obj_ids})"
            if strict:
                raise UnknownKeyError(message)
            # Meta's API ignores an unknown id unless strict=True; say so instead of staying silent.
            warnings.warn(message + "; nothing was removed", UserWarning, stacklevel=2)
            return state.obj_ids, []
        obj = state.objects[obj_id]
        frames = sorted(set(obj.point_inputs) | set(obj.mask_inputs))
        obj.non_cond.close()
        del state.objects[obj_id]
        updated = []
        if need_output and state.objects:
            for frame_idx in frames:
                is_cond = any(frame_idx in o.temp_cond for o in state.objects.values())
                updated.append((frame_idx, self._consolidated_video_res(state, frame_idx, is_cond)))
        return state.obj_ids, updated

    # ================================================================== inspection
    def frame_features(self, state: VideoSession, frame_idx: int) -> FrameFeatures:
        """The image features of one frame as tracking uses them: computed once per session
        (through the embedding cache, when there is one) and kept in the state's feature
        cache. The image predictor's ``set_image(..., features=)`` takes them, so segment
        everything on a tracked frame runs no second encoder pass."""
        with torch.inference_mode():
            return self._features(state, self._check_frame(state, frame_idx))

    def frame_outputs(self, state: VideoSession, frame_idx: int) -> list[FrameOutput | None]:
        """Per object (in ``obj_ids`` order), the output held for a frame, or None."""
        return self._consolidated_low_res(state, frame_idx, None)


def build_sam2_video_predictor(
    config_name: str = "sam2.1_hiera_t",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "auto",
    compile: bool = False,
    **kwargs: Any,
) -> SAM2VideoPredictor:
    """A :class:`SAM2VideoPredictor` for one of the 8 official variants.

    ``checkpoint=None`` uses the cached official file, downloading it once; ``device="auto"``
    picks CUDA, then MPS, then CPU. ``compile=True`` runs the heavy components through
    ``torch.compile`` (see :func:`napari_sam2.build.compile_model`); with
    ``autocast_dtype=torch.bfloat16`` that is the fastest mode on a GPU. Other keyword
    arguments go to the predictor.
    """
    model = build_sam2_model(config_name, checkpoint, resolve_device(device), compile=compile)
    return SAM2VideoPredictor(model, **kwargs)
