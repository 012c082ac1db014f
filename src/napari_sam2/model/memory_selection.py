"""Which memories a tracked frame attends to: the reference's selection rules (conditioning
frames nearest first, the last ``num_maskmem - 1`` frames at the memory stride, object pointers
of the past frames), apart from the network since they hold no parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from napari_sam2.errors import InputError

from .config import TrackingConfig

__all__ = ["MemoryEntry", "select_closest_cond_frames", "select_memories"]


@dataclass
class MemoryEntry:
    """What later frames need from a tracked frame: its memory and its object pointer."""

    maskmem_features: torch.Tensor | None  # (B, mem_dim, 64, 64), stored as bfloat16 like the reference
    obj_ptr: torch.Tensor  # (B, C)


def select_memories(
    tracking: TrackingConfig,
    num_maskmem: int,
    frame_idx: int,
    cond_outputs: Mapping[int, MemoryEntry],
    non_cond_outputs: Mapping[int, MemoryEntry],
    num_frames: int,
    reverse: bool,
) -> tuple[list[tuple[int, MemoryEntry]], list[tuple[int, torch.Tensor]]]:
    """Which memories and object pointers a frame attends to (the reference's selection rules).

    Returns ``[(t_pos, entry)]`` for spatial memories (t_pos 0 = conditioning frame) and
    ``[(signed temporal distance, obj_ptr)]`` for pointers.
    """
    tr = tracking
    selected, unselected = select_closest_cond_frames(frame_idx, cond_outputs, tr.max_cond_frames_in_attn)
    memories: list[tuple[int, MemoryEntry]] = [(0, out) for out in selected.values()]
    stride = tr.memory_temporal_stride_for_eval
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos  # frames before the current one
        if t_rel == 1:
            prev = frame_idx + 1 if reverse else frame_idx - 1
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        out = non_cond_outputs.get(prev)
        if out is None:
            out = unselected.get(prev)
        if out is not None:
            memories.append((t_pos, out))

    pointers: list[tuple[int, torch.Tensor]] = []
    if tr.use_obj_ptrs_in_encoder:
        max_ptrs = min(num_frames, tr.max_obj_ptrs_in_encoder)
        if tr.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {t: o for t, o in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
        else:
            ptr_cond = selected
        sign = -1 if reverse else 1
        for t, out in ptr_cond.items():
            dist = (frame_idx - t) * sign if tr.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t)
            pointers.append((dist, out.obj_ptr))
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if reverse else frame_idx - t_diff
            if t < 0 or t >= num_frames:
                break
            out = non_cond_outputs.get(t, unselected.get(t))
            if out is not None:
                pointers.append((t_diff, out.obj_ptr))
    return memories, pointers


def select_closest_cond_frames(
    frame_idx: int, cond_outputs: Mapping[int, MemoryEntry], max_num: int
) -> tuple[dict[int, MemoryEntry], dict[int, MemoryEntry]]:
    """Up to ``max_num`` conditioning frames nearest to ``frame_idx`` (-1: all of them).

    Always keeps the closest one before and the closest one at/after the frame.
    """
    if max_num == -1 or len(cond_outputs) <= max_num:
        return dict(cond_outputs), {}
    if max_num < 2:
        raise InputError("max_cond_frames_in_attn must allow at least 2 conditioning frames")
    selected: dict[int, MemoryEntry] = {}
    before = max((t for t in cond_outputs if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond_outputs[before]
    after = min((t for t in cond_outputs if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond_outputs[after]
    rest = sorted((t for t in cond_outputs if t not in selected), key=lambda t: abs(t - frame_idx))
    for t in rest[: max_num - len(selected)]:
        selected[t] = cond_outputs[t]
    unselected = {t: v for t, v in cond_outputs.items() if t not in selected}
    return selected, unselected
