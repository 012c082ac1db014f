"""Components of the SAM 2 network against explicit formulas and hand-made inputs.

Every expected value here is computed independently of the implementation: by explicit
loops, by the formulas of Meta's reference modules (restated here from its code), or by
hand. Models are small random configurations (a 64-pixel SAM2Model builds and runs in
milliseconds), so the whole file runs in a few seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_sam2.model import MemoryEntry, SAM2Model, load_config
from napari_sam2.model.config import MemoryAttentionConfig, MemoryEncoderConfig, NeckConfig, TrunkConfig
from napari_sam2.model.hiera import Hiera, MultiScaleBlock, from_windows, to_windows
from napari_sam2.model.mask_decoder import DecoderOutput, MaskDecoder
from napari_sam2.model.memory_selection import select_closest_cond_frames
from napari_sam2.model.position_encoding import (
    PositionEmbeddingRandom,
    PositionEmbeddingSine,
    apply_rope,
    axial_rope_frequencies,
    sine_encoding_1d,
)
from napari_sam2.model.prompt_encoder import PromptEncoder
from napari_sam2.model.sam2 import NO_OBJ_SCORE, apply_non_overlapping_constraints
from napari_sam2.model.transformer import Attention, RoPEAttention, TwoWayTransformer

ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread start-up and contention would dominate (100x slower on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- helpers
def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter/buffer with distinct random values (defaults are often 0 or 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            z = torch.randn(t.shape, generator=g)
            if t.dim() >= 2:
                z = z * 1.5 / math.sqrt(t[0].numel())
            elif name.endswith("bias"):
                z = 0.1 * z
            t.copy_(z)
    return module.eval()


def mini_config(family: str = "sam2.1", **tracking):
    """A SAM 2 / 2.1 config shrunk to a 64-pixel image, 32-wide features and 8-wide memories.

    The stage layout keeps every rule of the real configs: stage-start blocks use the
    previous stage's window and pool their queries, one global block, and windows that
    need padding (6 on a 4 x 4 map).
    """
    cfg = load_config(f"{family}_hiera_t")
    cfg = dataclasses.replace(
        cfg,
        image_size=64,
        trunk=TrunkConfig(
            embed_dim=8,
            num_heads=1,
            stages=(1, 2, 2, 2),
            global_att_blocks=(2,),
            window_spec=(4, 2, 6, 2),
            window_pos_embed_bkg_spatial_size=(2, 2),
        ),
        neck=NeckConfig(
            d_model=32,
            backbone_channel_list=(64, 32, 16, 8),
            fpn_top_down_levels=(2, 3),
            fpn_interp_model="nearest",
            scalp=1,
        ),
        memory_attention=MemoryAttentionConfig(
            num_layers=2, dim_feedforward=64, num_heads=1, rope_theta=10000.0, feat_sizes=(4, 4)
        ),
        memory_encoder=MemoryEncoderConfig(out_dim=8, num_fuser_layers=2),
    )
    if tracking:
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, **tracking))
    return cfg


def mini_model(family: str = "sam2.1", seed: int = 0, **tracking) -> SAM2Model:
    return randomize(SAM2Model(mini_config(family, **tracking)), seed)


def meta_model(name: str = "sam2.1_hiera_t", **tracking) -> SAM2Model:
    """Full-size model on the meta device: free to build, for the pure bookkeeping methods."""
    return _meta_model(name, tuple(sorted(tracking.items())))


@functools.cache
def _meta_model(name: str, tracking: tuple) -> SAM2Model:
    tracking = dict(tracking)
    cfg = load_config(name)
    if tracking:
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, **tracking))
    with torch.device("meta"):
        return SAM2Model(cfg)


def manual_attention(
    mod: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotate=None
) -> torch.Tensor:
    """Multi-head attention with explicit projections and softmax (Meta's Attention)."""
    Q = q @ mod.q_proj.weight.T + mod.q_proj.bias
    K = k @ mod.k_proj.weight.T + mod.k_proj.bias
    V = v @ mod.v_proj.weight.T + mod.v_proj.bias
    h = mod.num_heads
    b, nq, c = Q.shape
    d = c // h
    Q = Q.reshape(b, nq, h, d).transpose(1, 2)
    K = K.reshape(b, K.shape[1], h, d).transpose(1, 2)
    V = V.reshape(b, V.shape[1], h, d).transpose(1, 2)
    if rotate is not None:
        Q, K = rotate(Q, K)
    w = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (w @ V).transpose(1, 2).reshape(b, nq, c)
    return out @ mod.out_proj.weight.T + mod.out_proj.bias


def rotate_pairs(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2k, 2k+1) of x (..., N, C) by angles (N, C/2), written out in reals."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = torch.cos(angles), torch.sin(angles)
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)


