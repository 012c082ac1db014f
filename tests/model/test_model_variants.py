"""All eight SAM 2 / SAM 2.1 variants: configs equal Meta's facts, models equal the official
checkpoint layouts (every key and shape, from ../shared/golden/manifests), and load strictly.

Models are built on the meta device (no memory, no init), except for one real strict load
of generated SAM 2.0 tiny weights. Shape-identical state dicts for the other variants are
meta tensors, so the large ones cost nothing.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from conftest import make_test_checkpoint
from torch import nn

from napari_sam2.engine.weights.build import build_sam2_model, load_model_weights
from napari_sam2.engine.weights.checkpoints import CheckpointError, guess_variant, load_state_dict_file
from napari_sam2.model import SAM2Model, available_configs, load_config

ALL = [
    "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l",
    "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l",
]  # fmt: skip

# Facts from Meta's configs/sam2{,.1}/*.yaml; b+ gives only embed_dim/num_heads, the rest
# are Hiera's defaults (stages (2,3,16,3), global (12,16,20), windows (8,4,14,7), bkg (14,14)).
TRUNK = {
    "t": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
              window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(7, 7)),
    "s": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
              window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(7, 7)),
    "b+": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
               window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(14, 14)),
    "l": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
              window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7)),
}  # fmt: skip
CHANNELS = {
    "t": (768, 384, 192, 96),
    "s": (768, 384, 192, 96),
    "b+": (896, 448, 224, 112),
    "l": (1152, 576, 288, 144),
}

# SAM2Base flags as Meta's yaml sets them (defaults of SAM2Base otherwise), plus
# build_sam2_video_predictor's binarize_mask_from_pts_for_mem_enc=true.
TRACKING_COMMON = dict(
    num_maskmem=7, sigmoid_scale_for_mem_enc=20.0, sigmoid_bias_for_mem_enc=-10.0,
    binarize_mask_from_pts_for_mem_enc=True, use_mask_input_as_output_without_sam=True,
    max_cond_frames_in_attn=-1, directly_add_no_mem_embed=True, use_high_res_features_in_sam=True,
    multimask_output_in_sam=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
    multimask_output_for_tracking=True, use_multimask_token_for_obj_ptr=True, iou_prediction_use_sigmoid=True,
    memory_temporal_stride_for_eval=1, non_overlap_masks_for_mem_enc=False, use_obj_ptrs_in_encoder=True,
    max_obj_ptrs_in_encoder=16, only_obj_ptrs_in_the_past_for_eval=True, pred_obj_scores=True,
    pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, soft_no_obj_ptr=False, use_mlp_for_obj_ptr_proj=True,
)  # fmt: skip
TRACKING_FAMILY = {
    "sam2": dict(no_obj_embed_spatial=False, add_tpos_enc_to_obj_ptrs=False, proj_tpos_enc_in_obj_ptrs=False,
                 use_signed_tpos_enc_to_obj_ptrs=False),
    "sam2.1": dict(no_obj_embed_spatial=True, add_tpos_enc_to_obj_ptrs=True, proj_tpos_enc_in_obj_ptrs=True,
                   use_signed_tpos_enc_to_obj_ptrs=True),
}  # fmt: skip


def split(name: str) -> tuple[str, str]:
    family, size = name.split("_hiera_")
    return family, size


@functools.cache
def meta_model(name: str) -> SAM2Model:
    with torch.device("meta"):
        return SAM2Model(load_config(name))


@functools.cache
def manifest(name: str) -> dict:
    from conftest import GOLDEN_DIR

    path = GOLDEN_DIR / "manifests" / f"{name}.json"
    if not path.exists():
        pytest.skip(f"manifest {path} is absent (../shared/golden beside the checkout)")
    return json.loads(path.read_text())


def manifest_shapes(name: str) -> dict[str, tuple[int, ...]]:
    return {t["key"]: tuple(t["shape"]) for t in manifest(name)["tensors"]}


def meta_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A state dict with the official keys and shapes of ``name``, on the meta device."""
    return {k: torch.empty(s, device="meta") for k, s in manifest_shapes(name).items()}


# ----------------------------------------------------------------------------- configs
def test_available_configs_are_exactly_the_eight_official_ones():
    assert sorted(available_configs()) == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_config_values_match_meta(name):
    family, size = split(name)
    cfg = load_config(name)
    assert cfg.name == name and cfg.family == family
    assert cfg.image_size == 1024 and cfg.backbone_stride == 16
    for key, value in TRUNK[size].items():
        assert getattr(cfg.trunk, key) == value, key
    assert cfg.neck.d_model == 256
    assert cfg.neck.backbone_channel_list == CHANNELS[size]
    assert cfg.neck.fpn_top_down_levels == (2, 3)
    assert cfg.neck.fpn_interp_model == "nearest"
    assert cfg.neck.scalp == 1
    ma = cfg.memory_attention
    assert (ma.num_layers, ma.dim_feedforward, ma.num_heads) == (4, 2048, 1)
    assert (ma.rope_theta, ma.feat_sizes) == (10000.0, (64, 64))
    assert (cfg.memory_encoder.out_dim, cfg.memory_encoder.num_fuser_layers) == (64, 2)
    for key, value in {**TRACKING_COMMON, **TRACKING_FAMILY[family]}.items():
        assert getattr(cfg.tracking, key) == value, key
    pp = cfg.postprocessing  # build_sam2's apply_postprocessing=True
    assert pp.dynamic_multimask_via_stability
    assert (pp.dynamic_multimask_stability_delta, pp.dynamic_multimask_stability_thresh) == (0.05, 0.98)


