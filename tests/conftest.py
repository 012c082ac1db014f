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

GOLDEN_MISSING = (
    f"golden reference folder {GOLDEN_DIR} is absent (../shared/golden beside the checkout); "
    "it holds the weight generator and Meta's reference outputs"
)


def _weight_generator():
    spec = importlib.util.spec_from_file_location("sam2_test_weights", GOLDEN_DIR / "sam2_test_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_test_checkpoint(config: str, seed: int = 0) -> Path:
    """Path of the deterministic test checkpoint for ``config``, generated on first use."""
    if not GOLDEN_DIR.is_dir():
        pytest.skip(GOLDEN_MISSING)
    out = WEIGHTS_DIR / f"{config}_seed{seed}.pt"
    if not out.exists():
        import torch

        gen = _weight_generator()
        manifest = gen.load_manifest(GOLDEN_DIR / "manifests" / f"{config}.json")
        sd = gen.make_state_dict(manifest, seed)
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