def rope_angles(dim: int, side: int, theta: float = 10000.0) -> torch.Tensor:
    """Axial RoPE angles (side*side, dim/2): first dim/4 pairs rotate with x, the rest with y."""
    n = side * side
    out = torch.zeros(n, dim // 2, dtype=torch.float64)
    for tok in range(n):
        x, y = tok % side, tok // side
        for k in range(dim // 4):
            freq = theta ** (-(4 * k) / dim)
            out[tok, k] = x * freq
            out[tok, dim // 4 + k] = y * freq
    return out.float()


def sine_1d(positions: list[float], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    rows = []
    for p in positions:
        s = [math.sin(p / temperature ** (2 * (k // 2) / half)) for k in range(half)]
        c = [math.cos(p / temperature ** (2 * (k // 2) / half)) for k in range(half)]
        rows.append(s + c)
    return torch.tensor(rows, dtype=torch.float32)


def sine_2d(num_pos_feats: int, h: int, w: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR-style normalised sine grid (C, H, W), channel by channel, as Meta's PositionEmbeddingSine."""
    nf = num_pos_feats // 2
    eps, scale = 1e-6, 2 * math.pi
    out = torch.zeros(2 * nf, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            y = (i + 1) / (h + eps) * scale
            x = (j + 1) / (w + eps) * scale
            for k in range(nf):
                dim_t = temperature ** (2 * (k // 2) / nf)
                f = math.sin if k % 2 == 0 else math.cos
                out[k, i, j] = f(y / dim_t)
                out[nf + k, i, j] = f(x / dim_t)
    return out.float()


def entry(t: int, dim: int = 4) -> MemoryEntry:
    """A memory whose pointer encodes its frame index, to identify selections."""
    return MemoryEntry(maskmem_features=None, obj_ptr=torch.full((1, dim), float(t)))


def ptr_frames(pointers) -> list[tuple[int, int]]:
    return [(d, int(p[0, 0].item())) for d, p in pointers]


def mem_frames(memories) -> list[tuple[int, int]]:
    return [(t_pos, int(e.obj_ptr[0, 0].item())) for t_pos, e in memories]


# ----------------------------------------------------------------------------- Hiera windows
def test_to_windows_pads_with_zeros_and_orders_windows_row_major():
    x = torch.randn(2, 7, 10, 3)
    wins, padded = to_windows(x, 4)
    assert padded == (8, 12)
    assert wins.shape == (2 * 2 * 3, 4, 4, 3)
    xp = torch.zeros(2, 8, 12, 3)
    xp[:, :7, :10] = x
    k = 0
    for b in range(2):
        for r in range(2):
            for c in range(3):
                assert torch.equal(wins[k], xp[b, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4]), (b, r, c)
                k += 1
    assert torch.equal(from_windows(wins, 4, padded, (7, 10)), x)


def test_windows_round_trip_without_padding():
    x = torch.randn(1, 8, 8, 5)
    wins, padded = to_windows(x, 4)
    assert padded == (8, 8) and wins.shape == (4, 4, 4, 5)
    assert torch.equal(from_windows(wins, 4, padded, (8, 8)), x)


def _manual_block(blk: MultiScaleBlock, x: torch.Tensor) -> torch.Tensor:
    """Meta's MultiScaleBlock by explicit loops: norm, zero-pad, per-window attention with
    max-pooled queries, un-pad, residual (projected and pooled when the width changes), MLP."""
    B, H, W, C = x.shape
    attn = blk.attn
    heads = attn.num_heads
    dim_out = blk.dim_out
    hd = dim_out // heads
    xn = blk.norm1(x)
    stride = blk.q_stride[0] if blk.q_stride else 1
    shortcut = x
    if blk.dim != dim_out:
        shortcut = blk.proj(xn)
        if blk.q_stride:
            shortcut = F.max_pool2d(shortcut.permute(0, 3, 1, 2), stride).permute(0, 2, 3, 1)
    ws = blk.window_size if blk.window_size > 0 else max(H, W)
    if blk.window_size == 0:
        assert H == W, "global attention handled as one square window in this helper"
    hp, wp = -(-H // ws) * ws, -(-W // ws) * ws
    xp = torch.zeros(B, hp, wp, C)
    xp[:, :H, :W] = xn
    wo = ws // stride
    out = torch.zeros(B, hp // stride, wp // stride, dim_out)
    for b in range(B):
        for r in range(hp // ws):
            for c in range(wp // ws):
                tok = xp[b, r * ws : (r + 1) * ws, c * ws : (c + 1) * ws]  # (ws, ws, C)
                qkv = tok @ attn.qkv.weight.T + attn.qkv.bias  # (ws, ws, 3*dim_out)
                q, k, v = qkv[..., :dim_out], qkv[..., dim_out : 2 * dim_out], qkv[..., 2 * dim_out :]
                if stride > 1:
                    q = F.max_pool2d(q.permute(2, 0, 1)[None], stride)[0].permute(1, 2, 0)
                q = q.reshape(-1, heads, hd)
                k = k.reshape(-1, heads, hd)
                v = v.reshape(-1, heads, hd)
                o = []
                for h in range(heads):
                    w = torch.softmax(q[:, h] @ k[:, h].T / math.sqrt(hd), dim=-1)
                    o.append(w @ v[:, h])
                o = torch.cat(o, dim=-1) @ attn.proj.weight.T + attn.proj.bias
                out[b, r * wo : (r + 1) * wo, c * wo : (c + 1) * wo] = o.reshape(wo, wo, dim_out)
    out = out[:, : shortcut.shape[1], : shortcut.shape[2]]
    y = shortcut + out
    return y + blk.mlp(blk.norm2(y))


@pytest.mark.parametrize(
    "dim, dim_out, heads, window, q_stride, hw",
    [
        (8, 8, 2, 3, None, (5, 7)),  # padded windows, no pooling
        (8, 8, 1, 4, None, (8, 8)),  # exact tiling
        (8, 16, 2, 4, (2, 2), (6, 6)),  # stage start: width doubles, queries pooled, padded
        (8, 16, 2, 0, (2, 2), (4, 4)),  # global attention at a stage start
        (8, 8, 2, 0, None, (5, 5)),  # global attention
    ],
)
def test_multiscale_block_matches_explicit_window_attention(dim, dim_out, heads, window, q_stride, hw):
    torch.manual_seed(0)
    blk = randomize(MultiScaleBlock(dim, dim_out, heads, window_size=window, q_stride=q_stride), seed=1)
    x = torch.randn(2, *hw, dim)
    with torch.no_grad():
        got = blk(x)
        want = _manual_block(blk, x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)


def test_hiera_layout_shapes_and_channel_list():
    trunk = Hiera(
        embed_dim=8,
        num_heads=1,
        stages=(1, 2, 2, 2),
        global_att_blocks=(2,),
        window_spec=(4, 2, 6, 2),
        window_pos_embed_bkg_spatial_size=(2, 2),
    )
    # Meta's rule: a stage's first block keeps the previous stage's window (0 if global)
    # and pools its queries; widths and heads double at each stage start.
    assert [b.window_size for b in trunk.blocks] == [4, 4, 0, 2, 6, 6, 2]
    assert [b.q_stride is not None for b in trunk.blocks] == [False, True, False, True, False, True, False]
    assert [b.dim_out for b in trunk.blocks] == [8, 16, 16, 32, 32, 64, 64]
    assert [b.attn.num_heads for b in trunk.blocks] == [1, 2, 2, 4, 4, 8, 8]
    assert trunk.channel_list == [64, 32, 16, 8]
    randomize(trunk, 3)
    with torch.no_grad():
        outs = trunk(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]


def test_hiera_forward_chains_patch_embed_pos_embed_and_blocks():
    trunk = randomize(
        Hiera(
            embed_dim=8,
            num_heads=1,
            stages=(1, 2, 2, 2),
            global_att_blocks=(2,),
            window_spec=(4, 2, 6, 2),
            window_pos_embed_bkg_spatial_size=(2, 2),
        ),
        4,
    )
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = trunk(img)
        # position embedding: bicubic background + window table tiled with period 4
        bkg = F.interpolate(trunk.pos_embed, size=(16, 16), mode="bicubic")[0]
        win = trunk.pos_embed_window[0]
        x = F.conv2d(img, trunk.patch_embed.proj.weight, trunk.patch_embed.proj.bias, stride=4, padding=3)[0]
        for i in (0, 5, 15):
            for j in (0, 7, 12):
                pos = bkg[:, i, j] + win[:, i % 4, j % 4]
                torch.testing.assert_close(trunk._pos_embed((16, 16))[0, i, j], pos)
        x = (x + bkg + win.repeat(1, 4, 4)).permute(1, 2, 0)[None]
        want = []
        for i, blk in enumerate(trunk.blocks):
            x = _manual_block(blk, x)
            if i in (0, 2, 4, 6):
                want.append(x.permute(0, 3, 1, 2))
    for o, w in zip(outs, want):
        torch.testing.assert_close(o, w, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- position encodings
def test_position_embedding_sine_matches_formula():
    pe = PositionEmbeddingSine(8)
    got = pe(torch.zeros(2, 5, 3, 5))
    assert got.shape == (2, 8, 3, 5)
    want = sine_2d(8, 3, 5)
    torch.testing.assert_close(got[0], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], want, atol=1e-6, rtol=0)
    # the cache must be keyed by size
    torch.testing.assert_close(pe(torch.zeros(1, 1, 4, 2))[0], sine_2d(8, 4, 2), atol=1e-6, rtol=0)


def test_position_embedding_random_dense_and_points():
    pe = randomize(PositionEmbeddingRandom(6), 5)
    G = pe.positional_encoding_gaussian_matrix

    def enc(x01, y01):
        proj = 2 * math.pi * ((2 * torch.tensor([x01, y01]) - 1) @ G)
        return torch.cat([proj.sin(), proj.cos()])

    dense = pe.dense(3, 4)  # (C, H, W)
    assert dense.shape == (12, 3, 4)
    for i in range(3):
        for j in range(4):
            torch.testing.assert_close(dense[:, i, j], enc((j + 0.5) / 4, (i + 0.5) / 3))
    # points are (x, y) pixels of an (H, W) image: x is divided by W, y by H
    pts = torch.tensor([[[10.0, 30.0], [0.0, 0.0]]])
    out = pe.points(pts, (40, 20))
    torch.testing.assert_close(out[0, 0], enc(10 / 20, 30 / 40))
    torch.testing.assert_close(out[0, 1], enc(0.0, 0.0))


def test_sine_encoding_1d_matches_formula():
    pos = [0.0, 0.25, -0.5, 1.0, 3.0]
    torch.testing.assert_close(sine_encoding_1d(torch.tensor(pos), 16), sine_1d(pos, 16), atol=1e-6, rtol=0)


def test_axial_rope_frequencies_match_formula():
    rot = axial_rope_frequencies(16, 3, 3)
    assert rot.shape == (9, 8) and rot.is_complex()
    ang = rope_angles(16, 3)
    torch.testing.assert_close(torch.angle(rot), torch.atan2(torch.sin(ang), torch.cos(ang)))
    torch.testing.assert_close(rot.abs(), torch.ones(9, 8))


def test_apply_rope_is_the_complex_rotation_of_channel_pairs_and_preserves_norms():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 16)
    rot = axial_rope_frequencies(16, 3, 3)
    out = apply_rope(x, rot)
    torch.testing.assert_close(out, rotate_pairs(x, rope_angles(16, 3)), atol=1e-5, rtol=0)
    pair_norm = lambda t: t.reshape(*t.shape[:-1], -1, 2).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(x), atol=1e-5, rtol=0)
    # repeat: keys of several frames share the same table
    k = torch.randn(1, 1, 27, 16)
    out = apply_rope(k, rot, repeat=3)
    for r in range(3):
        block = slice(9 * r, 9 * r + 9)
        want = rotate_pairs(k[..., block, :], rope_angles(16, 3))
        torch.testing.assert_close(out[..., block, :], want, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("heads, downsample, kv_in", [(1, 1, None), (4, 1, None), (2, 2, None), (2, 1, 6)])
def test_attention_matches_manual_softmax(heads, downsample, kv_in):
    torch.manual_seed(0)
    attn = randomize(Attention(16, heads, downsample_rate=downsample, kv_in_dim=kv_in), 2)
    q = torch.randn(2, 5, 16)
    k = torch.randn(2, 7, kv_in or 16)
    v = torch.randn(2, 7, kv_in or 16)
    with torch.no_grad():
        torch.testing.assert_close(attn(q, k, v), manual_attention(attn, q, k, v), atol=ATOL, rtol=1e-4)


def test_rope_attention_rotates_queries_and_repeated_keys_but_not_excluded_tokens():
    torch.manual_seed(0)
    dim, side, frames, n_ptr = 32, 4, 2, 4
    attn = randomize(RoPEAttention(dim, 2, kv_in_dim=8, rope_k_repeat=True, feat_sizes=(side, side)), 3)
    n = side * side
    q = torch.randn(1, n, dim)
    k = torch.randn(1, frames * n + n_ptr, 8)
    v = torch.randn(1, frames * n + n_ptr, 8)
    ang = rope_angles(dim // 2, side)  # per-head dim 16

    def rotate(Q, K, exclude=n_ptr):
        Qr = rotate_pairs(Q, ang)
        n_rope = K.shape[-2] - exclude
        Kr = torch.cat(
            [rotate_pairs(K[..., :n_rope, :], ang.repeat(n_rope // n, 1)), K[..., n_rope:, :]], dim=-2
        )
        return Qr, Kr

    with torch.no_grad():
        got = attn(q, k, v, num_k_exclude_rope=n_ptr)
        want = manual_attention(attn, q, k, v, rotate=rotate)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)
        # sanity: the rotation matters (unrotated keys give another result)
        only_q = manual_attention(attn, q, k, v, rotate=lambda Q, K: (rotate_pairs(Q, ang), K))
        assert not torch.allclose(got, only_q, atol=1e-3)
        # without excluded tokens, every key is rotated
        got0 = attn(q, k[:, : frames * n], v[:, : frames * n])
        want0 = manual_attention(
            attn, q, k[:, : frames * n], v[:, : frames * n], rotate=lambda Q, K: rotate(Q, K, exclude=0)
        )
        torch.testing.assert_close(got0, want0, atol=ATOL, rtol=1e-4)


def test_rope_self_attention_needs_equal_lengths_without_k_repeat():
    attn = RoPEAttention(16, 1, rope_k_repeat=False, feat_sizes=(2, 2))
    with pytest.raises(ValueError):
        attn(torch.randn(1, 4, 16), torch.randn(1, 8, 16), torch.randn(1, 8, 16))


def _manual_two_way(t: TwoWayTransformer, image, image_pe, tokens):
    """Meta's TwoWayTransformer / TwoWayAttentionBlock, step by step."""
    keys = image.flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    queries = tokens
    for blk in t.layers:
        if blk.skip_first_layer_pe:
            queries = manual_attention(blk.self_attn, queries, queries, queries)
        else:
            q = queries + tokens
            queries = queries + manual_attention(blk.self_attn, q, q, queries)
        queries = blk.norm1(queries)
        q, k = queries + tokens, keys + key_pe
        queries = blk.norm2(queries + manual_attention(blk.cross_attn_token_to_image, q, k, keys))
        l1, l2 = blk.mlp.layers
        queries = blk.norm3(queries + l2(torch.relu(l1(queries))))
        q, k = queries + tokens, keys + key_pe
        keys = blk.norm4(keys + manual_attention(blk.cross_attn_image_to_token, k, q, queries))
    q, k = queries + tokens, keys + key_pe
    queries = t.norm_final_attn(queries + manual_attention(t.final_attn_token_to_image, q, k, keys))
    return queries, keys


def test_two_way_transformer_matches_manual_implementation():
    torch.manual_seed(0)
    t = randomize(TwoWayTransformer(depth=2, embedding_dim=16, num_heads=2, mlp_dim=32), 4)
    assert [b.skip_first_layer_pe for b in t.layers] == [True, False]
    image = torch.randn(2, 16, 3, 4)
    pe = torch.randn(2, 16, 3, 4)
    tokens = torch.randn(2, 5, 16)
    with torch.no_grad():
        q, k = t(image, pe, tokens)
        mq, mk = _manual_two_way(t, image, pe, tokens)
    torch.testing.assert_close(q, mq, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(k, mk, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- prompt encoder
@pytest.fixture(scope="module")
def prompt_encoder():
    # non-square input frame: x must be divided by W (48), y by H (32)
    return randomize(PromptEncoder(16, (2, 3), (32, 48)), 6)


def test_prompt_encoder_point_embedding(prompt_encoder):
    pe = prompt_encoder
    G = pe.pe_layer.positional_encoding_gaussian_matrix

    def pos(x, y):  # pixel (x, y) -> encoding of its centre
        proj = 2 * math.pi * ((2 * torch.tensor([(x + 0.5) / 48, (y + 0.5) / 32]) - 1) @ G)
        return torch.cat([proj.sin(), proj.cos()])

    coords = torch.tensor([[[3.0, 7.0], [40.0, 2.0], [10.0, 30.0], [0.0, 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[1, 0, 2, 3, -1]], dtype=torch.int32)
    with torch.no_grad():
        sparse, dense = pe((coords, labels), None)
    assert sparse.shape == (1, 6, 16)  # a padding point is appended
    w = [e.weight[0] for e in pe.point_embeddings]
    torch.testing.assert_close(sparse[0, 0], pos(3, 7) + w[1])
    torch.testing.assert_close(sparse[0, 1], pos(40, 2) + w[0])
    torch.testing.assert_close(sparse[0, 2], pos(10, 30) + w[2])
    torch.testing.assert_close(sparse[0, 3], pos(0, 0) + w[3])
    # label -1 (a user's padding point) and the appended pad: not_a_point_embed only, no position
    torch.testing.assert_close(sparse[0, 4], pe.not_a_point_embed.weight[0])
    torch.testing.assert_close(sparse[0, 5], pe.not_a_point_embed.weight[0])
    # no mask: no_mask_embed everywhere on the (2, 3) embedding grid
    assert dense.shape == (1, 16, 2, 3)
    torch.testing.assert_close(dense, pe.no_mask_embed.weight.reshape(1, 16, 1, 1).expand(1, 16, 2, 3))


def test_prompt_encoder_mask_and_empty_prompts(prompt_encoder):
    pe = prompt_encoder
    assert pe.mask_input_size == (8, 12)
    masks = torch.randn(2, 1, 8, 12)
    with torch.no_grad():
        sparse, dense = pe(None, masks)
        assert sparse.shape == (2, 0, 16)
        torch.testing.assert_close(dense, pe.mask_downscaling(masks))
        sparse, dense = pe(None, None, batch_size=3)
    assert sparse.shape == (3, 0, 16) and dense.shape == (3, 16, 2, 3)


def test_prompt_encoder_dense_pe_is_the_grid_of_pixel_centres(prompt_encoder):
    pe = prompt_encoder
    got = pe.get_dense_pe()
    assert got.shape == (1, 16, 2, 3)
    torch.testing.assert_close(got[0], pe.pe_layer.dense(2, 3))
    G = pe.pe_layer.positional_encoding_gaussian_matrix
    proj = 2 * math.pi * ((2 * torch.tensor([2.5 / 3, 0.5 / 2]) - 1) @ G)
    torch.testing.assert_close(got[0, :, 0, 2], torch.cat([proj.sin(), proj.cos()]))


# ----------------------------------------------------------------------------- mask decoder
@pytest.fixture(scope="module")
def decoder():
    return MaskDecoder(transformer_dim=32).eval()


def test_stability_scores_by_hand(decoder):
    logits = torch.full((1, 4, 10, 10), -1.0)
    # mask 0: 40 pixels > +0.05, 10 more in (-0.05, 0.05]: 40 / 50
    logits[0, 0, :4] = 1.0
    logits[0, 0, 4, :] = 0.01
    # mask 1: 30 pixels at +1 and 20 at -0.04: 30 / 50
    logits[0, 1, :3] = 1.0
    logits[0, 1, 3:5] = -0.04
    # mask 2: empty at both thresholds -> 1
    # mask 3: everything confidently on -> 1
    logits[0, 3] = 2.0
    got = decoder.stability_scores(logits)
    torch.testing.assert_close(got, torch.tensor([[0.8, 0.6, 1.0, 1.0]]))


def test_dynamic_fallback_picks_best_multimask_output_when_single_mask_is_unstable(decoder):
    masks = torch.full((2, 4, 8, 8), -5.0)
    masks[:, 0, :4] = 5.0  # stable single masks (score 1)...
    masks[1, 0, 4:6] = 0.0  # ...except in item 1: 32 / 48 < 0.98
    for i in range(1, 4):
        masks[:, i, i] = float(i)  # distinguishable multimask outputs
    iou = torch.tensor([[0.5, 0.1, 0.9, 0.2], [0.5, 0.3, 0.1, 0.8]])
    out_m, out_i = decoder._stable_single_mask(masks, iou)
    assert out_m.shape == (2, 1, 8, 8) and out_i.shape == (2, 1)
    torch.testing.assert_close(out_m[0, 0], masks[0, 0])  # stable: the single-mask token's output
    torch.testing.assert_close(out_i[0], iou[0, :1])
    torch.testing.assert_close(out_m[1, 0], masks[1, 3])  # unstable: best IoU among outputs 1..3
    torch.testing.assert_close(out_i[1], iou[1, 3:])


def test_decoder_output_selection(decoder, monkeypatch):
    b = 2
    masks = torch.rand(b, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.08 - 0.04  # all unstable
    iou = torch.tensor([[0.5, 0.1, 0.9, 0.2], [0.5, 0.7, 0.1, 0.3]])
    tokens = torch.arange(b * 4 * 32, dtype=torch.float32).reshape(b, 4, 32)
    obj = torch.tensor([[1.0], [-2.0]])
    monkeypatch.setattr(decoder, "predict_masks", lambda *a, **k: (masks, iou, tokens, obj))
    args = (None, None, None, None)
    out = decoder(*args, multimask_output=True, repeat_image=False)
    assert isinstance(out, DecoderOutput)
    torch.testing.assert_close(out.masks, masks[:, 1:])
    torch.testing.assert_close(out.iou_pred, iou[:, 1:])
    torch.testing.assert_close(out.sam_tokens, tokens[:, 1:])  # multimask tokens serve as pointers
    torch.testing.assert_close(out.object_score_logits, obj)
    out = decoder(*args, multimask_output=False, repeat_image=False)
    torch.testing.assert_close(out.masks[:, 0], masks[[0, 1], [2, 1]])  # fallback in eval mode
    torch.testing.assert_close(out.sam_tokens, tokens[:, :1])
    decoder.train()
    try:
        out = decoder(*args, multimask_output=False, repeat_image=False)
        torch.testing.assert_close(out.masks, masks[:, :1])  # no fallback while training
    finally:
        decoder.eval()


# ----------------------------------------------------------------------------- conditioning frames
def test_select_closest_cond_frames():
    cond = {t: entry(t) for t in (0, 3, 7, 12, 20)}
    sel, unsel = select_closest_cond_frames(10, cond, -1)
    assert sorted(sel) == [0, 3, 7, 12, 20] and unsel == {}
    sel, unsel = select_closest_cond_frames(10, cond, 5)
    assert sorted(sel) == [0, 3, 7, 12, 20] and unsel == {}
    # closest before (7), closest at/after (12), then the nearest of the rest (3)
    sel, unsel = select_closest_cond_frames(10, cond, 3)
    assert sorted(sel) == [3, 7, 12] and sorted(unsel) == [0, 20]
    assert sel[7] is cond[7] and unsel[0] is cond[0]
    sel, unsel = select_closest_cond_frames(10, cond, 2)
    assert sorted(sel) == [7, 12]
    # a conditioning frame at the current index counts as "after"
    sel, _ = select_closest_cond_frames(7, cond, 2)
    assert sorted(sel) == [3, 7]
    # nothing before: the remaining slots go to the nearest ones after
    sel, _ = select_closest_cond_frames(0, {t: entry(t) for t in (2, 5, 9)}, 2)
    assert sorted(sel) == [2, 5]
    sel, _ = select_closest_cond_frames(30, cond, 3)
    assert sorted(sel) == [7, 12, 20]
    with pytest.raises(ValueError):
        select_closest_cond_frames(10, cond, 1)


# ----------------------------------------------------------------------------- memory selection
def test_select_memories_forward():
    model = meta_model("sam2.1_hiera_t")
    cond = {0: entry(0)}
    non_cond = {t: entry(t) for t in range(1, 10)}
    mems, ptrs = model.select_memories(10, cond, non_cond, num_frames=20, reverse=False)
    # t_pos 0: conditioning frames; t_pos 1..6: frames 4..9 (t_pos 6 is the previous frame)
    assert mem_frames(mems) == [(0, 0), (1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9)]
    # pointers: the conditioning frame at signed distance 10, then frames 9..1 at 1..9
    assert ptr_frames(ptrs) == [(10, 0)] + [(d, 10 - d) for d in range(1, 10)]


def test_select_memories_reverse():
    model = meta_model("sam2.1_hiera_t")
    cond = {19: entry(19)}
    non_cond = {t: entry(t) for t in range(6, 19)}
    mems, ptrs = model.select_memories(5, cond, non_cond, num_frames=20, reverse=True)
    assert mem_frames(mems) == [(0, 19), (1, 11), (2, 10), (3, 9), (4, 8), (5, 7), (6, 6)]
    # signed distance of a "past" (later) conditioning frame in reverse is positive
    assert ptr_frames(ptrs) == [(14, 19)] + [(d, 5 + d) for d in range(1, 14)]


def test_select_memories_only_past_pointers_and_signed_distances():
    cond = {0: entry(0), 15: entry(15)}
    non_cond = {t: entry(t) for t in range(8, 10)}
    model = meta_model("sam2.1_hiera_t")
    mems, ptrs = model.select_memories(10, cond, non_cond, num_frames=20, reverse=False)
    # both conditioning frames are memories, only the past one gives a pointer
    assert mem_frames(mems) == [(0, 0), (0, 15), (5, 8), (6, 9)]
    assert ptr_frames(ptrs) == [(10, 0), (1, 9), (2, 8)]
    model = meta_model("sam2.1_hiera_t", only_obj_ptrs_in_the_past_for_eval=False)
    _, ptrs = model.select_memories(10, cond, non_cond, num_frames=20, reverse=False)
    assert ptr_frames(ptrs) == [(10, 0), (-5, 15), (1, 9), (2, 8)]
    # SAM 2.0: unsigned distances
    model = meta_model("sam2_hiera_t", only_obj_ptrs_in_the_past_for_eval=False)
    _, ptrs = model.select_memories(10, cond, non_cond, num_frames=20, reverse=False)
    assert ptr_frames(ptrs) == [(10, 0), (5, 15), (1, 9), (2, 8)]
    _, ptrs = model.select_memories(10, cond, non_cond, num_frames=20, reverse=True)
    assert ptr_frames(ptrs) == [(10, 0), (5, 15)]  # no tracked frames after 10
    model = meta_model("sam2.1_hiera_t", only_obj_ptrs_in_the_past_for_eval=False)
    _, ptrs = model.select_memories(10, cond, non_cond, num_frames=20, reverse=True)
    assert ptr_frames(ptrs) == [(-10, 0), (5, 15)]


def test_select_memories_with_limited_cond_frames():
    model = meta_model("sam2.1_hiera_t", max_cond_frames_in_attn=2)
    cond = {5: entry(5), 8: entry(8), 30: entry(30)}
    non_cond = {t: entry(t) for t in (4, 6, 7, 9)}
    mems, ptrs = model.select_memories(10, cond, non_cond, num_frames=40, reverse=False)
    # frames 8 (before) and 30 (after) are selected; the unselected frame 5 serves as an
    # ordinary memory at its temporal slot, and as a pointer
    assert mem_frames(mems) == [(0, 8), (0, 30), (1, 4), (2, 5), (3, 6), (4, 7), (6, 9)]
    assert ptr_frames(ptrs) == [(2, 8), (1, 9), (3, 7), (4, 6), (5, 5), (6, 4)]


def test_select_memories_temporal_stride():
    model = meta_model("sam2.1_hiera_t", memory_temporal_stride_for_eval=2)
    non_cond = {t: entry(t) for t in range(30)}
    mems, _ = model.select_memories(10, {40: entry(40)}, non_cond, num_frames=50, reverse=False)
    # previous frame, then multiples of the stride going back
    assert mem_frames(mems)[1:] == [(1, 0), (2, 2), (3, 4), (4, 6), (5, 8), (6, 9)]
    mems, _ = model.select_memories(5, {40: entry(40)}, non_cond, num_frames=50, reverse=True)
    assert mem_frames(mems)[1:] == [(1, 16), (2, 14), (3, 12), (4, 10), (5, 8), (6, 6)]


def test_select_memories_pointer_window():
    model = meta_model("sam2.1_hiera_t")
    non_cond = {t: entry(t) for t in range(1, 50)}
    _, ptrs = model.select_memories(50, {0: entry(0)}, non_cond, num_frames=100, reverse=False)
    # at most max_obj_ptrs_in_encoder (16): the conditioning pointer + 15 previous frames
    assert ptr_frames(ptrs) == [(50, 0)] + [(d, 50 - d) for d in range(1, 16)]
    _, ptrs = model.select_memories(3, {0: entry(0)}, non_cond, num_frames=4, reverse=False)
    assert ptr_frames(ptrs) == [(3, 0), (1, 2), (2, 1)]


def test_use_multimask_rule():
    model = meta_model("sam2.1_hiera_t")
    assert model.use_multimask(True, 1) and model.use_multimask(True, 0)
    assert model.use_multimask(False, 1)  # multimask_output_for_tracking
    assert not model.use_multimask(True, 2)


# ----------------------------------------------------------------------------- SAM heads on a mini model
@pytest.fixture(scope="module")
def mini21():
    torch.manual_seed(0)
    return mini_model("sam2.1", seed=1)


@pytest.fixture(scope="module")
def mini20():
    torch.manual_seed(0)
    return mini_model("sam2", seed=2)


@pytest.fixture(scope="module")
def mini_feats(mini21):
    with torch.no_grad():
        return mini21.forward_image(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)))


def test_forward_image_batch_items_are_independent(mini21, mini_feats):
    f = mini_feats
    assert len(f) == 2
    assert f[0].vision_feat.shape == (1, 32, 4, 4) and f[0].vision_pos.shape == (1, 32, 4, 4)
    assert [tuple(t.shape) for t in f[0].high_res] == [(1, 4, 16, 16), (1, 8, 8, 8)]
    torch.testing.assert_close(f[0].vision_pos[0], sine_2d(32, 4, 4), atol=1e-6, rtol=0)
    img = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        single = mini21.forward_image(img[1:])[0]
    torch.testing.assert_close(single.vision_feat, f[1].vision_feat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single.high_res[0], f[1].high_res[0], atol=1e-5, rtol=1e-5)


def test_sam_heads_without_points_uses_a_padding_point(mini21, mini_feats, monkeypatch):
    seen = {}
    orig = mini21.sam_prompt_encoder.forward

    def spy(points, masks, batch_size=1):
        seen["points"] = points
        return orig(points, masks, batch_size)

    monkeypatch.setattr(mini21.sam_prompt_encoder, "forward", spy)
    f = mini_feats[0]
    with torch.no_grad():
        mini21.sam_heads(f.vision_feat, f.high_res)
    coords, labels = seen["points"]
    assert torch.equal(coords, torch.zeros(1, 1, 2)) and labels.tolist() == [[-1]]


def test_sam_heads_selection_gating_and_pointers(mini21, mini_feats, monkeypatch):
    b = 2
    low = torch.randn(b, 3, 16, 16)
    iou = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.2, 0.1]])
    tokens = torch.randn(b, 3, 32)
    obj = torch.tensor([[1.5], [-0.5]])  # object 1 is absent
    monkeypatch.setattr(
        mini21.sam_mask_decoder, "forward", lambda *a, **k: DecoderOutput(low, iou, tokens, obj)
    )
    f = mini_feats[0]
    feats = f.vision_feat.expand(b, -1, -1, -1)
    hr = [t.expand(b, -1, -1, -1) for t in f.high_res]
    pts = torch.tensor([[[10.0, 10.0]], [[40.0, 20.0]]])
    lab = torch.ones(b, 1, dtype=torch.int32)
    with torch.no_grad():
        out = mini21.sam_heads(feats, hr, pts, lab, multimask_output=True)
        ptr0 = mini21.obj_ptr_proj(tokens[0, 1])
    torch.testing.assert_close(out.low_res_masks[0, 0], low[0, 1])  # best IoU: output 1
    assert torch.all(out.low_res_masks[1] == NO_OBJ_SCORE)  # absent object: -1024 everywhere
    assert torch.all(out.low_res_multimasks[1] == NO_OBJ_SCORE)
    want_hr = F.interpolate(low[:1, 1:2], size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.high_res_masks[:1], want_hr)
    torch.testing.assert_close(out.obj_ptr[0], ptr0)  # pointer from the chosen output's token
    torch.testing.assert_close(out.obj_ptr[1], mini21.no_obj_ptr[0])  # absent: the no-object pointer
    torch.testing.assert_close(out.object_score_logits, obj)


def test_mask_as_output(mini21, mini_feats):
    b = 2
    f = mini_feats[0]
    feats = f.vision_feat.expand(b, -1, -1, -1)
    hr = [t.expand(b, -1, -1, -1) for t in f.high_res]
    mask = torch.zeros(b, 1, 64, 64)
    mask[0, 0, 8:40, 16:48] = 1.0  # object 0 present, object 1 empty
    with torch.no_grad():
        out = mini21.mask_as_output(feats, hr, mask)
        heads0 = mini21.sam_heads(
            feats[:1], [t[:1] for t in hr], mask_inputs=mini21.mask_downsample(mask[:1])
        )
    torch.testing.assert_close(out.high_res_masks, mask * 20 - 10)
    assert set(out.high_res_masks.unique().tolist()) == {-10.0, 10.0}
    assert out.low_res_masks.shape == (b, 1, 16, 16)
    want_low = F.interpolate(
        mask * 20 - 10, size=(16, 16), mode="bilinear", align_corners=False, antialias=True
    )
    torch.testing.assert_close(out.low_res_masks, want_low)
    torch.testing.assert_close(out.low_res_masks[0, 0, 4, 8], torch.tensor(10.0))  # inside the object
    torch.testing.assert_close(out.low_res_masks[1], torch.full((1, 16, 16), -10.0))
    torch.testing.assert_close(out.ious, torch.ones(b, 1))
    torch.testing.assert_close(out.object_score_logits, torch.tensor([[10.0], [-10.0]]))
    torch.testing.assert_close(out.obj_ptr[1], mini21.no_obj_ptr[0])
    assert mini21.no_obj_ptr.abs().sum() > 0
    torch.testing.assert_close(out.obj_ptr[:1], heads0.obj_ptr, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- memory
def test_encode_memory_mask_transform_and_no_object_embedding(mini21, mini20, mini_feats, monkeypatch):
    high = torch.randn(2, 1, 64, 64) * 3
    vis = mini_feats[0].vision_feat
    for model in (mini21, mini20):
        seen = []
        orig = model.memory_encoder.forward

        def spy(pix, mask, orig=orig, seen=seen):
            seen.append(mask)
            return orig(pix, mask)

        monkeypatch.setattr(model.memory_encoder, "forward", spy)
        with torch.no_grad():
            present = model.encode_memory(vis, high, torch.tensor([[1.0], [3.0]]), is_mask_from_pts=True)
            mixed = model.encode_memory(vis, high, torch.tensor([[1.0], [-3.0]]), is_mask_from_pts=True)
            model.encode_memory(vis, high, torch.tensor([[1.0], [3.0]]), is_mask_from_pts=False)
        # masks from clicks are binarised, others go through a sigmoid; then x20 - 10
        torch.testing.assert_close(seen[0], (high > 0).float() * 20 - 10)
        torch.testing.assert_close(seen[2], torch.sigmoid(high) * 20 - 10)
        assert present.shape == (2, 8, 4, 4)
        torch.testing.assert_close(mixed[0], present[0])
        if model is mini21:  # SAM 2.1 marks absent objects' memories
            embed = model.no_obj_embed_spatial[0, :, None, None].expand(8, 4, 4)
            torch.testing.assert_close(mixed[1] - present[1], embed, atol=1e-5, rtol=0)
        else:
            assert model.no_obj_embed_spatial is None
            torch.testing.assert_close(mixed, present)


def test_condition_on_memory_initial_frame_adds_no_mem_embed(mini21, mini_feats):
    f = mini_feats[0]
    with torch.no_grad():
        out = mini21.condition_on_memory(0, True, f.vision_feat, f.vision_pos, {}, {}, 10)
    torch.testing.assert_close(out, f.vision_feat + mini21.no_mem_embed.view(1, 32, 1, 1))
    with pytest.raises(RuntimeError):
        mini21.condition_on_memory(3, False, f.vision_feat, f.vision_pos, {}, {}, 10)


@pytest.mark.parametrize("family", ["sam2.1", "sam2"])
def test_condition_on_memory_assembles_memories_and_pointers(family, mini21, mini20, mini_feats, monkeypatch):
    model = mini21 if family == "sam2.1" else mini20
    seen = {}

    def spy(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=0):
        seen.update(curr=curr, curr_pos=curr_pos, memory=memory, memory_pos=memory_pos, n=num_obj_ptr_tokens)
        return curr

    monkeypatch.setattr(model.memory_attention, "forward", spy)
    g = torch.Generator().manual_seed(7)
    mk = lambda: MemoryEntry(torch.randn(1, 8, 4, 4, generator=g), torch.randn(1, 32, generator=g))  # noqa: E731
    cond = {0: mk()}
    non_cond = {2: mk(), 3: mk()}
    f = mini_feats[0]
    with torch.no_grad():
        out = model.condition_on_memory(4, False, f.vision_feat, f.vision_pos, cond, non_cond, 10)
    torch.testing.assert_close(out, f.vision_feat)  # the spy returns its input, reshaped back
    torch.testing.assert_close(seen["curr"], f.vision_feat.flatten(2).transpose(1, 2))
    torch.testing.assert_close(seen["curr_pos"], f.vision_pos.flatten(2).transpose(1, 2))

    grid = sine_2d(8, 4, 4).flatten(1).T  # (16, 8)
    tpos = model.maskmem_tpos_enc.detach()[:, 0, 0]  # (7, 8); t_pos uses index 7 - t_pos - 1
    spatial = [(0, cond[0]), (5, non_cond[2]), (6, non_cond[3])]
    mem = [e.maskmem_features.flatten(2).transpose(1, 2)[0] for _, e in spatial]
    pos = [grid + tpos[7 - t - 1] for t, _ in spatial]
    # pointers: conditioning frame 0 at distance 4, frames 3 and 2 at 1 and 2; each 32-wide
    # pointer becomes 4 tokens of width 8 sharing its temporal encoding
    pointers = [(4, cond[0]), (1, non_cond[3]), (2, non_cond[2])]
    for d, e in pointers:
        mem.append(e.obj_ptr.reshape(4, 8))
        if family == "sam2.1":
            enc = model.obj_ptr_tpos_proj(sine_1d([d / 9], 32))  # t_diff_max = min(10, 16) - 1
        else:
            enc = torch.zeros(1, 8)
        pos.append(enc.expand(4, 8))
    torch.testing.assert_close(seen["memory"][0], torch.cat(mem), atol=1e-6, rtol=0)
    torch.testing.assert_close(seen["memory_pos"][0], torch.cat(pos), atol=1e-5, rtol=1e-5)
    assert seen["n"] == 12


def test_pointer_temporal_encoding(mini21, mini20):
    d = torch.tensor([1.0, -3.0, 7.0])
    with torch.no_grad():
        got = mini21.pointer_pos_enc(d, num_frames=8)
        want = mini21.obj_ptr_tpos_proj(sine_1d([1 / 7, -3 / 7, 1.0], 32))
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        # long videos: distances are normalised by max_obj_ptrs_in_encoder - 1 = 15, not the length
        got = mini21.pointer_pos_enc(d, num_frames=100)
        want = mini21.obj_ptr_tpos_proj(sine_1d([1 / 15, -3 / 15, 7 / 15], 32))
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(mini20.pointer_pos_enc(d, 8), torch.zeros(3, 8))
    assert isinstance(mini20.obj_ptr_tpos_proj, nn.Identity)


def test_track_step_with_mask_input_uses_mask_as_output(mini21, mini_feats, monkeypatch):
    f = mini_feats[1]
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 20:50, 5:30] = 1
    called = []
    monkeypatch.setattr(mini21, "condition_on_memory", lambda *a, **k: called.append(1))
    with torch.no_grad():
        heads, mem = mini21.track_step(0, True, f, None, None, mask, {}, {}, 5)
        want = mini21.encode_memory(
            f.vision_feat, mask * 20 - 10, torch.tensor([[10.0]]), is_mask_from_pts=False
        )
    assert not called
    torch.testing.assert_close(heads.high_res_masks, mask * 20 - 10)
    torch.testing.assert_close(mem, want)


def test_non_overlapping_constraints_by_hand():
    m = torch.tensor([[[[5.0, -1.0, 2.0]]], [[[3.0, 4.0, 2.5]]], [[[-20.0, 0.5, 9.0]]]])
    got = apply_non_overlapping_constraints(m)
    want = torch.tensor([[[[5.0, -10.0, -10.0]]], [[[-10.0, 4.0, -10.0]]], [[[-20.0, -10.0, 9.0]]]])
    torch.testing.assert_close(got, want)
    one = torch.randn(1, 1, 2, 2)
    assert torch.equal(apply_non_overlapping_constraints(one), one)


# ---------------------------------------------------------------- attention dispatch


def _qkv(dtype=torch.float32, b=2, heads=3, lq=37, lk=53, d=16):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, heads, n, d, generator=g).to(dtype) for n in (lq, lk, lk)]


def test_attention_in_float32_is_the_fused_kernel_exactly():
    from napari_sam2.model.common import attention

    q, k, v = _qkv()
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("score_elems", [1 << 24, 100])  # one block / blocks of 1 query row
def test_attention_cpu_bf16_path_matches_float32_to_bf16_precision(score_elems, monkeypatch):
    import napari_sam2.model.common as common

    monkeypatch.setattr(common, "_CPU_BF16_SCORE_ELEMS", score_elems)
    q, k, v = _qkv()
    want = F.scaled_dot_product_attention(q, k, v)
    got = common.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    assert ((got.float() - want).norm() / want.norm()).item() < 1e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 inputs under autocast take the same path
        auto = common.attention(q, k, v)
    assert auto.dtype == torch.bfloat16
    torch.testing.assert_close(auto.float(), got.float(), rtol=0, atol=0)
