"""``napari-sam2 precompute``: fills the embedding cache, skips what is cached, checks its
arguments before computing; ``track`` then reads instead of encoding."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tifffile

from napari_sam2.cli import main, precompute
from napari_sam2.engine.cache.embedding_cache import EmbeddingCache
from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor


def _stack(t=3, h=48, w=64):
    rng = np.random.default_rng(1)
    s = rng.normal(800, 40, size=(t, h, w)).astype(np.uint16)
    s[:, 10:24, 8:24] += 2500
    return s


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, _stack(), photometric="minisblack")
    return path


@pytest.fixture
def small_build(small_model, monkeypatch):
    """The CLI builds the small model (no checkpoint needed); counts the encoder's runs."""
    from napari_sam2.engine.weights import download

    calls = []
    original = small_model.forward_image
    monkeypatch.setitem(vars(small_model), "forward_image", lambda x: calls.append(1) or original(x))
    monkeypatch.setattr(
        precompute, "_build", lambda spec, cache: SAM2VideoPredictor(small_model, embedding_cache=cache)
    )
    monkeypatch.setattr(download, "ensure_checkpoint", lambda *a, **k: None)
    return calls


def test_parse_frames():
    assert precompute.parse_frames("2:5") == (2, 5)
    assert precompute.parse_frames("3:") == (3, None)
    assert precompute.parse_frames(":4") == (None, 4)
    assert precompute.parse_frames("7") == (7, 8)
    for bad in ("a:b", "1:2:3", "-1:3", "", ":x"):
        with pytest.raises(argparse.ArgumentTypeError, match="--frames"):
            precompute.parse_frames(bad)


def test_fills_the_cache_then_skips_what_is_cached(stack, tmp_path, small_build, capsys):
    cache_dir = tmp_path / "cache"
    args = ["precompute", str(stack), "--cache-dir", str(cache_dir), "--device", "cpu"]
    assert main(args + ["--frames", "1:3"]) == 0
    assert "2 frames: 2 computed, 0 already cached" in capsys.readouterr().out
    assert main(args) == 0
    assert "3 frames: 1 computed, 2 already cached" in capsys.readouterr().out
    assert len(small_build) == 3 and EmbeddingCache(cache_dir).usage().entries == 3
    assert main(args + ["--quiet"]) == 0
    assert capsys.readouterr().out == "" and len(small_build) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--frames", "2:9"], "the stack has 3 frames"),
        (["--frames", "2:2"], "selects no frame"),
        (["--channels", "1"], "channel 1 does not exist"),
        (["--model", "sam3"], "unknown SAM 2 model variant"),
        (["--device", "tpu"], "device"),
        (["--max-cache-gb", "0"], "--cache-max-gb must be > 0"),
    ],
)
def test_arguments_are_checked_before_the_model_is_built(
    stack, tmp_path, monkeypatch, capsys, extra, message
):
    def no_model(spec, cache):
        raise AssertionError("the model was built")

    monkeypatch.setattr(precompute, "_build", no_model)
    code = main(["precompute", str(stack), "--cache-dir", str(tmp_path / "c"), "--quiet", *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_a_missing_stack_or_an_unwritable_cache_folder_is_named(stack, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precompute, "_build", lambda spec, cache: pytest.fail("the model was built"))
    assert main(["precompute", str(tmp_path / "nope.tif"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["precompute", str(stack), "--cache-dir", str(blocker / "c"), "--quiet"]) == 2
    assert "cache folder" in capsys.readouterr().err


@pytest.mark.slow
def test_track_reads_what_precompute_stored(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """The real tiny model: precompute, then `track` on the same stack computes no feature and
    writes the labels a run without the cache writes."""
    from napari_sam2.engine.prompts.prompt_files import save_prompts
    from napari_sam2.engine.prompts.prompt_set import PromptSet
    from napari_sam2.model import SAM2Model

    stack = tmp_path / "cells.tif"
    tifffile.imwrite(stack, _stack(t=2), photometric="minisblack")
    prompts = PromptSet()
    prompts.add_point(0, 4, 15.0, 16.0)
    prompts_file = save_prompts(tmp_path / "prompts.json", prompts)
    monkeypatch.setenv("NAPARI_SAM2_EMBEDDING_DIR", str(tmp_path / "cache"))
    model = ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--quiet"]
    calls = []
    original = SAM2Model.forward_image
    monkeypatch.setattr(SAM2Model, "forward_image", lambda self, x: calls.append(1) or original(self, x))

    assert main(["precompute", str(stack), *model]) == 0
    assert len(calls) == 2
    assert main(["track", str(stack), str(prompts_file), str(tmp_path / "cached.tif"), *model]) == 0
    assert len(calls) == 2  # every frame read from the cache
    monkeypatch.setenv("NAPARI_SAM2_EMBEDDING_CACHE", "0")
    assert main(["track", str(stack), str(prompts_file), str(tmp_path / "plain.tif"), *model]) == 0
    assert len(calls) == 4
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "cached.tif"), tifffile.imread(tmp_path / "plain.tif")
    )
