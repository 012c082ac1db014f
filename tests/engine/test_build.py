"""Building models: config lookup, devices, strict checkpoint loading and its error messages."""

from __future__ import annotations

import functools

import pytest
import torch

import napari_sam2.engine.weights.build as build_mod
from napari_sam2.engine.weights.build import build_sam2, build_sam2_model, load_model_weights, resolve_device
from napari_sam2.engine.weights.checkpoints import ENV_CHECKPOINT_DIR, CheckpointError
from napari_sam2.model import SAM2Model, available_configs, load_config

ALL = sorted(available_configs())


@functools.cache
def meta_model(name: str) -> SAM2Model:
    with torch.device("meta"):
        return SAM2Model(load_config(name))


def meta_sd(name: str) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v.shape, device="meta") for k, v in meta_model(name).state_dict().items()}


# ----------------------------------------------------------------------------- config names
def test_unknown_config_name_lists_the_available_ones():
    with pytest.raises(ValueError) as err:
        load_config("sam3_hiera_t")
    msg = str(err.value)
    assert "sam3_hiera_t" in msg
    for name in ALL:
        assert name in msg


def test_unknown_config_in_build_fails_before_touching_the_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="unknown SAM 2 model variant .sam2.1_hiera_xl.; choose one of"):
        build_sam2_model("sam2.1_hiera_xl", tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_t"),  # Meta's hydra config path
        ("configs/sam2/sam2_hiera_b+.yaml", "sam2_hiera_b+"),
        ("sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_l"),
        ("sam2_hiera_s.yaml", "sam2_hiera_s"),
        ("sam2.1_hiera_s", "sam2.1_hiera_s"),
    ],
)
def test_config_lookup_by_meta_spellings(spelling, name):
    cfg = load_config(spelling)
    assert cfg.name == name
    assert cfg == load_config(name)


def test_config_from_a_yaml_file(tmp_path):
    from napari_sam2.model.config import configs_dir

    src = (configs_dir() / "sam2.1_hiera_t.yaml").read_text()
    path = tmp_path / "custom.yaml"
    path.write_text(src.replace("num_maskmem: 7", "num_maskmem: 3"))
    cfg = load_config(path)
    assert cfg.tracking.num_maskmem == 3 and cfg.trunk == load_config("sam2.1_hiera_t").trunk
    bad = tmp_path / "bad.yaml"
    bad.write_text(src.replace("  embed_dim: 96\n", "  embed_dim: 96\n  embed_dims: 96\n"))
    with pytest.raises(ValueError, match="embed_dims"):
        load_config(bad)


# ----------------------------------------------------------------------------- devices
def test_resolve_device_auto_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_resolve_device_auto_here_is_cpu():
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("Apple MPS available")
    assert resolve_device("auto") == torch.device("cpu")


def test_resolve_device_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_gpu_is_a_clear_error(spec, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="(?i)cuda") as err:
        resolve_device(spec)
    assert "cpu" in str(err.value)  # says what to use instead


def test_explicit_devices_pass_through():
    assert resolve_device("cpu") == torch.device("cpu")
    dev = torch.device("cpu")
    assert resolve_device(dev) is dev


# ----------------------------------------------------------------------------- checkpoint files
def test_missing_explicit_checkpoint_path(tmp_path):
    path = tmp_path / "nowhere" / "sam2.1_hiera_tiny.pt"
    with pytest.raises(CheckpointError) as err:
        build_sam2_model("sam2.1_hiera_t", path)
    assert str(path) in str(err.value) and "does not exist" in str(err.value)


def test_not_downloaded_and_download_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CHECKPOINT_DIR, str(tmp_path))
    with pytest.raises(CheckpointError) as err:
        build_sam2_model("sam2.1_hiera_t", None, download=False)
    msg = str(err.value)
    assert "https://" in msg and str(tmp_path) in msg  # where to get it, where to put it


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_corrupt_checkpoint_file_names_the_path(kind, tiny_checkpoint, tmp_path, monkeypatch):
    # the model would only be built after the file is read: make sure it never is
    monkeypatch.setattr(build_mod, "SAM2Model", lambda cfg: pytest.fail("model built for an unreadable file"))
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        with open(tiny_checkpoint, "rb") as f:
            path.write_bytes(f.read(8 << 20))  # the first 8 MiB of a 156 MB file
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint\x00" * 1000)
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        build_sam2_model("sam2.1_hiera_t", path)
    assert str(path) in str(err.value)


@pytest.mark.slow
def test_wrong_variant_checkpoint_files_name_what_they_look_like(tiny_checkpoint, monkeypatch):
    """SAM 2.1 tiny weights given for SAM 2.1 small and for SAM 2.0 tiny.

    The target models are built on the meta device (the refusal happens before any weight is
    copied); real loading is covered by test_build_with_meta_yaml_path_loads_the_weights.
    """
    monkeypatch.setattr(build_mod, "SAM2Model", lambda cfg: meta_model(cfg.name))
    with pytest.raises(CheckpointError) as err:
        build_sam2_model("sam2.1_hiera_s", tiny_checkpoint)
    msg = str(err.value)
    assert "'sam2.1_hiera_t'" in msg and "'sam2.1_hiera_s'" in msg
    assert "missing" in msg and "image_encoder.trunk.blocks.12" in msg
    assert str(tiny_checkpoint) in msg

    with pytest.raises(CheckpointError) as err:
        build_sam2("sam2_hiera_t", tiny_checkpoint)
    msg = str(err.value)
    assert "'sam2.1_hiera_t'" in msg and "'sam2_hiera_t'" in msg
    assert "unexpected" in msg and "no_obj_embed_spatial" in msg


