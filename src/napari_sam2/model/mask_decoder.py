"""SAM 2 mask decoder: two-way transformer over prompt tokens and image, masks, IoU and object score."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from napari_sam2.errors import InputError

from .common import MLP, LayerNorm2d
from .transformer import ImageSide, TwoWayTransformer


@dataclass
class DecoderOutput:
    masks: torch.Tensor  # (B, M, 4h, 4w) low-resolution mask logits (M = 3 or 1)
    iou_pred: torch.Tensor  # (B, M)
    sam_tokens: torch.Tensor  # (B, M', C) output tokens used for object pointers
    object_score_logits: torch.Tensor  # (B, 1)


@dataclass
class DecoderTokens:
    """The mask decoder's output before the masks are drawn (see ``MaskDecoder.decode_tokens``)."""

    image_tokens: torch.Tensor  # (B, h*w, C) the transformer's image side, per prompt
    image_chw: tuple[int, int, int]  # (C, h, w) of the image embedding
    iou_pred: torch.Tensor  # (B, num_mask_tokens)
    mask_tokens_out: torch.Tensor  # (B, num_mask_tokens, C)
    obj_logits: torch.Tensor  # (B, 1)


class MaskDecoder(nn.Module):
    def __init__(
        self,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = True,
        iou_prediction_use_sigmoid: bool = True,
        pred_obj_scores: bool = True,
        pred_obj_scores_mlp: bool = True,
        use_multimask_token_for_obj_ptr: bool = True,
        dynamic_multimask_via_stability: bool = True,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
    ) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(
            depth=2, embedding_dim=transformer_dim, num_heads=8, mlp_dim=2048
        )
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head = (
                MLP(transformer_dim, transformer_dim, 1, 3)
                if pred_obj_scores_mlp
                else nn.Linear(transformer_dim, 1)
            )
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.stability_delta = dynamic_multimask_stability_delta
        self.stability_thresh = dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> DecoderOutput:
        masks, iou_pred, mask_tokens_out, obj_logits = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            repeat_image,
            high_res_features,
        )
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._stable_single_mask(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, :1], iou_pred[:, :1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens = mask_tokens_out[:, 1:]
        else:
            # The single-mask token serves as the object-memory token otherwise.
            sam_tokens = mask_tokens_out[:, :1]
        return DecoderOutput(masks, iou_pred, sam_tokens, obj_logits)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.decode_tokens(image_embeddings, image_pe, sparse, dense, repeat_image)
        masks = self.upscale_masks(tokens, high_res_features)
        return masks, tokens.iou_pred, tokens.mask_tokens_out, tokens.obj_logits

    def prepare_image(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor
    ) -> ImageSide:
        """The per-image part of the decoder for one image (1, C, h, w) and one dense prompt
        (1, C, h, w) shared by every prompt (no mask prompt: the expanded ``no_mask_embed``).

        Made once per image by segment everything and passed to :meth:`decode_tokens` for
        every batch of points on it.
        """
        if image_embeddings.shape[0] != 1 or dense.shape[0] != 1:
            raise InputError(
                "prepare_image takes one image and one dense prompt (batch 1); got batches "
                f"{image_embeddings.shape[0]} and {dense.shape[0]}"
            )
        return self.transformer.prepare_image(image_embeddings + dense, image_pe)

    def decode_tokens(
        self,
        image_embeddings: torch.Tensor | None,
        image_pe: torch.Tensor | None,
        sparse: torch.Tensor,
        dense: torch.Tensor | None,
        repeat_image: bool,
        prepared: ImageSide | None = None,
    ) -> DecoderTokens:
        """The two-way transformer and the token heads: everything but the mask pixels.

        The predicted IoU and object score come from the output tokens alone, so a caller that
        filters on them (segment everything) can upscale only the masks it keeps, with
        :meth:`upscale_masks` and its ``rows``.

        When one image serves every prompt (``repeat_image``) and the dense prompt is the same
        for all of them (no mask prompts: the prompt encoder's expanded ``no_mask_embed``), the
        image side is not copied per prompt: the transformer's first block computes its image
        projections once and broadcasts them (same arithmetic, same bits). ``prepared`` (from
        :meth:`prepare_image`) holds those projections already and replaces the image
        arguments and ``dense``.
        """
        heads = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            heads.insert(0, self.obj_score_token.weight)
        first = 1 if self.pred_obj_scores else 0
        output_tokens = torch.cat(heads, dim=0).unsqueeze(0).expand(sparse.shape[0], -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)

        if prepared is not None:
            c, (h, w) = prepared.keys.shape[2], prepared.hw
            hs, keys = self.transformer(None, None, tokens, prepared=prepared)
        else:
            n = tokens.shape[0]
            shared_dense = dense.shape[0] == 1 or dense.stride(0) == 0
            if repeat_image and image_embeddings.shape[0] == 1 and shared_dense:
                src = image_embeddings + dense[:1]  # (1, C, h, w): every prompt's identical image side
            else:
                src = (
                    torch.repeat_interleave(image_embeddings, n, dim=0) if repeat_image else image_embeddings
                )
                src = src + dense
            pos_src = image_pe.expand(src.shape[0], -1, -1, -1)
            _, c, h, w = src.shape
            hs, keys = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, first]
        mask_tokens_out = hs[:, first + 1 : first + 1 + self.num_mask_tokens]
        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            obj_logits = self.pred_obj_score_head(hs[:, 0])
        else:
            obj_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)  # "always present"
        return DecoderTokens(keys, (c, h, w), iou_pred, mask_tokens_out, obj_logits)

    def upscale_masks(
        self,
        tokens: DecoderTokens,
        high_res_features: list[torch.Tensor] | None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Low-res mask logits (b, num_mask_tokens, 4h, 4w) of the prompts ``rows`` (all if None).

        Each prompt's masks depend only on its own tokens and image-side output, so a subset
        gives the same numbers as the whole batch, for the cost of the subset. The
        hypernetwork MLPs still run on every prompt's tokens: a matrix product of a few rows
        may take another kernel than one of many and differ in the last bits.
        """
        src = tokens.image_tokens
        hyper_in = torch.stack(
            [mlp(tokens.mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        if rows is not None:
            src, hyper_in = src[rows], hyper_in[rows]
        c, h, w = tokens.image_chw
        b = src.shape[0]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_high_res_features:
            upscaled = self.output_upscaling(src)
        elif self._can_upscale_in_place(src, high_res_features):
            upscaled = self._upscale_in_place(src, high_res_features)
        else:
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            upscaled = act1(ln1(dc1(src) + feat_s1))
            upscaled = act2(dc2(upscaled) + feat_s0)
        b, c, h, w = upscaled.shape
        return (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)

    @staticmethod
    def _can_upscale_in_place(src: torch.Tensor, high_res_features: list[torch.Tensor]) -> bool:
        """In place only where it gives the same numbers: no autograd, no autocast (whose
        out-of-place additions would promote bf16 to fp32), one dtype throughout."""
        return (
            not torch.is_grad_enabled()
            and not torch.is_autocast_enabled(src.device.type)
            and all(f.dtype == src.dtype for f in high_res_features)
        )

    def _upscale_in_place(self, src: torch.Tensor, high_res_features: list[torch.Tensor]) -> torch.Tensor:
        """``output_upscaling`` with the high-res features, the same operations in the same
        order, each written over its input: segment everything upscales a (B, 32, 256, 256)
        map per batch, and each fresh copy of it costs more than the arithmetic."""
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        x = dc1(src)
        x += feat_s1
        # LayerNorm2d as in common.LayerNorm2d: (x - mean) / sqrt(var + eps), then weight * x + bias
        mean = x.mean(1, keepdim=True)
        x -= mean
        var = x.pow(2).mean(1, keepdim=True)
        x /= torch.sqrt(var + ln1.eps)
        x *= ln1.weight[:, None, None]
        x += ln1.bias[:, None, None]
        torch.ops.aten.gelu_(x, approximate=act1.approximate)
        x = dc2(x)
        x += feat_s0
        torch.ops.aten.gelu_(x, approximate=act2.approximate)
        return x

    def stability_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """IoU of the mask thresholded at +delta and at -delta (1 where both are empty)."""
        flat = logits.flatten(-2)
        inter = (flat > self.stability_delta).sum(-1).float()
        union = (flat > -self.stability_delta).sum(-1).float()
        return torch.where(union > 0, inter / union, 1.0)

    def _stable_single_mask(
        self, masks: torch.Tensor, iou: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output, falling back to the best multimask output when it is unstable."""
        best = torch.argmax(iou[:, 1:], dim=-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks = masks[:, 1:][rows, best].unsqueeze(1)
        best_iou = iou[:, 1:][rows, best].unsqueeze(1)
        single_masks, single_iou = masks[:, :1], iou[:, :1]
        stable = self.stability_scores(single_masks) >= self.stability_thresh
        out_masks = torch.where(stable[..., None, None].expand_as(single_masks), single_masks, best_masks)
        out_iou = torch.where(stable.expand_as(single_iou), single_iou, best_iou)
        return out_masks, out_iou