@pytest.mark.parametrize("name", ALL)
def test_trunk_block_layout_follows_meta_rules(name):
    """Window sizes, pooling and heads are not in the state dict: check them per block."""
    _, size = split(name)
    t = TRUNK[size]
    trunk = meta_model(name).image_encoder.trunk
    stage_ends = [sum(t["stages"][: i + 1]) - 1 for i in range(4)]
    windows, pooled, heads, dims = [], [], [], []
    stage, h, d = 0, t["num_heads"], t["embed_dim"]
    for i in range(sum(t["stages"])):
        windows.append(0 if i in t["global_att_blocks"] else t["window_spec"][stage])
        if i - 1 in stage_ends:
            stage, h, d = stage + 1, h * 2, d * 2
        pooled.append(i - 1 in stage_ends)
        heads.append(h)
        dims.append(d)
    assert len(trunk.blocks) == sum(t["stages"])
    assert [b.window_size for b in trunk.blocks] == windows
    assert [b.q_stride is not None for b in trunk.blocks] == pooled
    assert [b.attn.num_heads for b in trunk.blocks] == heads
    assert [b.dim_out for b in trunk.blocks] == dims
    assert trunk.channel_list == list(CHANNELS[size])


def test_tiny_trunk_layout_spelled_out():
    trunk = meta_model("sam2.1_hiera_t").image_encoder.trunk
    assert [b.window_size for b in trunk.blocks] == [8, 8, 4, 4, 14, 0, 14, 0, 14, 0, 14, 7]
    assert [b.attn.num_heads for b in trunk.blocks] == [1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 8, 8]


# ----------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize("name", ALL)
def test_state_dict_equals_official_manifest(name):
    man = manifest(name)
    assert man["config"] == name
    want = manifest_shapes(name)
    got = {k: tuple(v.shape) for k, v in meta_model(name).state_dict().items()}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    wrong = {k: (got[k], want[k]) for k in set(got) & set(want) if got[k] != want[k]}
    assert not missing and not unexpected and not wrong, (
        missing[:5],
        unexpected[:5],
        list(wrong.items())[:5],
    )
    assert len(got) == man["num_tensors"]
    assert sum(v.numel() for v in meta_model(name).state_dict().values()) == man["num_parameters"]


@pytest.mark.parametrize("name", ALL)
def test_family_specific_modules(name):
    family, _ = split(name)
    model = meta_model(name)
    if family == "sam2.1":
        assert model.no_obj_embed_spatial.shape == (1, 64)
        assert isinstance(model.obj_ptr_tpos_proj, nn.Linear)
        assert (model.obj_ptr_tpos_proj.in_features, model.obj_ptr_tpos_proj.out_features) == (256, 64)
    else:
        assert model.no_obj_embed_spatial is None
        assert isinstance(model.obj_ptr_tpos_proj, nn.Identity)


@pytest.mark.parametrize("name", ALL)
def test_official_layout_loads_strictly_and_is_recognised(name):
    sd = meta_state_dict(name)
    assert guess_variant(sd) == name
    load_model_weights(meta_model(name), sd)  # no exception: every key, every shape


@pytest.mark.parametrize("target", ALL)
def test_every_other_variant_is_refused_with_its_name(target):
    model = meta_model(target)
    for source in ALL:
        if source == target:
            continue
        with pytest.raises(CheckpointError) as err:
            load_model_weights(model, meta_state_dict(source), source=f"weights of {source}")
        msg = str(err.value)
        assert f"'{source}'" in msg, msg  # "It looks like a '<source>' checkpoint."
        assert f"'{target}'" in msg, msg


def test_sam2_tiny_real_checkpoint_loads_strictly():
    """The one real load: generated SAM 2.0 tiny weights (the 2.1 tiny is the golden model)."""
    path = make_test_checkpoint("sam2_hiera_t")
    model = build_sam2_model("sam2_hiera_t", path, device="cpu")
    assert not model.training
    sd = load_state_dict_file(path)
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v), k
    assert model.no_obj_embed_spatial is None
    # SAM 2.0 pointers carry no temporal encoding
    assert torch.equal(model.pointer_pos_enc(torch.tensor([1.0, -2.0]), 8), torch.zeros(2, 64))
