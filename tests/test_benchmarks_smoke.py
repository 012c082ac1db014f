"""The benchmark scripts parse their options, plan, and summarise results (no benchmark runs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # meta_reference imports bench_speed by name
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench_speed():
    return _load("bench_speed")


@pytest.fixture(scope="module")
def meta_reference():
    return _load("meta_reference")


def test_bench_speed_knows_every_config(bench_speed):
    from napari_sam2.model.config import available_configs

    assert sorted(bench_speed.CONFIGS) == available_configs()


def test_bench_speed_dry_run_prints_the_plan_and_writes_nothing(bench_speed, tmp_path, capsys):
    out = tmp_path / "speed.jsonl"
    code = bench_speed.main(
        [
            "--dry-run",
            "--configs",
            "sam2.1_hiera_t",
            "sam2_hiera_l",
            "--device",
            "cpu",
            "--dtype",
            "fp32",
            "bf16",
            "--objects",
            "1",
            "5",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "plan (12 fresh processes" in text
    assert "sam2_hiera_l" in text and "bf16" in text and "track 5 obj" in text
    assert not out.exists()


@pytest.mark.parametrize(
    "bad",
    [
        ["--frames", "0"],
        ["--configs", "nope"],
        ["--dtype", "fp16"],
        ["--device", "tpu"],
        ["--objects", "0"],
        ["--checkpoint", "x.pt", "--configs", "sam2_hiera_t", "sam2_hiera_s"],
    ],
)
def test_bench_speed_rejects_bad_options(bench_speed, bad, capsys):
    with pytest.raises(SystemExit):
        bench_speed.main(["--dry-run", *bad])


def _records():
    common = {"config": "sam2.1_hiera_t", "device": "cuda", "run_id": "r"}
    return [
        {
            **common,
            "dtype": "fp32",
            "kind": "image",
            "part": "image",
            "load_s": 1.5,
            "set_image_ms": 40.0,
            "predict_ms": 5.0,
            "peak_rss_mb": 900.0,
            "cuda_max_allocated_mb": 300.0,
        },
        {
            **common,
            "dtype": "fp32",
            "kind": "track",
            "part": "track",
            "objects": 1,
            "load_s": 1.7,
            "s_per_frame": 0.05,
            "fps": 20.0,
            "tracked_frames": 8,
            "peak_rss_mb": 1000.0,
            "cuda_max_allocated_mb": 400.0,
        },
        {
            **common,
            "dtype": "bf16",
            "kind": "track",
            "part": "track",
            "objects": 5,
            "load_s": 1.6,
            "s_per_frame": 0.1,
            "fps": 10.0,
            "tracked_frames": 8,
            "peak_rss_mb": 1100.0,
            "cuda_max_allocated_mb": 500.0,
            "vs_fp32": {
                "iou_min": 0.97,
                "iou_mean": 0.99,
                "logit_rel_l2_max": 0.04,
                "logit_rel_l2_mean": 0.02,
            },
        },
        {**common, "dtype": "bf16", "kind": "error", "part": "image", "returncode": 1},
    ]


def test_bench_speed_summary_and_table(bench_speed):
    summaries = bench_speed.summarize(_records())
    by_dtype = {s["dtype"]: s for s in summaries}
    fp32, bf16 = by_dtype["fp32"], by_dtype["bf16"]
    assert fp32["load_s"] == pytest.approx(1.6)  # median over the parts' processes
    assert fp32["set_image_ms"] == 40.0 and fp32["predict_ms"] == 5.0
    assert fp32["tracking"]["1"]["s_per_frame"] == 0.05
    assert fp32["peak_rss_mb"] == {"image": 900.0, "track_1obj": 1000.0}
    assert bf16["vs_fp32"]["track_5obj"]["iou_min"] == 0.97
    assert bf16["errors"] == ["image"]
    table = bench_speed.markdown_table(summaries, [1, 5])
    assert "| variant | device | dtype | load s |" in table
    assert "CUDA max alloc MB" in table
    assert "failed: image" in table
    assert "bf16 vs fp32" in table and "| track_5obj | 0.97000 |" in table


def test_bench_speed_measurement_helpers(bench_speed):
    import numpy as np

    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert bench_speed.mask_iou(a, b) == 1.0  # both empty
    a[:2] = True
    b[1:3] = True
    assert bench_speed.mask_iou(a, b) == pytest.approx(4 / 12)
    assert bench_speed.rel_l2([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert bench_speed.rel_l2([2.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0)
    stats = bench_speed.per_frame_stats([0.2, 0.1, 0.3])
    assert stats["tracked_frames"] == 3 and stats["s_per_frame"] == pytest.approx(0.2)
    assert stats["s_first_frame"] == 0.2 and stats["s_per_frame_median"] == 0.2
    assert stats["s_per_frame_steady"] is None  # no frame with a full memory bank yet
    stats = bench_speed.per_frame_stats([0.1] * 6 + [0.4, 0.6])
    assert stats["s_per_frame_steady"] == pytest.approx(0.5)


def _fake_checkout(root: Path) -> Path:
    pkg = root / "sam2" / "sam2"
    (pkg / "modeling").mkdir(parents=True)
    (pkg / "sam2_video_predictor.py").write_text("")
    return root / "sam2"


def test_meta_reference_dry_run(meta_reference, tmp_path, capsys):
    repo = _fake_checkout(tmp_path)
    out = tmp_path / "meta.jsonl"
    assert (
        meta_reference.main(["--dry-run", "--meta-repo", str(repo), "--device", "cpu", "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "plan (2 fresh processes" in text and "1 obj" in text and "5 obj" in text
    assert not out.exists()
    # the package folder itself is accepted too
    assert meta_reference.meta_package_dir(repo / "sam2") == meta_reference.meta_package_dir(repo)
    # VOS is a GPU setting
    meta_reference.main(["--dry-run", "--meta-repo", str(repo), "--device", "cpu", "--meta-vos"])
    assert "--meta-vos needs --device cuda" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [[], ["--meta-repo", "/nonexistent/sam2"]])
def test_meta_reference_needs_a_checkout(meta_reference, bad, capsys):
    with pytest.raises(SystemExit):
        meta_reference.main(["--dry-run", *bad])
    err = capsys.readouterr().err
    assert "--meta-repo is required" in err or "is not a checkout" in err


def test_meta_reference_table(meta_reference):
    record = {
        "kind": "meta_reference",
        "config": "sam2.1_hiera_t",
        "device": "cuda",
        "dtype": "bf16",
        "meta_vos": True,
        "objects": 5,
        "ours": {"s_per_frame": 0.05},
        "meta": {"s_per_frame": 0.04},
        "fps_ratio_ours_over_meta": 0.8,
        "agreement": {"iou_min": 0.995, "logit_rel_l2_max": 0.01},
        "parity_ok": True,
    }
    failed = {
        "kind": "error",
        "config": "sam2.1_hiera_l",
        "device": "cuda",
        "dtype": "bf16",
        "meta_vos": False,
        "objects": 1,
        "returncode": 1,
    }
    table = meta_reference.markdown_table([record, failed])
    assert (
        "| sam2.1_hiera_t | cuda | bf16 | VOS (compiled) | 5 | 0.05 | 0.04 | 0.8 | 0.99500 | 0.01 | yes |"
        in table
    )
    assert "failed (exit 1)" in table


def test_matmul_peak_writes_one_record_per_shape_and_dtype(tmp_path, monkeypatch, capsys):
    peak = _load("bench_matmul_peak")
    monkeypatch.setattr(peak, "SHAPES", (("small", 64, 32, 16), ("thin", 8, 128, 4)))
    out = tmp_path / "peak.jsonl"
    assert peak.main(["--dtype", "fp32", "bf16", "--repeats", "2", "--threads", "1", "--out", str(out)]) == 0
    import json

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["kind"] == "run"
    rows = [r for r in records if r["kind"] == "matmul"]
    assert [(r["shape"], r["dtype"]) for r in rows] == [
        ("small", "fp32"),
        ("small", "bf16"),
        ("thin", "fp32"),
        ("thin", "bf16"),
    ]
    for r in rows:
        assert r["best_s"] <= r["median_s"]
        assert r["gflops_best"] >= r["gflops_median"]
    assert "| small |" in capsys.readouterr().out


def test_track_all_head_dry_run_plans_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "head.jsonl"
    assert _load("track_all_head").main(["--dry-run", "--seeds", "3", "--out", str(out)]) == 0
    assert "seeds [3]" in capsys.readouterr().out and not out.exists()