@pytest.mark.filterwarnings("ignore:.*non-meta parameter:UserWarning")
def test_build_with_meta_yaml_path_and_a_real_file(tiny_checkpoint, monkeypatch):
    """Meta's config path form with the real 2.1 tiny file: lookup, file reading and the strict
    key/shape check all pass (model on the meta device; values are checked by the golden test
    and by test_model_variants' real SAM 2.0 load)."""
    built = []
    monkeypatch.setattr(build_mod, "SAM2Model", lambda cfg: built.append(cfg) or meta_model(cfg.name))
    monkeypatch.setattr(build_mod, "resolve_device", lambda device: torch.device("meta"))
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", tiny_checkpoint, device="cpu")
    assert [c.name for c in built] == ["sam2.1_hiera_t"]
    assert model.config.name == "sam2.1_hiera_t" and not model.training


# ----------------------------------------------------------------------------- strict loading
def test_one_missing_key_is_refused():
    sd = meta_sd("sam2.1_hiera_t")
    del sd["sam_mask_decoder.iou_token.weight"]
    with pytest.raises(CheckpointError, match="1 missing keys.*iou_token"):
        load_model_weights(meta_model("sam2.1_hiera_t"), sd)


def test_one_extra_key_is_refused():
    sd = meta_sd("sam2.1_hiera_t")
    sd["some_head.weight"] = torch.empty(3, device="meta")
    with pytest.raises(CheckpointError, match="1 unexpected keys.*some_head"):
        load_model_weights(meta_model("sam2.1_hiera_t"), sd)


def test_one_wrong_shape_is_refused_with_both_shapes():
    sd = meta_sd("sam2.1_hiera_t")
    sd["no_mem_embed"] = torch.empty(1, 1, 128, device="meta")
    with pytest.raises(CheckpointError) as err:
        load_model_weights(meta_model("sam2.1_hiera_t"), sd, source="my file")
    msg = str(err.value)
    assert "no_mem_embed" in msg and "(1, 1, 128)" in msg and "(1, 1, 256)" in msg and "my file" in msg
    assert "looks like" not in msg  # it is a (modified) tiny checkpoint: no misleading hint


def test_failed_load_leaves_the_model_untouched():
    from test_model_components import mini_config  # a 64-pixel model: builds in milliseconds

    model = SAM2Model(mini_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = {k: torch.full_like(v, 0.5) for k, v in before.items()}
    del sd["no_obj_ptr"]
    with pytest.raises(CheckpointError, match="no_obj_ptr"):
        load_model_weights(model, sd)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    sd["no_obj_ptr"] = torch.full((1, 32), 0.5)
    load_model_weights(model, sd)
    assert all(torch.equal(v, torch.full_like(v, 0.5)) for v in model.state_dict().values())


@pytest.mark.parametrize(
    "alias",
    [
        "facebook/sam2.1-hiera-tiny",
        "sam2.1_hiera_tiny",
        "sam2.1_hiera_tiny.pt",
        "configs/sam2.1/sam2.1_hiera_t.yaml",
    ],
)
def test_config_aliases_match_the_checkpoint_registry(alias):
    from napari_sam2.engine.weights.checkpoints import resolve_config_name
    from napari_sam2.model import load_config

    assert load_config(alias).name == resolve_config_name(alias) == "sam2.1_hiera_t"


def test_mps_without_metal_is_a_clear_error():
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(RuntimeError, match="mps"):
        resolve_device("mps")


def test_compile_model_refuses_unknown_components(small_model):
    from napari_sam2.engine.weights.build import compile_model

    with pytest.raises(ValueError, match="image_encoderr"):
        compile_model(small_model, components=("image_encoderr",))


@pytest.mark.slow
def test_image_encoder_compiles_as_one_graph_with_the_same_features(small_model):
    """A graph break would split the encoder and cost most of the compiled speed-up."""
    import copy

    from torch._dynamo.testing import CompileCounter

    from napari_sam2.engine.weights.build import compile_model

    torch._dynamo.reset()
    compiled = copy.deepcopy(small_model)  # the fixture is shared: never compile it in place
    counter = CompileCounter()
    compile_model(compiled, backend=counter, components=("image_encoder",))
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = small_model.forward_image(x)[0]
        got = compiled.forward_image(x)[0]
    assert counter.frame_count == 1
    assert set(compiled.state_dict()) == set(small_model.state_dict())  # checkpoints still load strictly
    for a, b in [
        (got.vision_feat, want.vision_feat),
        (got.vision_pos, want.vision_pos),
        *zip(got.high_res, want.high_res),
    ]:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_model_tracks_like_the_eager_one(small_model, tmp_path):
    import copy

    import numpy as np

    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.weights.build import compile_model

    torch._dynamo.reset()
    rng = np.random.default_rng(0)
    stack = rng.normal(1000, 50, size=(4, 40, 56)).astype(np.uint16)
    stack[:, 10:25, 15:35] += 3000
    compiled = compile_model(copy.deepcopy(small_model), backend="eager")  # traced by dynamo, no codegen

    def track(model):
        predictor = SAM2VideoPredictor(model, fill_hole_area=0, spill_dir=str(tmp_path))
        state = predictor.init_state(stack)
        predictor.add_new_points_or_box(state, 0, 1, points=[[25, 17]], labels=[1])
        predictor.add_new_points_or_box(state, 0, 2, box=[30, 5, 50, 30])
        return [m.clone() for _, _, m in predictor.propagate_in_video(state)]

    want, got = track(small_model), track(compiled)
    assert len(got) == len(want) == 4
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
