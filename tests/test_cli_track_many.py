"""``napari-sam2 track-many``: jobs from a folder or manifest, checked before anything starts,
options passed through, failures reported in the exit status, and a real run on a LocalCluster."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sam2.cli import main
from napari_sam2.engine.prompts.prompt_files import save_prompts
from napari_sam2.engine.prompts.prompt_set import PromptSet


def _folder(tmp_path, names=("a", "b"), t=2, h=32, w=32):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        s = rng.normal(800, 40, size=(t, h, w)).astype(np.uint16)
        s[:, 8:20, 6:18] += 2500
        tifffile.imwrite(data_dir / f"{name}.tif", s, photometric="minisblack")
        ps = PromptSet()
        ps.add_point(0, 1, 12.0, 14.0)
        save_prompts(data_dir / f"{name}.prompts.json", ps)
    return data_dir


def test_dry_run_lists_what_would_run_and_what_cannot(tmp_path, capsys):
    data = _folder(tmp_path)
    assert main(["track-many", str(data), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("run     ") == 2 and "2 to run, 0 not" in out
    (data / "b.prompts.json").write_text('{"format": "napari-sam2-prompts", "version": 99}')
    assert main(["track-many", str(data), "--dry-run"]) == 2
    out = capsys.readouterr().out
    import re

    assert re.search(r"^invalid\s+\S*b\.tif: .*update napari-sam2$", out, re.M), out
    assert not (data / "labels").exists()


def test_invalid_jobs_start_nothing_and_say_how_to_go_on(tmp_path, capsys):
    data = _folder(tmp_path)
    (data / "a.prompts.json").write_text("not json")
    assert main(["track-many", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "1 job(s) cannot run; nothing was started" in err and "a.tif: a.prompts.json is not valid JSON" in err
    )
    assert "--skip-invalid" in err
    assert main(["track-many", str(tmp_path / "nope.csv")]) == 2
    assert "no manifest file" in capsys.readouterr().err
    (tmp_path / "m.csv").write_text(
        f"stack,prompts,output\n{data / 'b.tif'},{data / 'b.prompts.json'},o.tif\n"
    )
    assert main(["track-many", str(tmp_path / "m.csv"), "--output-dir", "x"]) == 2
    assert "--output-dir is for a folder" in capsys.readouterr().err


def test_options_reach_track_many_and_failures_set_the_exit_status(tmp_path, monkeypatch, capsys):
    import napari_sam2.engine.batch.distributed as distributed

    data = _folder(tmp_path)
    seen = {}

    def fake(jobs, **kwargs):
        seen.update(jobs=jobs, **kwargs)
        results = [
            distributed.JobResult(jobs[0], "done", written=jobs[0].output, seconds=1.5, worker="0"),
            distributed.JobResult(jobs[1], "failed", "frame 1 contains NaN pixels"),
        ]
        for r in results:  # as the real one: each result as it arrives
            kwargs["on_result"](r)
        return distributed.BatchReport(results)

    monkeypatch.setattr(distributed, "track_many", fake)
    report = tmp_path / "report.csv"
    argv = ["track-many", str(data), "--output-format", "nii.gz", "--output-dir", str(tmp_path / "out")]
    argv += ["--scheduler", "tcp://10.0.0.5:8786", "--gpu-resources", "--window", "lung", "--frame-axis", "1"]
    argv += [
        "--precision",
        "bf16",
        "--device",
        "cuda",
        "--torch-threads",
        "4",
        "--report",
        str(report),
        "--quiet",
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert f"failed: {data / 'b.tif'}: frame 1 contains NaN pixels" in captured.err
    assert "1 done, 1 failed" in captured.out
    assert seen["scheduler"] == "tcp://10.0.0.5:8786" and seen["resources"] == {"GPU": 1}
    assert seen["torch_threads"] == 4 and seen["skip_invalid"] is False and seen["overwrite"] is False
    assert (seen["model"].precision, seen["model"].device) == ("bf16", "cuda")
    a, b = seen["jobs"]
    assert a.output == str(tmp_path / "out" / "a.nii.gz") and (a.window, a.frame_axis) == ("lung", 1)
    rows = list(csv.DictReader(report.open()))
    assert [(r["status"], r["message"]) for r in rows] == [
        ("done", ""),
        ("failed", "frame 1 contains NaN pixels"),
    ]


@pytest.mark.slow
def test_track_many_on_a_local_cluster_with_the_real_model(tiny_checkpoint, tmp_path, capsys):
    """The command as a user runs it: the official model code path (checkpoint loaded on the
    worker), a LocalCluster of one worker process; then a re-run skips the complete stack."""
    data = _folder(tmp_path, names=("a",), t=2)
    argv = [
        "track-many",
        str(data),
        "--checkpoint",
        str(tiny_checkpoint),
        "--device",
        "cpu",
        "--workers",
        "1",
    ]
    assert main([*argv, "--quiet"]) == 0
    assert "1 done" in capsys.readouterr().out
    labels = tifffile.imread(data / "labels" / "a.tif")
    assert labels.shape == (2, 32, 32) and set(np.unique(labels)) <= {0, 1}
    assert (data / "labels" / "a.tif.done.json").is_file()
    assert main([*argv, "--quiet"]) == 0
    assert "1 skipped" in capsys.readouterr().out


def test_a_truncated_tiff_is_refused_as_truncated(tmp_path, capsys):
    data = _folder(tmp_path)
    whole = (data / "b.tif").read_bytes()
    (data / "b.tif").write_bytes(whole[: len(whole) // 2])
    assert main(["track-many", str(data), "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert re.search(
        rf"^invalid\s+{re.escape(str(data / 'b.tif'))}: \S*b\.tif is truncated: the TIFF file has [\d,]+ bytes but "
        r"its image data runs to byte [\d,]+ \([\d,]+ bytes missing\).*copy or export the stack again$",
        out,
        re.M,
    ), out
    assert re.search(r"^run\s+\S*a\.tif ->", out, re.M), out


def _fake_cluster(monkeypatch, outcome):
    """track-many's real client side (validation, progress bar, results) with tasks run here:
    ``outcome(job)`` is what the worker's run_job returns."""
    import distributed as dask_distributed

    import napari_sam2.engine.batch.distributed as batch
    import napari_sam2.engine.weights.download as download

    class Future:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    class Client:
        def submit(self, fn, job, *args, **kwargs):
            return Future(outcome(job))

    monkeypatch.setattr(batch, "_client", lambda *a: (Client(), []))
    monkeypatch.setattr(dask_distributed, "as_completed", lambda futures: list(futures))
    monkeypatch.setattr(download, "ensure_checkpoint", lambda *a, **k: None)


