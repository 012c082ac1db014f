"""``napari-sam2 cache info|clear`` and the cache line of the track / precompute summaries."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_sam2.cli import main
from napari_sam2.engine.cache.embedding_cache import EmbeddingCache, EmbeddingKey
from napari_sam2.model import FrameFeatures


def _put(cache: EmbeddingCache, i: int) -> None:
    g = torch.Generator().manual_seed(i)
    t = [torch.randn(1, 4, s, s, generator=g) for s in (4, 4, 16, 8)]
    cache.put(EmbeddingKey("m" * 64, f"{i:064x}", "n" * 64), FrameFeatures(t[0], t[1], [t[2], t[3]]))


def test_info_and_clear_show_and_empty_only_the_cache(tmp_path, capsys):
    cache = EmbeddingCache(tmp_path / "c")
    for i in range(3):
        _put(cache, i)
    user = cache.folder / "mine.zarr.zip"
    user.write_bytes(b"not the cache's")
    assert main(["cache", "info", "--cache-dir", str(cache.folder)]) == 0
    out = capsys.readouterr().out
    assert str(cache.folder) in out and "entries: 3" in out and "bound:   20 GiB" in out
    assert main(["cache", "clear", "--cache-dir", str(cache.folder)]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    assert cache.entry_count() == 0 and user.read_bytes() == b"not the cache's"


def test_info_on_a_data_folder_is_refused_with_a_message(tmp_path, capsys):
    (tmp_path / "cells.tif").write_bytes(b"x")
    assert main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already holds files the cache did not write ('cells.tif')" in err
    assert (tmp_path / "cells.tif").exists()


@pytest.fixture
def track_inputs(tmp_path, small_model, monkeypatch):
    from napari_sam2.engine.cache.embedding_cache import resolve_embedding_cache
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.prompts.prompt_files import save_prompts
    from napari_sam2.engine.prompts.prompt_set import PromptSet
    from napari_sam2.engine.track import session
    from napari_sam2.engine.weights import download

    stack = tmp_path / "cells.tif"
    rng = np.random.default_rng(1)
    tifffile.imwrite(stack, rng.integers(0, 255, (2, 40, 48), dtype=np.uint8), photometric="minisblack")
    prompts = PromptSet()
    prompts.add_point(0, 1, 15.0, 16.0)
    monkeypatch.setattr(
        session,
        "build_predictor",
        lambda spec, embedding_cache="auto": SAM2VideoPredictor(
            small_model, embedding_cache=resolve_embedding_cache(embedding_cache)
        ),
    )
    monkeypatch.setattr(download, "ensure_checkpoint", lambda *a, **k: None)
    return [str(stack), str(save_prompts(tmp_path / "p.json", prompts))]


def test_track_summary_names_the_cache_and_its_size(track_inputs, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = ["track", *track_inputs, str(tmp_path / "o.tif"), "--device", "cpu", "--cache-dir", str(cache)]
    assert main([*argv, "--cache-max-gb", "1"]) == 0
    out = capsys.readouterr().out
    assert f"embedding cache {cache}: 2 entries" in out and "at most 1 GiB" in out
    assert main([*argv, "--overwrite", "--no-cache"]) == 0
    assert "embedding cache: off" in capsys.readouterr().out


def test_track_refuses_a_data_folder_as_cache_before_tracking(track_inputs, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.tmp").write_bytes(b"x")
    argv = ["track", *track_inputs, str(tmp_path / "o.tif"), "--device", "cpu", "--cache-dir", str(data)]
    assert main(argv) == 2
    assert "already holds files the cache did not write ('keep.tmp')" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists() and sorted(p.name for p in data.iterdir()) == ["keep.tmp"]
    assert main([*argv[:-2], "--cache-max-gb", "0"]) == 2
    assert "--cache-max-gb must be > 0" in capsys.readouterr().err
