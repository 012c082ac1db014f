"""The GPU check of issue 14 in one command: the tests marked ``gpu``, then ours against Meta's SAM 2.

Run it through ``benchmarks/gpu_check.sh`` (which also writes a summary should this driver not start):

    bash benchmarks/gpu_check.sh --device cuda --out "$OUT"             # on a GPU machine
    bash benchmarks/gpu_check.sh --device cpu --frames 2 --out /tmp/x   # the dry run on CPU

Parts, in order, each with its status in the summary: ``environment`` (python, torch, GPU),
``install`` (the wheels carried in ``.gpu-carry/wheels`` that this python lacks, with ``--no-deps``
into a scratch folder, never over the installed torch), ``weights`` (the deterministic test
checkpoints, generated once), ``tests`` (``pytest -m gpu``) and ``bench`` (per variant and object
count, in a fresh process each: ours in bf16 with torch.compile side by side with Meta's
``SAM2VideoPredictorVOS`` in bf16, read from the copy in ``.gpu-carry/meta``; ours alone when that
copy is absent). The whole run keeps to ``--budget-s``: a part that would run past it is stopped
(its partial numbers kept) or not started, and says so. What it writes to ``--out`` (7 files, one
folder, as a device call brings back): summary.json, summary.md, tests-junit.xml, tests.log,
bench.jsonl, bench.log, and gpu_check.log from the shell wrapper. docs/gpu-check.md explains all this.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_speed as bs  # noqa: E402
import gpu_check_summary as gs  # noqa: E402
import meta_reference as mr  # noqa: E402

GPU_TEST_FILES = ["tests/engine/test_gpu.py"]
# Modules a run imports (engine, tests, Meta's package); a missing one is named before anything runs.
REQUIRED_MODULES = ["numpy", "torch", "yaml", "skimage", "PIL", "tqdm", "pytest", "tifffile"]
RESERVE_S = 15  # kept back from every part for writing the summary
ENV_PROBE = r"""
import json, os, platform, sys
import torch
info = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
        "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "cpu_cores": os.cpu_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), gpu_capability=f"{p.major}.{p.minor}")
print(json.dumps(info))
"""


class Run:
    """Options, paths, the clock and the environment of the child processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.carry: Path = args.carry
        self.start = time.monotonic()
        self.deadline = self.start + args.budget_s
        self.scratch = Path(tempfile.gettempdir()) / "napari-sam2-gpu-check"
        self.env = dict(os.environ)
        paths = [str(ROOT / "src"), str(ROOT / "tests")]
        if self.env.get("PYTHONPATH"):
            paths.append(self.env["PYTHONPATH"])
        self.env["PYTHONPATH"] = os.pathsep.join(paths)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.setdefault("TQDM_DISABLE", "1")
        golden = self.carry / "golden"
        if golden.is_dir() and "NAPARI_SAM2_GOLDEN_DIR" not in self.env:
            self.env["NAPARI_SAM2_GOLDEN_DIR"] = str(golden)

    def left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def python(self, code: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=timeout
        )


