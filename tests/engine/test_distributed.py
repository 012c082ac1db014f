"""Many stacks on dask.distributed (engine/batch/distributed.py) and their jobs (engine/batch/manifest.py).

The cluster test runs a LocalCluster of 2 worker processes with the small random-weight model
built inside each worker (``small_predictor`` below, imported there by name): its outputs are
compared with single-stack runs of ``track_files`` in this process.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tifffile

from napari_sam2.engine.batch.manifest import (
    Job,
    ManifestError,
    done_record_path,
    is_complete,
    jobs_from_folder,
    load_manifest,
    output_state,
    write_done_record,
)
from napari_sam2.engine.prompts.prompt_files import save_prompts
from napari_sam2.engine.prompts.prompt_set import PromptSet

MODEL = {"config": "test", "checkpoint": None, "precision": "fp32"}


def small_predictor(spec):
    """The SAM 2.1 tiny architecture at 128 px with seeded random weights (conftest's small_model),
    as a video predictor: built the same way in every process."""
    import torch

    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.model import SAM2Model, load_config

    torch.manual_seed(0)
    cfg = load_config("sam2.1_hiera_t")
    cfg = dataclasses.replace(
        cfg, image_size=128, memory_attention=dataclasses.replace(cfg.memory_attention, feat_sizes=(8, 8))
    )
    model = SAM2Model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "bias" not in name and "gamma" not in name:
                p.normal_(1.0, 0.1) if "norm" in name else p.normal_(0, 0.5)
    return SAM2VideoPredictor(model, fill_hole_area=0)


def _stack(seed, t=3, h=40, w=48, dtype=np.uint16):
    rng = np.random.default_rng(seed)
    s = rng.normal(800, 40, size=(t, h, w)).astype(dtype)
    s[:, 8 + seed : 22 + seed, 6:20] += 2500
    return s


def _prompts(path, x=12.0, y=14.0):
    ps = PromptSet()
    ps.add_point(0, 1, x, y)
    return save_prompts(path, ps)


def _job(tmp_path, name, data=None, seed=0, **options):
    stack = tmp_path / f"{name}.tif"
    tifffile.imwrite(stack, _stack(seed) if data is None else data, photometric="minisblack")
    prompts = _prompts(tmp_path / f"{name}.prompts.json")
    return Job(str(stack), (str(prompts),), str(tmp_path / "out" / f"{name}.tif"), **options)


# --------------------------------------------------------------------------- manifests


def test_csv_manifest_with_options_and_relative_paths(tmp_path):
    (tmp_path / "m.csv").write_text(
        "stack,prompts,output,channels,direction,frame_axis,all_positions,window,labels_name\n"
        "a.tif,a.json,out/a.tif,,,,,,\n"
        "b.zarr,b_t0.json;b_t1.json,b.zarr,0;2,forward,1,true,lung,cells\n"
    )
    a, b = load_manifest(tmp_path / "m.csv", {"direction": "backward", "window": "40,400"})
    assert a == Job(
        str(tmp_path / "a.tif"),
        (str(tmp_path / "a.json"),),
        str(tmp_path / "out/a.tif"),
        direction="backward",
        window="40,400",
    )
    assert b.prompts == (str(tmp_path / "b_t0.json"), str(tmp_path / "b_t1.json"))
    assert (b.channels, b.direction, b.frame_axis, b.all_positions, b.window, b.labels_name) == (
        (0, 2),
        "forward",
        1,
        True,
        "lung",
        "cells",
    )


def test_json_manifest_defaults_and_errors_name_the_entry(tmp_path):
    doc = {
        "defaults": {"direction": "forward"},
        "jobs": [{"stack": "/d/a.nii.gz", "prompts": ["p.json"], "output": "o.nii.gz"}],
    }
    (tmp_path / "m.json").write_text(json.dumps(doc))
    (job,) = load_manifest(tmp_path / "m.json")
    assert (job.stack, job.prompts, job.direction) == ("/d/a.nii.gz", (str(tmp_path / "p.json"),), "forward")
    bad = [
        ("m.csv", "stack,prompts\na,b\n", "missing column\\(s\\) output"),
        ("m.csv", "stack,prompts,output,color\na,b,c,red\n", "line 2: unknown field\\(s\\) color"),
        (
            "m.csv",
            "stack,prompts,output,direction\na,b,c,sideways\n",
            "line 2: direction 'sideways' is not forward",
        ),
        ("m.csv", "stack,prompts,output,window\na,b,c,lungs\n", "line 2: window 'lungs' is not a CT preset"),
        ("m.csv", "stack,prompts,output,channels\na,b,c,0;1;2;3\n", "channels '0;1;2;3' is not 1 to 3"),
        ("m.csv", "stack,prompts,output\na,,c\n", "line 2: no prompts given"),
        ("m.json", "[1, 2]", "expected a list of jobs"),
        ("m.txt", "", "a manifest is a .csv or .json file"),
    ]
    for name, text, match in bad:
        (tmp_path / name).write_text(text)
        with pytest.raises(ManifestError, match=match):
            load_manifest(tmp_path / name)


def test_folder_convention(tmp_path):
    for name in ("a", "b", "lonely"):
        tifffile.imwrite(tmp_path / f"{name}.tif", _stack(0), photometric="minisblack")
    _prompts(tmp_path / "a.prompts.json")
    _prompts(tmp_path / "b.prompts.t0.json")
    _prompts(tmp_path / "b.prompts.t1.json")
    jobs, unprompted = jobs_from_folder(tmp_path, suffix=".ome.tif", defaults={"window": "bone"})
    assert [(j.name, len(j.prompts), j.output, j.window) for j in jobs] == [
        ("a.tif", 1, str(tmp_path / "labels" / "a.ome.tif"), "bone"),
        ("b.tif", 2, str(tmp_path / "labels" / "b.ome.tif"), "bone"),
    ]
    assert unprompted == ["lonely.tif"]
    _prompts(tmp_path / "ghost.prompts.json")
    with pytest.raises(ManifestError, match="no stack named ghost beside it"):
        jobs_from_folder(tmp_path)
    (tmp_path / "ghost.prompts.json").unlink()
    with pytest.raises(ManifestError, match="the output folder .* is the input folder"):
        jobs_from_folder(tmp_path, output_dir=tmp_path)


# --------------------------------------------------------------------------- complete outputs


def test_complete_stale_and_foreign_outputs(tmp_path):
    job = _job(tmp_path, "a")
    assert output_state(job, MODEL) == ("absent", "no output yet")
    out = tmp_path / "out" / "a.tif"
    out.parent.mkdir()
    tifffile.imwrite(out, np.zeros((3, 40, 48), np.uint16), photometric="minisblack")
    state, why = output_state(job, MODEL)
    assert state == "foreign" and "no run of this job recorded it" in why
    record = write_done_record(job, MODEL, out)
    assert record == done_record_path(job) == tmp_path / "out" / "a.tif.done.json"
    assert output_state(job, MODEL) == ("complete", "complete") and is_complete(job, MODEL)
    # other inputs, the output untouched since: stale (ours, safe to redo)
    assert output_state(dataclasses.replace(job, direction="forward"), MODEL)[0] == "stale"
    assert output_state(job, {**MODEL, "precision": "bf16"}) == ("stale", "made from other model: redone")
    _prompts(job.prompts[0], x=13.0)
    assert output_state(job, MODEL) == ("stale", "made from other prompts: redone")
    write_done_record(job, MODEL, out)
    tifffile.imwrite(job.stack, _stack(1), photometric="minisblack")
    assert output_state(job, MODEL) == ("stale", "made from other stack: redone")
    # labels edited after they were written are never replaced unasked
    write_done_record(job, MODEL, out)
    tifffile.imwrite(out, np.ones((3, 40, 48), np.uint16), photometric="minisblack")
    state, why = output_state(job, MODEL)
    assert state == "foreign" and "changed after napari-sam2 wrote it" in why


def test_labels_written_into_an_ome_zarr_image_do_not_change_its_identity(tmp_path):
    pytest.importorskip("ome_zarr")
    import warnings

    import zarr

    from napari_sam2.engine.batch.manifest import stack_identity
    from napari_sam2.engine.io import write_labels
    from napari_sam2.engine.io.metadata import SourceMetadata

    with warnings.catch_warnings():  # ome_zarr.writer's own import-time deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_image

    image = tmp_path / "img.zarr"
    write_image(_stack(0), zarr.open_group(str(image), mode="w", zarr_format=2), axes="zyx", scale_factors=())
    before = stack_identity(image)
    job = Job(str(image), (str(_prompts(tmp_path / "p.json")),), str(image), labels_name="cells")
    write_labels(
        image, np.ones((3, 40, 48), np.uint16), SourceMetadata(kind="array", axes="zyx"), name="cells"
    )
    assert stack_identity(image) == before
    write_done_record(job, MODEL, image / "labels" / "cells")
    assert done_record_path(job).name == "img.zarr.labels-cells.done.json"
    assert is_complete(job, MODEL)


# --------------------------------------------------------------------------- before submitting


def test_every_job_is_checked_before_anything_is_submitted(tmp_path):
    from napari_sam2.engine.batch.distributed import BatchValidationError, track_many

    good = _job(tmp_path, "good")
    missing = dataclasses.replace(good, stack=str(tmp_path / "nope.tif"), output=str(tmp_path / "out/n.tif"))
    twice = dataclasses.replace(good, prompts=good.prompts)  # the same output again
    bad_prompts = _job(tmp_path, "far")
    ps = PromptSet()
    ps.add_point(0, 1, 500.0, 5.0)
    save_prompts(bad_prompts.prompts[0], ps)

    class Unreachable:
        """A scheduler that must not be reached."""

    with pytest.raises(BatchValidationError) as err:
        track_many(
            [good, missing, twice, bad_prompts], scheduler=Unreachable(), builder="x:y", progress=False
        )
    problems = err.value.problems
    assert len(problems) == 3
    assert "no such file or folder" in problems[0] and "same output" in problems[1]
    assert "outside the 48 x 40 frame" in problems[2]
    assert not (tmp_path / "out" / "good.tif").exists()


# --------------------------------------------------------------------------- on a LocalCluster


@pytest.mark.slow
def test_local_cluster_runs_failing_stacks_reports_and_reruns(tmp_path, monkeypatch):
    """2 worker processes; 4 stacks, one of which fails while tracking (a NaN pixel, found only
    when its frame is read): the others are done, identical to single-stack runs; each worker
    builds its model once; a re-run skips what is complete and finishes the fixed stack."""
    import torch

    from napari_sam2.engine.batch.distributed import track_many
    from napari_sam2.engine.batch.track_stack import track_files

    broken = _stack(3).astype(np.float32)
    broken[1, 5, 5] = np.nan
    jobs = [_job(tmp_path, f"s{k}", seed=k) for k in range(3)]
    jobs.append(_job(tmp_path, "nan", data=broken))
    jobs[2] = dataclasses.replace(jobs[2], direction="forward", window="900,800")  # per-job options travel
    # the local cluster shares the cores out: 2 cores, 2 workers, one torch thread each, as the reference
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    seen = []
    report = track_many(
        jobs,
        model="sam2.1_hiera_t",
        n_workers=2,
        builder="test_distributed:small_predictor",
        progress=False,
        on_result=seen.append,
    )
    assert [r.status for r in report.results] == ["done", "done", "done", "failed"]
    assert len(seen) == 4
    assert "NaN" in report.failed[0].message and "Traceback" in report.failed[0].details
    assert not (tmp_path / "out" / "nan.tif").exists() and not done_record_path(jobs[3]).exists()
    # one model per worker: every task saw its worker's first (and only) model
    assert {r.model_loads for r in report.done} == {1}
    assert len({r.worker for r in report.results}) == 2
    # identical to single-stack runs here (one torch thread, as in the workers)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pred = small_predictor(None)
        for job in jobs[:3]:
            ref = track_files(
                job.stack,
                job.prompts,
                tmp_path / f"ref_{job.name}",
                builder=lambda s: pred,
                progress=False,
                **job.options(),
            )
            np.testing.assert_array_equal(tifffile.imread(job.output), tifffile.imread(ref))
            assert tifffile.imread(ref).any()
    finally:
        torch.set_num_threads(threads)
    # a re-run: complete stacks are skipped; the fixed one runs; one whose prompts were edited
    # is redone (its labels came from the old prompts and nobody touched them); one whose labels
    # were edited by hand is refused, and the others go on (skip_invalid)
    mtime = {j.name: (tmp_path / "out" / j.name).stat().st_mtime_ns for j in jobs[:3]}
    tifffile.imwrite(jobs[3].stack, _stack(3), photometric="minisblack")
    _prompts(jobs[0].prompts[0], x=13.0)
    edited = tifffile.imread(jobs[1].output)
    edited[0, :3, :3] = 7
    tifffile.imwrite(jobs[1].output, edited, photometric="minisblack")
    report = track_many(
        jobs, n_workers=1, builder="test_distributed:small_predictor", progress=False, skip_invalid=True
    )
    assert [r.status for r in report.results] == ["done", "invalid", "skipped", "done"]
    assert "changed after napari-sam2 wrote it" in report.results[1].message
    np.testing.assert_array_equal(tifffile.imread(jobs[1].output), edited)
    assert (tmp_path / "out" / jobs[2].name).stat().st_mtime_ns == mtime[jobs[2].name]
    assert (tmp_path / "out" / jobs[0].name).stat().st_mtime_ns != mtime[jobs[0].name]
    model = json.loads(done_record_path(jobs[3]).read_text())["model"]
    assert is_complete(jobs[3], model) and is_complete(jobs[0], model)
