"""The SAM 2 network: components assembled as in Meta's SAM2Base, plus its per-frame tracking step.

Parameter names follow the official checkpoint keys, so Meta's ``.pt`` files load strictly.
The tracking step works on a batch of objects that share one frame; the bookkeeping of
which frames exist (prompts, outputs, memories) lives in the video predictor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from napari_sam2.errors import InputError, StateError

from .common import MLP
from .config import SAM2Config
from .hiera import Hiera
from .image_encoder import FpnNeck, ImageEncoder
from .mask_decoder import MaskDecoder
from .memory_attention import MemoryAttention, MemoryAttentionLayer
from .memory_encoder import MemoryEncoder
from .memory_selection import MemoryEntry, select_memories
from .position_encoding import sine_encoding_1d
from .prompt_encoder import PromptEncoder

NO_OBJ_SCORE = -1024.0  # logit written over the whole mask of an absent object


@dataclass
class FrameFeatures:
    """Image-encoder output for one frame (batch 1), as the heads consume it."""

    vision_feat: torch.Tensor  # (1, C, 64, 64) stride-16 features
    vision_pos: torch.Tensor  # (1, C, 64, 64)
    high_res: list[torch.Tensor]  # [(1, C/8, 256, 256), (1, C/4, 128, 128)] after conv_s0 / conv_s1

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.vision_feat, self.vision_pos, *self.high_res))

    def to(self, device: torch.device | str) -> FrameFeatures:
        return FrameFeatures(
            self.vision_feat.to(device), self.vision_pos.to(device), [t.to(device) for t in self.high_res]
        )


@dataclass
class HeadsOutput:
    low_res_multimasks: torch.Tensor
    ious: torch.Tensor
    low_res_masks: torch.Tensor  # (B, 1, 256, 256) chosen mask logits
    high_res_masks: torch.Tensor  # (B, 1, 1024, 1024)
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)


class SAM2Model(nn.Module):
    def __init__(self, cfg: SAM2Config) -> None:
        super().__init__()
        self.config = cfg
        tr = cfg.tracking
        self.tracking = tr
        d = cfg.neck.d_model
        self.hidden_dim = d
        self.image_size = cfg.image_size
        self.embedding_size = cfg.image_size // cfg.backbone_stride

        t = cfg.trunk
        trunk = Hiera(
            embed_dim=t.embed_dim,
            num_heads=t.num_heads,
            stages=t.stages,
            global_att_blocks=t.global_att_blocks,
            window_spec=t.window_spec,
            window_pos_embed_bkg_spatial_size=t.window_pos_embed_bkg_spatial_size,
        )
        n = cfg.neck
        neck = FpnNeck(n.d_model, n.backbone_channel_list, n.fpn_top_down_levels, n.fpn_interp_model)
        self.image_encoder = ImageEncoder(trunk, neck, scalp=n.scalp)

        mem_dim = cfg.memory_encoder.out_dim
        self.mem_dim = mem_dim
        ma = cfg.memory_attention
        layer = MemoryAttentionLayer(
            d_model=d,
            dim_feedforward=ma.dim_feedforward,
            num_heads=ma.num_heads,
            kv_in_dim=mem_dim,
            rope_theta=ma.rope_theta,
            feat_sizes=ma.feat_sizes,
        )
        self.memory_attention = MemoryAttention(layer, ma.num_layers, d_model=d)
        self.memory_encoder = MemoryEncoder(
            out_dim=mem_dim, in_dim=d, num_fuser_layers=cfg.memory_encoder.num_fuser_layers
        )

        self.num_maskmem = tr.num_maskmem
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(tr.num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))
        if tr.use_obj_ptrs_in_encoder:
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        if tr.pred_obj_scores and tr.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim)) if tr.no_obj_embed_spatial else None

        self.sam_prompt_encoder = PromptEncoder(
            d, (self.embedding_size, self.embedding_size), (cfg.image_size, cfg.image_size), mask_in_chans=16
        )
        pp = cfg.postprocessing
        self.sam_mask_decoder = MaskDecoder(
            transformer_dim=d,
            use_high_res_features=tr.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=tr.iou_prediction_use_sigmoid,
            pred_obj_scores=tr.pred_obj_scores,
            pred_obj_scores_mlp=tr.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=tr.use_multimask_token_for_obj_ptr,
            dynamic_multimask_via_stability=pp.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=pp.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=pp.dynamic_multimask_stability_thresh,
        )
        if tr.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = MLP(d, d, d, 3) if tr.use_mlp_for_obj_ptr_proj else nn.Linear(d, d)
        else:
            self.obj_ptr_proj = nn.Identity()
        self.obj_ptr_tpos_proj = nn.Linear(d, mem_dim) if tr.proj_tpos_enc_in_obj_ptrs else nn.Identity()

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    # ------------------------------------------------------------------ image
    def forward_image(self, image: torch.Tensor) -> list[FrameFeatures]:
        """Normalised images (B, 3, S, S) -> one :class:`FrameFeatures` per image."""
        out = self.image_encoder(image)
        fpn, pos = out["backbone_fpn"], out["vision_pos_enc"]
        high_res = [self.sam_mask_decoder.conv_s0(fpn[0]), self.sam_mask_decoder.conv_s1(fpn[1])]
        return [
            FrameFeatures(fpn[-1][i : i + 1], pos[-1][i : i + 1], [h[i : i + 1] for h in high_res])
            for i in range(image.shape[0])
        ]

    # ------------------------------------------------------------------ SAM heads
    def _finish_heads(
        self,
        low_res_multimasks: torch.Tensor,
        ious: torch.Tensor,
        sam_tokens: torch.Tensor,
        object_score_logits: torch.Tensor,
        multimask_output: bool,
    ) -> HeadsOutput:
        b = low_res_multimasks.shape[0]
        is_present = object_score_logits > 0
        if self.tracking.pred_obj_scores:
            low_res_multimasks = torch.where(is_present[:, None, None], low_res_multimasks, NO_OBJ_SCORE)
        low_res_multimasks = low_res_multimasks.float()
        high_res_multimasks = F.interpolate(
            low_res_multimasks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        token = sam_tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=ious.device)
            low_res = low_res_multimasks[rows, best].unsqueeze(1)
            high_res = high_res_multimasks[rows, best].unsqueeze(1)
            if sam_tokens.shape[1] > 1:
                token = sam_tokens[rows, best]
        else:
            low_res, high_res = low_res_multimasks, high_res_multimasks
        obj_ptr = self.obj_ptr_proj(token)
        if self.tracking.pred_obj_scores:
            lam = object_score_logits.sigmoid() if self.tracking.soft_no_obj_ptr else is_present.float()
            if self.tracking.fixed_no_obj_ptr:
                obj_ptr = lam * obj_ptr
            obj_ptr = obj_ptr + (1 - lam) * self.no_obj_ptr
        return HeadsOutput(low_res_multimasks, ious, low_res, high_res, obj_ptr, object_score_logits)

    def sam_heads(
        self,
        backbone_features: torch.Tensor,
        high_res_features: list[torch.Tensor] | None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> HeadsOutput:
        """Prompt encoder + mask decoder on (B, C, 64, 64) features; points in 1024-pixel (x, y)."""
        b = backbone_features.shape[0]
        if point_coords is None:
            point_coords = backbone_features.new_zeros(b, 1, 2)
            point_labels = -torch.ones(b, 1, dtype=torch.int32, device=backbone_features.device)
        mask_prompt = None
        if mask_inputs is not None:
            mask_prompt = mask_inputs
            if mask_inputs.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
                mask_prompt = F.interpolate(
                    mask_inputs.float(),
                    size=self.sam_prompt_encoder.mask_input_size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
        sparse, dense = self.sam_prompt_encoder((point_coords, point_labels), mask_prompt)
        dec = self.sam_mask_decoder(
            backbone_features,
            self.sam_prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res_features,
        )
        return self._finish_heads(
            dec.masks, dec.iou_pred, dec.sam_tokens, dec.object_score_logits, multimask_output
        )

    def mask_as_output(
        self,
        backbone_features: torch.Tensor,
        high_res_features: list[torch.Tensor] | None,
        mask_inputs: torch.Tensor,
    ) -> HeadsOutput:
        """A binary mask prompt taken as the output itself (logits +-10); the decoder only makes the pointer."""
        scale, bias = 20.0, -10.0
        mask = mask_inputs.float()
        high_res = mask * scale + bias
        low_res = F.interpolate(
            high_res,
            size=(high_res.shape[-2] // 4, high_res.shape[-1] // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        ious = mask.new_ones(mask.shape[0], 1)
        if self.tracking.use_obj_ptrs_in_encoder:
            obj_ptr = self.sam_heads(
                backbone_features, high_res_features, mask_inputs=self.mask_downsample(mask)
            ).obj_ptr
        else:
            obj_ptr = mask.new_zeros(mask.shape[0], self.hidden_dim)
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        score = scale * present + bias
        if self.tracking.pred_obj_scores:
            if self.tracking.fixed_no_obj_ptr:
                obj_ptr = present * obj_ptr
            obj_ptr = obj_ptr + (1 - present) * self.no_obj_ptr
        return HeadsOutput(low_res, ious, low_res, high_res, obj_ptr, score)

    def use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        tr = self.tracking
        return (
            tr.multimask_output_in_sam
            and (is_init_cond_frame or tr.multimask_output_for_tracking)
            and tr.multimask_min_pt_num <= num_points <= tr.multimask_max_pt_num
        )

    # ------------------------------------------------------------------ memory
    def select_memories(
        self,
        frame_idx: int,
        cond_outputs: Mapping[int, MemoryEntry],
        non_cond_outputs: Mapping[int, MemoryEntry],
        num_frames: int,
        reverse: bool,
    ) -> tuple[list[tuple[int, MemoryEntry]], list[tuple[int, torch.Tensor]]]:
        """:func:`~napari_sam2.model.memory_selection.select_memories` with this model's settings."""
        return select_memories(
            self.tracking, self.num_maskmem, frame_idx, cond_outputs, non_cond_outputs, num_frames, reverse
        )

    def condition_on_memory(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        vision_feat: torch.Tensor,
        vision_pos: torch.Tensor,
        cond_outputs: Mapping[int, MemoryEntry],
        non_cond_outputs: Mapping[int, MemoryEntry],
        num_frames: int,
        reverse: bool = False,
    ) -> torch.Tensor:
        """Fuse the frame's (B, C, H, W) features with the object's memories -> (B, C, H, W)."""
        b, c, h, w = vision_feat.shape
        if self.num_maskmem == 0:
            return vision_feat
        if is_init_cond_frame:
            if self.tracking.directly_add_no_mem_embed:
                return vision_feat + self.no_mem_embed.view(1, c, 1, 1)
            memory = self.no_mem_embed.expand(b, 1, self.mem_dim)
            memory_pos = self.no_mem_pos_enc.expand(b, 1, self.mem_dim)
            return self._attend(vision_feat, vision_pos, memory, memory_pos, 0)
        if not cond_outputs:
            raise StateError("tracking a frame needs at least one conditioning frame")
        selection = self.select_memories(frame_idx, cond_outputs, non_cond_outputs, num_frames, reverse)
        return self.condition_on_selected_memories(vision_feat, vision_pos, [selection] * b, num_frames)

    def condition_on_selected_memories(
        self,
        vision_feat: torch.Tensor,
        vision_pos: torch.Tensor,
        selections: list[tuple[list[tuple[int, MemoryEntry]], list[tuple[int, torch.Tensor]]]],
        num_frames: int,
    ) -> torch.Tensor:
        """Memory attention for B objects at once, one :meth:`select_memories` result each.

        The selections must share their layout (the same temporal slots and pointer
        distances), so the objects' memories stack along the batch axis.
        """
        b = len(selections)
        _, c, h, w = vision_feat.shape
        vision_feat = vision_feat.expand(b, -1, -1, -1)
        memories, pointers = selections[0]
        layout = ([t for t, _ in memories], [d for d, _ in pointers])
        for mems, ptrs in selections[1:]:
            if ([t for t, _ in mems], [d for d, _ in ptrs]) != layout:
                raise InputError("objects batched together must have the same memory layout")
        device = vision_feat.device
        pos_grid = self.memory_pos_enc(h, w, device).flatten(1).t()  # (HW, mem_dim)
        mem_list, pos_list = [], []
        for j, (t_pos, _) in enumerate(memories):
            # Memories are kept in bfloat16 (as the reference does) and used in float32.
            feats = torch.cat([sel[0][j][1].maskmem_features.to(device) for sel in selections]).float()
            mem_list.append(feats.flatten(2).transpose(1, 2))  # (B, HW, mem_dim)
            tpos = self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1].view(1, 1, -1)
            pos_list.append((pos_grid.unsqueeze(0) + tpos).expand(b, -1, -1))
        num_ptr_tokens = 0
        if pointers:
            ptrs = torch.stack(
                [torch.cat([sel[1][k][1] for sel in selections]) for k in range(len(pointers))], dim=1
            ).to(device)  # (B, P, C)
            dists = self._distances_on(device, [d for d, _ in pointers])
            ptr_pos = (
                self.pointer_pos_enc(dists, num_frames).unsqueeze(0).expand(b, -1, -1)
            )  # (B, P, mem_dim)
            if self.mem_dim < c:
                # Each C-wide pointer becomes C/mem_dim tokens of width mem_dim.
                split = c // self.mem_dim
                ptrs = ptrs.reshape(b, -1, split, self.mem_dim).flatten(1, 2)
                ptr_pos = ptr_pos.repeat_interleave(split, dim=1)
            mem_list.append(ptrs)
            pos_list.append(ptr_pos)
            num_ptr_tokens = ptrs.shape[1]
        memory = torch.cat(mem_list, dim=1)
        memory_pos = torch.cat(pos_list, dim=1)
        return self._attend(vision_feat, vision_pos, memory, memory_pos, num_ptr_tokens)

    def _attend(self, vision_feat, vision_pos, memory, memory_pos, num_ptr_tokens) -> torch.Tensor:
        b, c, h, w = vision_feat.shape
        curr = vision_feat.flatten(2).transpose(1, 2)
        curr_pos = vision_pos.flatten(2).transpose(1, 2).expand(b, -1, -1)
        out = self.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=num_ptr_tokens)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def _distances_on(self, device: torch.device, dists: list[int]) -> torch.Tensor:
        """``torch.tensor(dists, device=device)`` without a copy from the host each frame (on a GPU
        the host would wait for it): rows of a signed range kept on the device, grown when needed."""
        span = max(abs(d) for d in dists)
        table = self.__dict__.setdefault("_signed_ranges", {}).get(str(device))
        if table is None or table.shape[0] <= 2 * span:
            size = max(span, 64 if table is None else table.shape[0])  # doubles at least
            with torch.inference_mode(False):  # usable in and outside inference mode
                table = torch.arange(-size, size + 1, device=device)  # a kernel, not a copy
            self._signed_ranges[str(device)] = table
        mid = table.shape[0] // 2
        return torch.cat([table[mid + d : mid + d + 1] for d in dists])

    def pointer_pos_enc(self, dists: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Temporal encoding of object pointers at signed frame distances -> (P, mem_dim)."""
        tr = self.tracking
        if not tr.add_tpos_enc_to_obj_ptrs:
            return torch.zeros(dists.shape[0], self.mem_dim, device=dists.device)
        t_diff_max = max(min(num_frames, tr.max_obj_ptrs_in_encoder) - 1, 1)
        dim = self.hidden_dim if tr.proj_tpos_enc_in_obj_ptrs else self.mem_dim
        return self.obj_ptr_tpos_proj(sine_encoding_1d(dists / t_diff_max, dim))

    def memory_pos_enc(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(mem_dim, h, w) position encoding of memory features (depends only on the size)."""
        return self.memory_encoder.position_encoding.grid(h, w, device)

    def encode_memory(
        self,
        vision_feat: torch.Tensor,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
    ) -> torch.Tensor:
        """Memory features (B, mem_dim, h, w) from raw frame features and a full-resolution mask."""
        tr = self.tracking
        if tr.non_overlap_masks_for_mem_enc:
            high_res_masks = apply_non_overlapping_constraints(high_res_masks)
        if tr.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts:
            mask = (high_res_masks > 0).float()
        else:
            mask = torch.sigmoid(high_res_masks)
        mask = mask * tr.sigmoid_scale_for_mem_enc + tr.sigmoid_bias_for_mem_enc
        feats, _ = self.memory_encoder(vision_feat.expand(mask.shape[0], -1, -1, -1), mask)
        if self.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).float()  # (B, 1)
            feats = feats + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return feats

    def track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        features: FrameFeatures,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
        cond_outputs: Mapping[int, MemoryEntry],
        non_cond_outputs: Mapping[int, MemoryEntry],
        num_frames: int,
        reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_sam_mask_logits: torch.Tensor | None = None,
        batch_size: int = 1,
    ) -> tuple[HeadsOutput, torch.Tensor | None]:
        """One frame for ``batch_size`` objects sharing the same memories -> (heads output, memory)."""
        vision_feat = features.vision_feat.expand(batch_size, -1, -1, -1)
        high_res = [t.expand(batch_size, -1, -1, -1) for t in features.high_res]
        if mask_inputs is not None and self.tracking.use_mask_input_as_output_without_sam:
            heads = self.mask_as_output(vision_feat, high_res, mask_inputs)
        else:
            pix_feat = self.condition_on_memory(
                frame_idx,
                is_init_cond_frame,
                vision_feat,
                features.vision_pos,
                cond_outputs,
                non_cond_outputs,
                num_frames,
                reverse,
            )
            if prev_sam_mask_logits is not None:
                mask_inputs = prev_sam_mask_logits
            num_points = 0 if point_labels is None else point_labels.shape[1]
            heads = self.sam_heads(
                pix_feat,
                high_res,
                point_coords,
                point_labels,
                mask_inputs,
                multimask_output=self.use_multimask(is_init_cond_frame, num_points),
            )
        memory = None
        if run_mem_encoder and self.num_maskmem > 0:
            memory = self.encode_memory(
                vision_feat,
                heads.high_res_masks,
                heads.object_score_logits,
                is_mask_from_pts=point_labels is not None,
            )
        return heads, memory

    def track_selected(
        self,
        features: FrameFeatures,
        selections: list[tuple[list[tuple[int, MemoryEntry]], list[tuple[int, torch.Tensor]]]],
        num_frames: int,
        run_mem_encoder: bool = True,
    ) -> tuple[HeadsOutput, torch.Tensor | None]:
        """Track B objects on a frame without prompts, in one pass (one selection per object)."""
        b = len(selections)
        high_res = [t.expand(b, -1, -1, -1) for t in features.high_res]
        pix_feat = self.condition_on_selected_memories(
            features.vision_feat, features.vision_pos, selections, num_frames
        )
        heads = self.sam_heads(pix_feat, high_res, multimask_output=self.use_multimask(False, 0))
        memory = None
        if run_mem_encoder and self.num_maskmem > 0:
            memory = self.encode_memory(
                features.vision_feat, heads.high_res_masks, heads.object_score_logits, is_mask_from_pts=False
            )
        return heads, memory


def apply_non_overlapping_constraints(masks: torch.Tensor) -> torch.Tensor:
    """Keep, at each pixel, only the highest-scoring object's logit; others are clamped to <= -10."""
    if masks.shape[0] == 1:
        return masks
    best = torch.argmax(masks, dim=0, keepdim=True)
    ids = torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(best == ids, masks, torch.clamp(masks, max=-10.0))