def test_a_failure_is_printed_once_and_the_report_is_written_in_the_output_folder(
    tmp_path, monkeypatch, capsys
):
    data = _folder(tmp_path)
    earlier = data / "labels" / "track-many-report-earlier.csv"
    earlier.parent.mkdir()
    earlier.write_text("a user's file")

    def outcome(job):
        if job.name == "b.tif":
            return {"status": "failed", "message": "frame 1 contains NaN pixels"}
        tifffile.imwrite(job.output, np.zeros((2, 32, 32), np.uint8))
        return {"status": "done", "written": job.output, "seconds": 0.5}

    _fake_cluster(monkeypatch, outcome)
    assert main(["track-many", str(data), "--device", "cpu"]) == 1  # with the progress bar
    captured = capsys.readouterr()
    assert captured.err.count("frame 1 contains NaN pixels") == 1, captured.err
    assert f"failed: {data / 'b.tif'}: frame 1 contains NaN pixels" in captured.err
    match = re.search(r"1 done, 1 failed; report in (\S+)$", captured.out.strip())
    assert match, captured.out
    report = Path(match.group(1))
    assert report.parent == data / "labels" and re.fullmatch(
        r"track-many-report-\d{8}-\d{6}\.csv", report.name
    )
    rows = list(csv.DictReader(report.open()))
    assert [(Path(r["stack"]).name, r["status"], r["message"]) for r in rows] == [
        ("a.tif", "done", ""),
        ("b.tif", "failed", "frame 1 contains NaN pixels"),
    ]
    assert earlier.read_text() == "a user's file"
    # a second run in the same second: a new report, the first one kept
    (data / "labels" / "a.tif").unlink()
    for f in (data / "labels").glob("*.done.json"):
        f.unlink()
    assert main(["track-many", str(data), "--device", "cpu", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("frame 1 contains NaN pixels") == 1, captured.err
    second = Path(re.search(r"report in (\S+)$", captured.out.strip()).group(1))
    assert second != report and report.is_file() and second.is_file()