def run_process(cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group, output appended to ``log``; (exit code or None if it
    was stopped at ``timeout``, seconds). The whole group is stopped: compile workers too."""
    t0 = time.monotonic()
    with log.open("a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=max(1.0, timeout)), time.monotonic() - t0
        except subprocess.TimeoutExpired:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            f.write(f"\n[gpu_check] stopped after {timeout:.0f} s (time budget)\n")
            return None, time.monotonic() - t0


# ====================================================================== parts


def part_environment(run: Run, summary: gs.Summary) -> bool:
    t0 = time.monotonic()
    try:
        proc = run.python(ENV_PROBE, timeout=120)
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        summary.part("environment", "error", note=f"cannot start python with torch: {e}")
        return False
    revision = bs.git_revision()
    if revision is None and (run.carry / "REVISION").is_file():  # the machine's copy has no .git
        revision = (run.carry / "REVISION").read_text().strip() + " (at gpu_prepare)"
    info.update(cpu=bs.cpu_model(), napari_sam2_git=revision, seconds=round(time.monotonic() - t0, 1))
    try:
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    print(f"[gpu_check] environment: {json.dumps(info)}", flush=True)
    if run.args.device == "cuda" and not info["cuda_available"]:
        summary.part("environment", "failed", note="--device cuda, but this torch sees no CUDA GPU", **info)
        return False
    summary.part("environment", "ok", note=info.get("gpu") or "CPU only", **info)
    return True


def part_install(run: Run, summary: gs.Summary) -> bool:
    """Install the carried wheels this python lacks; then every required module must import."""
    t0 = time.monotonic()
    wheels = run.carry / "wheels"
    reqs = wheels / "requirements.txt"
    fields: dict = {}
    if not reqs.is_file():
        status, note = (
            "skipped",
            f"no carried wheels ({reqs.relative_to(ROOT) if reqs.is_relative_to(ROOT) else reqs} absent)",
        )
    else:
        wanted = [
            line.split()
            for line in reqs.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        probe = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
        proc = subprocess.run(
            [sys.executable, "-c", probe, *(m for _, m in wanted)],
            env=run.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        missing_modules = set(proc.stdout.split())
        missing = [req for req, module in wanted if module in missing_modules]
        fields["installed"] = missing
        if not missing:
            status, note = "ok", f"all {len(wanted)} carried packages already present"
        else:
            site = run.scratch / "site"
            shutil.rmtree(site, ignore_errors=True)  # only what this run installs
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--no-cache-dir",
                "--find-links",
                str(wheels),
                "--target",
                str(site),
                *missing,
            ]
            proc = subprocess.run(cmd, env=run.env, capture_output=True, text=True, timeout=300)
            print(proc.stdout + proc.stderr, flush=True)
            if proc.returncode != 0:
                status, note = (
                    "failed",
                    f"pip install of {missing} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}",
                )
            else:
                run.env["PYTHONPATH"] = os.pathsep.join([str(site), run.env["PYTHONPATH"]])
                status, note = "ok", f"installed {len(missing)} missing: {', '.join(missing)}"
    probe = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    mods = [*REQUIRED_MODULES, "napari_sam2.engine.video_predictor", "napari_sam2.plugin.sample_data"]
    proc = subprocess.run(
        [sys.executable, "-c", probe, *mods], env=run.env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        status = "failed"
        note += f"; cannot import what the run needs: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
    summary.part("install", status, note=note, seconds=round(time.monotonic() - t0, 1), **fields)
    return status != "failed"


WEIGHTS_CODE = r"""
import json, sys
import conftest
done = []
for config in sys.argv[1:]:
    done.append(conftest.make_test_checkpoint(config).name)
# the golden video cases' own weights, so that the tests do not generate them on their clock
for case in sorted(conftest.GOLDEN_DIR.glob("video_*/case.json")):
    meta = json.loads(case.read_text())
    done.append(conftest.make_test_checkpoint(meta["config"], meta["seed"], tuple(meta["weights"]["overrides"])).name)
print(json.dumps(sorted(set(done))))
"""


def part_weights(run: Run, summary: gs.Summary) -> bool:
    golden = Path(run.env.get("NAPARI_SAM2_GOLDEN_DIR", ROOT.parent / "shared" / "golden"))
    if not (golden / "sam2_test_weights.py").is_file():
        summary.part(
            "weights",
            "skipped",
            note=f"no golden folder at {golden}: no test weights (carry it: gpu_prepare.sh)",
        )
        return False
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", WEIGHTS_CODE, *run.args.configs],
            cwd=ROOT,
            env=run.env,
            capture_output=True,
            text=True,
            timeout=max(30.0, min(300.0, run.left())),
        )
    except subprocess.TimeoutExpired:
        summary.part("weights", "timeout", note="generating the test checkpoints ran past the budget")
        return False
    seconds = round(time.monotonic() - t0, 1)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        summary.part("weights", "error", note=f"test weight generation failed: {last}", seconds=seconds)
        return False
    files = json.loads(proc.stdout.strip().splitlines()[-1])
    summary.part("weights", "ok", note=f"{len(files)} checkpoints", seconds=seconds, checkpoints=files)
    return True


def part_tests(run: Run, summary: gs.Summary) -> None:
    junit, log = run.out / "tests-junit.xml", run.out / "tests.log"
    timeout = min(run.args.tests_budget_s, run.left())
    if timeout < 20:
        summary.part("tests", "not run", note="no time left in the budget")
        return
    summary.part("tests", "running", note=f"pytest -m gpu, at most {timeout:.0f} s")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        *GPU_TEST_FILES,
        "-p",
        "no:cacheprovider",
        "-v",
        "-rA",
        f"--junitxml={junit}",
        f"--basetemp={run.scratch / 'pytest'}",
    ]
    code, seconds = run_process(cmd, run.env, log, timeout)
    if junit.is_file():
        counts, failures, skips = gs.read_junit(junit)
    else:  # stopped before pytest wrote its report: what the verbose log says so far
        counts, failures, skips = gs.read_pytest_log(log.read_text(errors="replace"))
    fields = {"seconds": round(seconds, 1), "counts": counts, "failures": failures, "skip_reasons": skips}
    if code is None:
        summary.part("tests", "timeout", note=f"stopped after {seconds:.0f} s; see tests.log", **fields)
    elif counts.get("failed") or counts.get("errors") or code not in (0, 5):
        summary.part("tests", "failed", note=f"pytest exit {code}; see tests.log", **fields)
    elif counts.get("passed"):
        summary.part("tests", "passed", note=f"{counts['passed']} passed", **fields)
    else:
        summary.part(
            "tests",
            "skipped",
            note="every gpu test skipped: " + "; ".join(skips or ["none collected"]),
            **fields,
        )


def bench_specs(run: Run) -> tuple[Path, list[dict], str]:
    """(script, child specs in priority order, the Meta note): side by side when Meta's copy is there."""
    a = run.args
    on_gpu = a.device == "cuda"
    dtype = "bf16" if on_gpu else "fp32"  # bf16 on CPUs without AVX-512 BF16 is emulated, minutes a frame
    run_id = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    common = [
        "--configs",
        *a.configs,
        "--dtype",
        dtype,
        "--frames",
        str(a.frames),
        "--objects",
        *map(str, a.objects),
        "--track-repeats",
        str(a.track_repeats),
    ]
    if on_gpu:
        # the untimed warm-up tracks every frame, so that all compilation happens before the clock runs
        common += ["--compile", "--warmup-frames", str(a.frames)]
        common += ["--compile-mode", a.compile_mode] if a.compile_mode else []
    else:
        common += ["--warmup-frames", "1"]
    meta_dir = None
    if a.meta_repo:
        try:
            meta_dir = mr.meta_package_dir(a.meta_repo)
        except FileNotFoundError as e:
            return HERE / "bench_speed.py", [], f"Meta's copy unusable: {e}"
    if meta_dir is not None:
        args = mr.build_parser().parse_args(
            ["--meta-repo", str(meta_dir), "--device", a.device, *common] + (["--meta-vos"] if on_gpu else [])
        )
        mr.finalize_args(args)
        return (
            HERE / "meta_reference.py",
            mr.make_specs(args, a.device, meta_dir, run_id),
            f"Meta's sam2 from {meta_dir}",
        )
    args = bs.build_parser().parse_args(["--device", a.device, "--parts", "track", *common])
    specs = [{**s, "run_id": run_id} for s in bs.plan(args, [a.device])]
    return (
        HERE / "bench_speed.py",
        specs,
        "Meta's copy absent (.gpu-carry/meta; gpu_prepare.sh --meta-repo): ours only",
    )


def part_bench(run: Run, summary: gs.Summary, have_weights: bool) -> None:
    if not have_weights:
        summary.part("bench", "skipped", note="no test weights (see the weights part)")
        return
    script, specs, meta_note = bench_specs(run)
    entry = summary.part(
        "bench",
        "running",
        note=meta_note,
        items=[],
        meta="present" if "meta_reference" in script.name else "absent",
    )
    if not specs:
        summary.part("bench", "error", note=meta_note, items=[])
        return
    jsonl, log = run.out / "bench.jsonl", run.out / "bench.log"
    items = entry["items"]
    for spec in specs:
        timeout = run.left()
        if timeout < run.args.min_item_s:
            items.append(gs.bench_item(spec, None, "not run", 0.0, "no time left in the budget"))
            summary.write()
            continue
        child_log = run.scratch / f"child-{spec['config']}-{spec['objects']}.log"
        child_log.unlink(missing_ok=True)
        cmd = [sys.executable, str(script), "--child", json.dumps(spec), "--out", str(jsonl)]
        print(
            f"[gpu_check] bench {spec['config']} {spec['objects']} obj (at most {timeout:.0f} s)", flush=True
        )
        code, seconds = run_process(cmd, run.env, child_log, timeout)
        text = child_log.read_text(errors="replace")
        with log.open("a") as f:
            f.write(text)
        result, partial = gs.read_child(text)
        if result is not None:
            item = gs.bench_item(spec, result, "ok", seconds)
        elif code is None:
            item = gs.bench_item(
                spec, partial, "timeout", seconds, "stopped at the time budget; partial numbers"
            )
        else:
            last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["?"]
            item = gs.bench_item(spec, partial, "error", seconds, f"exit {code}: {last[0][:300]}")
        items.append(item)
        summary.write()
    statuses = {i["status"] for i in items}
    status = (
        "ok"
        if statuses == {"ok"}
        else "timeout"
        if "timeout" in statuses
        else "failed"
        if statuses & {"error"}
        else "not run"
    )
    summary.part(
        "bench",
        status,
        note=meta_note,
        items=items,
        meta=entry["meta"],
        seconds=round(sum(i["seconds"] for i in items), 1),
    )


# ====================================================================== driver


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument(
        "--frames", type=int, help="tracked frames after the prompted one (default: 60 on cuda, 2 on cpu)"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default $OUT, else benchmarks/results/gpu-check)",
    )
    ap.add_argument(
        "--budget-s", type=float, help="total time budget in seconds (default: 470 on cuda, 900 on cpu)"
    )
    ap.add_argument(
        "--tests-budget-s", type=float, help="at most this much for pytest -m gpu (default 180 / 300)"
    )
    ap.add_argument(
        "--min-item-s", type=float, help="start no benchmark item with less left than this (default 60 / 0)"
    )
    ap.add_argument(
        "--configs", nargs="+", help="variants (default sam2.1_hiera_t sam2.1_hiera_l on cuda, tiny on cpu)"
    )
    ap.add_argument("--objects", type=int, nargs="+", help="object counts (default 1 5 on cuda, 1 on cpu)")
    ap.add_argument(
        "--track-repeats", type=int, help="timed runs per implementation, median kept (default 3 / 1)"
    )
    ap.add_argument("--compile-mode", help="torch.compile mode of ours (default: compile_model's)")
    ap.add_argument("--carry", type=Path, default=ROOT / ".gpu-carry", help="what gpu_prepare.sh filled")
    ap.add_argument("--meta-repo", help="Meta's sam2 checkout or package (default: <carry>/meta when there)")
    ap.add_argument("--parts", nargs="+", choices=["tests", "bench"], default=["tests", "bench"])
    return ap


