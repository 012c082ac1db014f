"""Memory attention: conditions the current frame's features on memories of past frames."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    """Pre-norm block: RoPE self-attention, RoPE cross-attention to memory, ReLU MLP."""

    def __init__(
        self,
        d_model: int = 256,
        dim_feedforward: int = 2048,
        num_heads: int = 1,
        kv_in_dim: int = 64,
        rope_theta: float = 10000.0,
        feat_sizes: tuple[int, int] = (64, 64),
        pos_enc_at_cross_attn_keys: bool = True,
        pos_enc_at_cross_attn_queries: bool = False,
        pos_enc_at_attn: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads, rope_theta=rope_theta, feat_sizes=feat_sizes)
        self.cross_attn_image = RoPEAttention(
            d_model,
            num_heads,
            kv_in_dim=kv_in_dim,
            rope_theta=rope_theta,
            rope_k_repeat=True,
            feat_sizes=feat_sizes,
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        x = self.norm1(tgt)
        qk = x + query_pos if self.pos_enc_at_attn else x
        tgt = tgt + self.self_attn(qk, qk, x)

        x = self.norm2(tgt)
        tgt = tgt + self.cross_attn_image(
            x + query_pos if self.pos_enc_at_cross_attn_queries else x,
            memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            memory,
            num_k_exclude_rope=num_k_exclude_rope,
        )
        x = self.norm3(tgt)
        return tgt + self.linear2(F.relu(self.linear1(x)))


class MemoryAttention(nn.Module):
    def __init__(
        self, layer: MemoryAttentionLayer, num_layers: int, d_model: int = 256, pos_enc_at_input: bool = True
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        """All inputs batch-first: curr (B, HW, C), memory (B, M, Cm). Returns (B, HW, C)."""
        out = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        for layer in self.layers:
            out = layer(out, memory, memory_pos, curr_pos, num_k_exclude_rope=num_obj_ptr_tokens)
        return self.norm(out)
