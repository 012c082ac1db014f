"""benchmarks/gpu_check.sh, the one-call GPU check, runs end to end on CPU (its dry run) so that it
cannot rot where CI has no GPU; and its summary judges the issue's targets as documented."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from conftest import GOLDEN_DIR, REPO_ROOT

BENCH = REPO_ROOT / "benchmarks"
OUT_FILES = {
    "summary.json",
    "summary.md",
    "gpu_check.log",
    "tests.log",
    "tests-junit.xml",
    "bench.jsonl",
    "bench.log",
}


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run_on_cpu(tmp_path):
    """What the dry run covers: tiny only, 1 object, 2 tracked frames (+1 warm-up frame), fp32, no
    compile, no Meta (CI has no copy), no carried wheels; the gpu tests are collected and skip."""
    out = tmp_path / "out"
    env = dict(os.environ)
    env["NAPARI_SAM2_PYTHON"] = sys.executable
    env.pop("OUT", None)
    cmd = ["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--frames", "2", "--out", str(out)]
    cmd += ["--carry", str(tmp_path / "nothing-carried")]  # a developer's own .gpu-carry must not matter
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    log = proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    files = {p.name for p in out.iterdir()}
    assert files <= OUT_FILES and all(p.is_file() for p in out.iterdir()), (
        files
    )  # what a device call brings back

    parts = summary["parts"]
    assert parts["environment"]["status"] == "ok" and parts["environment"]["cuda_available"] is False
    assert parts["install"]["status"] == "skipped" and "no carried wheels" in parts["install"]["note"]
    tests = parts["tests"]
    assert tests["status"] == "skipped", log
    assert tests["counts"]["skipped"] >= 10 and tests["counts"]["failed"] == tests["counts"]["errors"] == 0
    assert any("CUDA" in reason for reason in tests["skip_reasons"])
    md = (out / "summary.md").read_text()
    if not GOLDEN_DIR.is_dir():  # no test weights: the benchmark says so and is skipped
        assert parts["weights"]["status"] == "skipped" and parts["bench"]["status"] == "skipped"
        return

    assert proc.returncode == 0, log
    assert summary["status"] == "ok" and summary["problems"] == []
    assert parts["weights"]["status"] == "ok"
    bench = parts["bench"]
    assert bench["status"] == "ok" and bench["meta"] == "absent", log
    assert "Meta's copy absent" in bench["note"]
    (item,) = bench["items"]
    assert (item["config"], item["objects"], item["status"]) == ("sam2.1_hiera_t", 1, "ok")
    ours = item["ours"]
    assert ours["tracked_frames"] == 2
    for key in ("fps", "s_per_frame", "load_s", "first_run_s", "peak_rss_mb"):
        assert _positive(ours.get(key)), (key, ours)
    assert summary["targets"] and all(t["status"] == "not judged" for t in summary["targets"])
    records = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["track"] and records[0]["s_per_frame"] == ours["s_per_frame"]
    assert "| bench | ok |" in md and "| sam2.1_hiera_t | 1 | ok |" in md and "Meta's copy absent" in md


def _side_by_side(config: str, objects: int, ours_s: float, meta_s: float, growth: float) -> dict:
    return {
        "config": config,
        "objects": objects,
        "status": "ok",
        "ours": {"fps": 1 / ours_s, "s_per_frame": ours_s, "growth_kb_per_frame_per_object": growth},
        "meta": {"fps": 1 / meta_s, "s_per_frame": meta_s, "growth_kb_per_frame_per_object": 770.0},
        "fps_ratio_ours_over_meta": meta_s / ours_s,
    }


def test_summary_judges_the_targets(tmp_path):
    gs = _load("gpu_check_summary")
    summary = gs.Summary(tmp_path, {"device": "cuda", "configs": ["sam2.1_hiera_t", "sam2.1_hiera_l"]})
    for part in ("environment", "install", "weights", "tests"):
        summary.part(part, "ok" if part != "tests" else "passed")
    items = [
        _side_by_side("sam2.1_hiera_t", 1, 0.004, 0.010, 1.5),  # 2.5x Meta
        _side_by_side("sam2.1_hiera_t", 5, 0.013, 0.040, 40.0),  # 3.25x one object; memory grows
        _side_by_side("sam2.1_hiera_l", 1, 0.030, 0.025, 1.5),  # slower than Meta
        {"config": "sam2.1_hiera_l", "objects": 5, "status": "timeout", "ours": {"fps": 10.0}},
    ]
    summary.part("bench", "timeout", items=items)
    assert summary.finish(100.0) == 1  # a bench item timed out
    got = {t["target"]: (t["status"], t["value"]) for t in summary.data["targets"]}
    status, ratio = got["sam2.1_hiera_t: FPS at least Meta's on this GPU (1 object; aim 2x)"]
    assert status == "met (aim 2x met)" and ratio == pytest.approx(2.5)
    assert got["sam2.1_hiera_l: FPS at least Meta's on this GPU (1 object; aim 2x)"][0] == "missed"
    assert got["sam2.1_hiera_t: 5 objects cost under 3x one object (ours)"] == ("missed", 3.25)
    assert got["sam2.1_hiera_l: 5 objects cost under 3x one object (ours)"][0] == "not judged"
    assert got["sam2.1_hiera_t, 1 obj: GPU memory flat in the number of frames (ours)"] == ("met", 1.5)
    assert got["sam2.1_hiera_t, 5 obj: GPU memory flat in the number of frames (ours)"] == ("missed", 40.0)
    assert summary.data["problems"] == ["bench", "bench sam2.1_hiera_l 5 obj"]
    md = (tmp_path / "summary.md").read_text()
    assert "# GPU check: FAILED" in md and "| sam2.1_hiera_t | 1 | ok |" in md and "met (aim 2x met)" in md
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_child_output_and_junit_are_read(tmp_path):
    gs = _load("gpu_check_summary")
    bs = _load("bench_speed")
    text = "\n".join(
        [
            "noise",
            bs.PROGRESS_PREFIX + json.dumps({"load_s": 1.0}),
            bs.PROGRESS_PREFIX + json.dumps({"load_s": 1.0, "first_run_s": 9.0}),
        ]
    )
    assert gs.read_child(text) == (None, {"load_s": 1.0, "first_run_s": 9.0})
    assert gs.read_child(text + "\n" + bs.RESULT_PREFIX + '{"kind": "track"}')[0] == {"kind": "track"}
    junit = tmp_path / "j.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase classname="t" name="a"/>'
        '<testcase classname="t" name="b"><failure message="boom">x</failure></testcase>'
        '<testcase classname="t" name="c"><skipped message="needs a CUDA GPU"/></testcase>'
        "</testsuite></testsuites>"
    )
    counts, failures, skips = gs.read_junit(junit)
    assert counts == {"passed": 1, "failed": 1, "errors": 0, "skipped": 1}
    assert failures == [{"test": "t::b", "message": "boom"}] and skips == ["needs a CUDA GPU"]
    log = (
        "tests/engine/test_gpu.py::test_a PASSED [ 10%]\n"
        "tests/engine/test_gpu.py::test_b FAILED [ 20%]\n"
        "tests/engine/test_gpu.py::test_c SKIPPED (needs a CUDA GPU) [ 30%]\n"
        "tests/engine/test_gpu.py::test_d \n"
    )
    counts, failures, _ = gs.read_pytest_log(log)
    assert counts == {"passed": 1, "failed": 1, "errors": 0, "skipped": 1}
    assert [f["test"] for f in failures] == [
        "tests/engine/test_gpu.py::test_b",
        "tests/engine/test_gpu.py::test_d",
    ]
