"""Hiera image trunk (hierarchical ViT with windowed attention and query pooling).

Follows the design of Ryali et al. 2023 as used by SAM 2: a stride-4 patch embedding,
four stages whose first block halves the resolution by max-pooling the queries, windowed
attention except in a few global blocks, and a "windowed" absolute position embedding
(a tiled per-window table added to an interpolated background table).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from napari_sam2.errors import InputError

from .common import MLP, attention


def to_windows(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWin, size, size, C), zero-padding H and W up to multiples of size."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % size, (-w) % size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // size, size, wp // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size, size, c), (hp, wp)


def from_windows(
    windows: torch.Tensor, size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`to_windows`, cropping the padding."""
    hp, wp = padded_hw
    b = windows.shape[0] // ((hp // size) * (wp // size))
    x = windows.reshape(b, hp // size, wp // size, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    return x[:, : hw[0], : hw[1], :]


def _pool_nhwc(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, H, W, C)


class MultiScaleAttention(nn.Module):
    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # each (B, HW, heads, d)
        if self.q_pool is not None:
            q = _pool_nhwc(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        window_size: int,
        q_stride: tuple[int, int] | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = _pool_nhwc(shortcut, self.pool)

        window = self.window_size
        if window > 0:
            x, padded_hw = to_windows(x, window)
        x = self.attn(x)
        if window > 0:
            if self.q_stride:
                # Query pooling shrank every window by the stride.
                window //= self.q_stride[0]
                h, w = shortcut.shape[1:3]
                padded_hw = (h + (-h) % window, w + (-w) % window)
            x = from_windows(x, window, padded_hw, shortcut.shape[1:3])

        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    def __init__(
        self,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (2, 3, 16, 3),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size: Sequence[int] = (14, 14),
        q_pool: int = 3,
        q_stride: tuple[int, int] = (2, 2),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise InputError("stages and window_spec must have the same length")
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        q_pool_blocks = {end + 1 for end in self.stage_ends[:-1][:q_pool]}

        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))

        self.blocks = nn.ModuleList()
        stage = 0
        dim = embed_dim
        for i in range(sum(stages)):
            # The first block of a stage still uses the previous stage's window size
            # (its queries are pooled to the new resolution inside the block).
            window = 0 if i in global_att_blocks else window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out = int(dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    num_heads,
                    window_size=window,
                    q_stride=q_stride if i in q_pool_blocks else None,
                )
            )
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def _pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        reps = [p // w for p, w in zip(pos.shape, self.pos_embed_window.shape)]
        pos = pos + self.pos_embed_window.tile(reps)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Image (B, 3, H, W) -> one (B, C, h, w) map per stage, high resolution first."""
        x = self.patch_embed(x)
        x = x + self._pos_embed(x.shape[1:3])
        outputs = []
        ends = set(self.stage_ends)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
