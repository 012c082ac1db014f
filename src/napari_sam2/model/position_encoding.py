"""Positional encodings: 2-D sine grids, random Fourier features, 1-D sine, axial RoPE."""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_sam2.errors import InputError


def _sine_frequencies(num_feats: int, temperature: float, device=None) -> torch.Tensor:
    # Pairs of channels share one frequency: channel 2k is sin, 2k+1 is cos.
    idx = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """[..., F] angles -> [..., F] with sin on even channels and cos on odd ones."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """Normalised 2-D sine encoding of a feature map's grid (DETR style).

    Depends only on the map's size, so results are cached per (H, W, device).
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise InputError("num_pos_feats must be even")
        self.num_feats = num_pos_feats // 2
        self.temperature = temperature
        self.scale = scale
        self._cache: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def grid(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width, str(device))
        if key not in self._cache:
            eps = 1e-6
            ys = torch.arange(1, height + 1, dtype=torch.float32, device=device)
            xs = torch.arange(1, width + 1, dtype=torch.float32, device=device)
            ys = ys / (ys[-1] + eps) * self.scale
            xs = xs / (xs[-1] + eps) * self.scale
            dim_t = _sine_frequencies(self.num_feats, self.temperature, device)
            pos_y = _interleave_sin_cos(ys[:, None] / dim_t)  # (H, F)
            pos_x = _interleave_sin_cos(xs[:, None] / dim_t)  # (W, F)
            pos = torch.cat(
                (pos_y[:, None, :].expand(height, width, -1), pos_x[None, :, :].expand(height, width, -1)),
                dim=-1,
            )
            self._cache[key] = pos.permute(2, 0, 1).contiguous()  # (2F, H, W)
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.grid(x.shape[-2], x.shape[-1], x.device)
        return pos[None].expand(x.shape[0], -1, -1, -1).to(x.dtype)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier-feature encoding of (x, y) positions in [0, 1]^2 (SAM prompt encoder)."""

    def __init__(self, num_pos_feats: int = 64) -> None:
        super().__init__()
        # Persistent buffer: it is part of the official checkpoints.
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def encode(self, coords01: torch.Tensor) -> torch.Tensor:
        proj = (2 * coords01 - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def dense(self, height: int, width: int) -> torch.Tensor:
        """(C, H, W) encoding of the centres of an H x W grid."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        grid = torch.stack((xs[None, :].expand(height, width), ys[:, None].expand(height, width)), dim=-1)
        return self.encode(grid).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates (..., 2) in (x, y) order for an image of size (H, W)."""
        # Divided by Python numbers, as Meta does: a tensor of the sizes made here each call would be
        # a copy from the host that a GPU's host waits for.
        xy = coords.float()
        return self.encode(torch.stack((xy[..., 0] / image_hw[1], xy[..., 1] / image_hw[0]), dim=-1))


def sine_encoding_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D sine/cosine encoding (Transformer paper layout: all sines, then all cosines)."""
    half = dim // 2
    dim_t = _sine_frequencies(half, temperature, positions.device)
    angles = positions.unsqueeze(-1) / dim_t
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def axial_rope_frequencies(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotations (end_x*end_y, dim/2) for 2-D axial rotary embeddings, row-major tokens."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles_x = torch.outer(t_x, freqs)
    angles_y = torch.outer(t_y, freqs)
    rot_x = torch.polar(torch.ones_like(angles_x), angles_x)
    rot_y = torch.polar(torch.ones_like(angles_y), angles_y)
    return torch.cat([rot_x, rot_y], dim=-1)


def apply_rope(x: torch.Tensor, rotations: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """Rotate channel pairs of x (B, heads, N, C) by ``rotations`` (N / repeat, C/2)."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    if repeat > 1:
        rotations = rotations.repeat(repeat, 1)
    out = torch.view_as_real(xc * rotations).flatten(-2)
    return out.type_as(x)