def defaults(args: argparse.Namespace) -> argparse.Namespace:
    gpu = args.device == "cuda"
    for name, on_gpu, on_cpu in (
        ("frames", 60, 2),
        ("budget_s", 470.0, 900.0),
        ("tests_budget_s", 180.0, 300.0),
        ("min_item_s", 60.0, 0.0),
        ("configs", ["sam2.1_hiera_t", "sam2.1_hiera_l"], ["sam2.1_hiera_t"]),
        ("objects", [1, 5], [1]),
        ("track_repeats", 3, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, on_gpu if gpu else on_cpu)
    if args.out is None:
        args.out = (
            Path(os.environ["OUT"])
            if os.environ.get("OUT")
            else ROOT / "benchmarks" / "results" / "gpu-check"
        )
    if args.meta_repo is None and (args.carry / "meta" / "sam2").is_dir():
        args.meta_repo = str(args.carry / "meta")
    return args


def main(argv: list[str] | None = None) -> int:
    args = defaults(build_parser().parse_args(argv))
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args)
    run.scratch.mkdir(parents=True, exist_ok=True)
    for name in ("bench.jsonl", "bench.log", "tests.log", "tests-junit.xml"):
        (args.out / name).unlink(missing_ok=True)
    header = {
        "date": bs.now_iso(),
        "command": shlex.join(["benchmarks/gpu_check.sh", *(sys.argv[1:] if argv is None else argv)]),
        "device": args.device,
        "frames": args.frames,
        "configs": args.configs,
        "objects": args.objects,
        "budget_s": args.budget_s,
    }
    summary = gs.Summary(args.out, header)
    summary.write()

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    interrupted = None
    try:
        if part_environment(run, summary) and part_install(run, summary):
            have_weights = part_weights(run, summary)
            if "tests" in args.parts:
                part_tests(run, summary)
            else:
                summary.part("tests", "skipped", note="not asked for (--parts)")
            if "bench" in args.parts:
                part_bench(run, summary, have_weights)
            else:
                summary.part("bench", "skipped", note="not asked for (--parts)")
        else:
            for p in ("weights", "tests", "bench"):
                summary.part(p, "skipped", note="the environment or install part failed")
    except KeyboardInterrupt as e:
        interrupted = f"interrupted: {e}" if str(e) else "interrupted"
    except Exception as e:  # noqa: BLE001 - whatever broke, the summary must say so
        interrupted = f"gpu_check.py crashed: {type(e).__name__}: {e}"
        import traceback

        traceback.print_exc()
    code = summary.finish(run.elapsed(), interrupted)
    print((args.out / "summary.md").read_text(), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
