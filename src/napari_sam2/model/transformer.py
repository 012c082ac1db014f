"""Attention layers: SAM's two-way transformer and rotary (RoPE) attention for memory."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from napari_sam2.errors import InputError

from .common import MLP, attention
from .position_encoding import apply_rope, axial_rope_frequencies


class Attention(nn.Module):
    """Multi-head attention with optional down-projection of the internal width."""

    def __init__(
        self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, kv_in_dim: int | None = None
    ) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise InputError("num_heads must divide the internal dimension")
        self.num_heads = num_heads
        kv_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries (B, Nq, C) attend to keys and values (B, Nk, C); a side of batch 1 is shared."""
        return self.attend(self.project_q(q), self.project_k(k), self.project_v(v))

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        return self._heads(self.q_proj(x))

    def project_k(self, x: torch.Tensor) -> torch.Tensor:
        return self._heads(self.k_proj(x))

    def project_v(self, x: torch.Tensor) -> torch.Tensor:
        return self._heads(self.v_proj(x))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention of projected heads (B, heads, N, d) and the output projection.

        A side of batch 1 (the image, shared by every point prompt of segment everything) is
        broadcast over the other side's batch: the same numbers as projecting a copy per
        prompt, without the copies (each row of a projection is its own dot products).
        """
        b = max(q.shape[0], k.shape[0])
        if q.shape[0] != b or k.shape[0] != b or v.shape[0] != b:
            q, k, v = (t.expand(b, *t.shape[1:]) for t in (q, k, v))
        return self.out_proj(self._merge(attention(q, k, v)))


class RoPEAttention(Attention):
    """Attention with 2-D axial rotary embeddings on queries and (the first part of) keys.

    Keys may hold several frames' worth of spatial tokens (rotated with the same table,
    repeated) followed by ``num_k_exclude_rope`` object-pointer tokens left unrotated.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, kv_in_dim)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self._rotations: dict[tuple, torch.Tensor] = {}
        self._default_size = tuple(feat_sizes)

    def _rotations_for(self, num_tokens: int, device: torch.device) -> torch.Tensor:
        side = int(math.isqrt(num_tokens))
        key = (side, str(device))
        if key not in self._rotations:
            head_dim = self.internal_dim // self.num_heads
            self._rotations[key] = axial_rope_frequencies(head_dim, side, side, self.rope_theta).to(device)
        return self._rotations[key]

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0
    ) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        rot = self._rotations_for(q.shape[-2], q.device)
        q = apply_rope(q, rot)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            if n_rope != q.shape[-2] and not self.rope_k_repeat:
                raise InputError("keys and queries differ in length but rope_k_repeat is off")
            k_rot = apply_rope(k[:, :, :n_rope], rot, repeat=n_rope // q.shape[-2])
            k = torch.cat([k_rot, k[:, :, n_rope:]], dim=2) if num_k_exclude_rope else k_rot
        return self.out_proj(self._merge(attention(q, k, v)))


class TwoWayAttentionBlock(nn.Module):
    """Tokens self-attend, attend to the image, pass an MLP; then the image attends to tokens."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        image: ImageSide | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image``: this block's image-side projections made once by
        :meth:`TwoWayTransformer.prepare_image` (first block only: later ones see per-prompt keys)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        if image is None:
            k = keys + key_pe
            image = ImageSide(
                keys=keys,
                key_pe=key_pe,
                k=self.cross_attn_token_to_image.project_k(k),
                v=self.cross_attn_token_to_image.project_v(keys),
                q=self.cross_attn_image_to_token.project_q(k),
            )
        t2i = self.cross_attn_token_to_image
        queries = self.norm2(queries + t2i.attend(t2i.project_q(queries + query_pe), image.k, image.v))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        i2t = self.cross_attn_image_to_token
        keys = self.norm4(keys + i2t.attend(image.q, i2t.project_k(q), i2t.project_v(queries)))
        return queries, keys


@dataclass
class ImageSide:
    """The first two-way block's image-side inputs, computed once per image.

    Before the first block's last step the image tokens do not depend on the prompts, so
    their projections serve every prompt batch on that image (segment everything).
    """

    keys: torch.Tensor  # (1, h*w, C) image tokens
    key_pe: torch.Tensor  # (1, h*w, C) their positional encoding
    k: torch.Tensor  # token-to-image keys, heads (1, heads, h*w, d)
    v: torch.Tensor  # token-to-image values
    q: torch.Tensor  # image-to-token queries
    hw: tuple[int, int] = (0, 0)  # the image's (H, W)


class TwoWayTransformer(nn.Module):
    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_layer_pe=i == 0
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def prepare_image(self, image: torch.Tensor, image_pe: torch.Tensor) -> ImageSide:
        """The first block's image-side projections of one image (1, C, H, W), for :meth:`forward`."""
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        first = self.layers[0]
        k = keys + key_pe
        return ImageSide(
            keys=keys,
            key_pe=key_pe,
            k=first.cross_attn_token_to_image.project_k(k),
            v=first.cross_attn_token_to_image.project_v(keys),
            q=first.cross_attn_image_to_token.project_q(k),
            hw=(image.shape[2], image.shape[3]),
        )

    def forward(
        self,
        image: torch.Tensor | None,
        image_pe: torch.Tensor | None,
        tokens: torch.Tensor,
        prepared: ImageSide | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe: (B, C, H, W); tokens: (B, N, C). Returns (tokens, image tokens (B, HW, C)).

        ``image`` may have batch 1 for B token sets (one image, many prompts): the first block's
        image side is then computed once and broadcast; its image update makes it per prompt.
        ``prepared`` (from :meth:`prepare_image`) replaces ``image`` and ``image_pe`` and skips
        even that once-per-call work (one image, many prompt batches). Same numbers either way.
        """
        if prepared is None:
            keys = image.flatten(2).permute(0, 2, 1)
            key_pe = image_pe.flatten(2).permute(0, 2, 1)
        else:
            keys, key_pe = prepared.keys, prepared.key_pe
        queries = tokens
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, tokens, key_pe, prepared if i == 0 else None)
        attn = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
