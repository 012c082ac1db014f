"""Small layers shared by several SAM 2 components."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """A stack of Linear layers with an activation between them (none after the last).

    Parameters are named ``layers.{i}`` to match the official checkpoints.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


# Scores held at once by the CPU bf16 attention path (32 MiB of bf16).
_CPU_BF16_SCORE_ELEMS = 1 << 24


def _cpu_bf16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    if q.device.type != "cpu":
        return False
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return True
    return torch.bfloat16 in (q.dtype, k.dtype, v.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention over (..., L, D) tensors, like ``F.scaled_dot_product_attention``.

    In bfloat16 on a CPU, PyTorch's fused kernel is no faster than in float32 (measured on
    AVX-512-BF16 cores), while plain bf16 matrix products run twice as fast as float32
    ones. There the scores come from bf16 matrix products and a softmax (computed in float32
    inside the kernel, stored in bf16), in blocks of queries that bound the memory held.
    Everywhere else (float32, GPUs) the fused kernel runs.
    """
    if not _cpu_bf16(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)
    q, k, v = q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)
    q = q * q.shape[-1] ** -0.5
    k_t = k.transpose(-2, -1)
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    rows = max(1, _CPU_BF16_SCORE_ELEMS // max(1, k.shape[-2] * q.shape[:-2].numel()))
    for start in range(0, q.shape[-2], rows):
        scores = torch.matmul(q[..., start : start + rows, :], k_t)
        out[..., start : start + rows, :] = torch.matmul(torch.softmax(scores, dim=-1), v)
    return out
