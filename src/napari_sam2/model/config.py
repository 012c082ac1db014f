"""Typed model configurations, read from the YAML files in ``configs/`` (no hydra)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from napari_sam2.errors import InputError

from .._resources import resource_path
from .variants import resolve_variant


@dataclass(frozen=True)
class TrunkConfig:
    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...]
    window_pos_embed_bkg_spatial_size: tuple[int, int]


@dataclass(frozen=True)
class NeckConfig:
    d_model: int
    backbone_channel_list: tuple[int, ...]
    fpn_top_down_levels: tuple[int, ...]
    fpn_interp_model: str
    scalp: int


@dataclass(frozen=True)
class MemoryAttentionConfig:
    num_layers: int
    dim_feedforward: int
    num_heads: int
    rope_theta: float
    feat_sizes: tuple[int, int]


@dataclass(frozen=True)
class MemoryEncoderConfig:
    out_dim: int
    num_fuser_layers: int


@dataclass(frozen=True)
class TrackingConfig:
    """Inference flags of SAM2Base, as in Meta's configs."""

    num_maskmem: int = 7
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True
    use_mask_input_as_output_without_sam: bool = True
    max_cond_frames_in_attn: int = -1
    directly_add_no_mem_embed: bool = True
    no_obj_embed_spatial: bool = True
    use_high_res_features_in_sam: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    iou_prediction_use_sigmoid: bool = True
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True


@dataclass(frozen=True)
class PostprocessingConfig:
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


@dataclass(frozen=True)
class SAM2Config:
    name: str
    family: str
    image_size: int
    backbone_stride: int
    trunk: TrunkConfig
    neck: NeckConfig
    memory_attention: MemoryAttentionConfig
    memory_encoder: MemoryEncoderConfig
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    postprocessing: PostprocessingConfig = field(default_factory=PostprocessingConfig)


def _build(cls, data: dict[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**kwargs)


def configs_dir() -> Path:
    """The folder of model configs (inside the installed package, or at the top of a checkout)."""
    return resource_path("configs")


def available_configs() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def load_config(name_or_path: str | Path) -> SAM2Config:
    """Read a config by Meta's name (``sam2.1_hiera_t``) or from a YAML path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.exists():
        path = configs_dir() / f"{resolve_variant(str(name_or_path))}.yaml"
    data = yaml.safe_load(path.read_text())
    where = str(path)
    return SAM2Config(
        name=data["name"],
        family=data["family"],
        image_size=data["image_size"],
        backbone_stride=data["backbone_stride"],
        trunk=_build(TrunkConfig, data["trunk"], where),
        neck=_build(NeckConfig, data["neck"], where),
        memory_attention=_build(MemoryAttentionConfig, data["memory_attention"], where),
        memory_encoder=_build(MemoryEncoderConfig, data["memory_encoder"], where),
        tracking=_build(TrackingConfig, data.get("tracking", {}), where),
        postprocessing=_build(PostprocessingConfig, data.get("postprocessing", {}), where),
    )
