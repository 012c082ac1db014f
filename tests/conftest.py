"""Shared fixtures: the golden reference folder and deterministic test checkpoints.

The goldens live in ``../shared/golden`` beside the checkout (present in CI). Test
weights are generated with the golden folder's own generator, once per machine,
into ``.test-weights/`` (git-ignored).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("NAPARI_SAM2_GOLDEN_DIR", REPO_ROOT.parent / "shared" / "golden"))
WEIGHTS_DIR = Path(os.environ.get("NAPARI_SAM2_TEST_WEIGHTS", REPO_ROOT / ".test-weights"))


@pytest.fixture(autouse=True, scope="session")
def _embedding_cache_in_tmp(tmp_path_factory):
    """The persistent embedding cache (on by default) writes into a folder of this test session,
    never into the user's cache folder; subprocesses (the CLI tests) inherit it."""
    old = os.environ.get("NAPARI_SAM2_EMBEDDING_DIR")
    os.environ["NAPARI_SAM2_EMBEDDING_DIR"] = str(tmp_path_factory.mktemp("embedding-cache"))
    yield
    if old is None:
        os.environ.pop("NAPARI_SAM2_EMBEDDING_DIR", None)
    else:
        os.environ["NAPARI_SAM2_EMBEDDING_DIR"] = old


GOLDEN_MISSING = (
    f"golden reference folder {GOLDEN_DIR} is absent (../shared/golden beside the checkout); "
    "it holds the weight generator and Meta's reference outputs"
)


# The golden outputs were produced with the "other"-kind tensors (Hiera's pos_embed and
# pos_embed_window, no_mem_embed, maskmem_tpos_enc, no_obj_ptr, CXBlock gamma, ...) drawn at
# std 1.0, not at the 0.02 that sam2_test_weights.py and its README state. Measured: with 0.02,
# Meta's own Hiera modules (run here on the golden inputs) miss the golden features by 59 %
# relative L2; with 1.0 they match to float16 storage precision (2e-4), and the video case's
# first output matches too. So the fixtures draw those tensors at 1.0; every other rule of the
# shared generator is used unchanged.
GOLDEN_OTHER_STD = 1.0


def _weight_generator():
    spec = importlib.util.spec_from_file_location("sam2_test_weights", GOLDEN_DIR / "sam2_test_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.OTHER_STD = GOLDEN_OTHER_STD
    return mod


def make_test_checkpoint(config: str, seed: int = 0, overrides: tuple = ()) -> Path:
    """Path of the deterministic test checkpoint for ``config``, generated on first use.

    ``overrides`` are the golden cases' ``weights.overrides`` entries ({"key", "add"}),
    applied as float32 additions after generation.
    """
    if not GOLDEN_DIR.is_dir():
        pytest.skip(GOLDEN_MISSING)
    tag = "".join(f"_{o['key'].split('.')[-2]}{o['add']:+g}" for o in overrides)
    out = WEIGHTS_DIR / f"{config}_seed{seed}_other{GOLDEN_OTHER_STD:g}{tag}.pt"
    if not out.exists():
        import torch

        gen = _weight_generator()
        manifest = gen.load_manifest(GOLDEN_DIR / "manifests" / f"{config}.json")
        sd = gen.make_state_dict(manifest, seed)
        for o in overrides:
            sd[o["key"]] += torch.tensor(o["add"], dtype=torch.float32)
        WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        torch.save({"model": sd}, tmp)
        tmp.replace(out)  # atomic: parallel or interrupted runs never see half a file
    return out


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN_DIR.is_dir():
        pytest.skip(GOLDEN_MISSING)
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """SAM 2.1 tiny test weights, seed 0 (the weights of the golden cases)."""
    return make_test_checkpoint("sam2.1_hiera_t", 0)


@pytest.fixture(scope="session")
def small_model():
    """The SAM 2.1 tiny architecture at 128-pixel input with random weights.

    For logic tests (API semantics, errors, plumbing) that would be slow at 1024 pixels;
    numerics against Meta are judged by the golden tests.
    """
    import dataclasses

    import torch

    from napari_sam2.model import SAM2Model, load_config

    torch.manual_seed(0)
    cfg = load_config("sam2.1_hiera_t")
    cfg = dataclasses.replace(
        cfg, image_size=128, memory_attention=dataclasses.replace(cfg.memory_attention, feat_sizes=(8, 8))
    )
    model = SAM2Model(cfg).eval()
    with torch.no_grad():  # zero-initialised vectors would make every object score 0 (absent)
        for name, p in model.named_parameters():
            if p.ndim == 1 and "bias" not in name and "gamma" not in name:
                p.normal_(1.0, 0.1) if "norm" in name else p.normal_(0, 0.5)
    return model


# ---- the training tests (tests/engine/train/): a conftest.py there would shadow this one
# for the tests that import names from `conftest`
@pytest.fixture
def make_model(tiny_checkpoint):
    """A fresh reduced-size tiny model with the test weights, per call."""
    from train_support import reduced_model  # tests/engine/train/ (on sys.path for its tests)

    return lambda: reduced_model(tiny_checkpoint)


@pytest.fixture(scope="session")
def cell_crop():
    """Three frames of the synthetic time-lapse cropped around the first cell (so that it is
    large on the model's grid): (images (3, 72, 72) uint16, labels (3, 72, 72))."""
    from napari_sam2.plugin.sample_data import synthetic_timelapse

    img, lab = synthetic_timelapse(3, (256, 256), 3, seed=0)
    img, lab = img[:, 36:108, 36:108], lab[:, 36:108, 36:108]
    import numpy as np

    assert np.all([len(np.unique(f)) >= 2 for f in lab])
    return img, lab
