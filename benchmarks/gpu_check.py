"""The GPU check of issue 14 in one command, in the order of what each second of device time is worth.

Run it through ``benchmarks/gpu_check.sh`` (which also writes a summary should this driver not start):

    bash benchmarks/gpu_check.sh --device cuda --out "$OUT"             # on a GPU machine
    bash benchmarks/gpu_check.sh --device cpu --frames 2 --out /tmp/x   # the dry run on CPU

Parts, in order, each with its status in the summary:

1. ``environment`` (python, torch, GPU);
2. ``install`` (the wheels carried in ``.gpu-carry/wheels`` that this python lacks, with ``--no-deps``
   into a scratch folder, never over the installed torch);
3. ``weights`` (the deterministic test checkpoints, generated once);
4. ``tests_eager``: ``pytest -m "gpu and not compile"``, with its own budget, so that it ends normally
   with its JUnit XML;
5. ``bench_eager``: per variant and object count, in a fresh process each, ours in bf16 side by side
   with Meta's plain ``SAM2VideoPredictor`` in bf16, no torch.compile on either side (seconds per pass);
6. ``bench_compiled``, only if enough time is left: ours with torch.compile (inductor's ``default``
   mode unless ``--compile-mode``) side by side with Meta's ``SAM2VideoPredictorVOS`` (vos_optimized:
   all of Meta's components compiled with max-autotune), tiny and one object unless told otherwise;
7. ``tests_compiled``: ``pytest -m "gpu and compile"``, last, with what time is left.

Meta's code is read from the copy in ``.gpu-carry/meta``; without it the benchmarks run ours alone.
Both pytest runs load ``gpu_check_plugin`` (beside this file), which writes every failed test's full
report to ``tests-failures.txt`` and to ``tests.log`` the moment it fails; a run that reaches its
budget gets SIGINT first, so that pytest still prints its report and writes its JUnit XML. The whole
run keeps to ``--budget-s``: a part that would run past it is stopped (its partial numbers kept) or not
started, and says so. What it writes to ``--out`` (8 files, one folder, as a device call brings back
at most): summary.json, summary.md, tests-junit.xml (both pytest runs), tests-failures.txt, tests.log,
bench.jsonl, bench.log, and gpu_check.log from the shell wrapper. docs/gpu-check.md explains all this.
"""

from __future__ import annotations

import argparse
import contextlib
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
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_speed as bs  # noqa: E402
import gpu_check_summary as gs  # noqa: E402
import meta_reference as mr  # noqa: E402

GPU_TEST_FILES = ["tests/engine/test_gpu.py"]
# The two pytest runs: marker expression, and the budget option that caps each.
TEST_RUNS = {"tests_eager": "gpu and not compile", "tests_compiled": "gpu and compile"}
# Modules a run imports (engine, tests, Meta's package); a missing one is named before anything runs.
REQUIRED_MODULES = ["numpy", "torch", "yaml", "skimage", "PIL", "tqdm", "pytest", "tifffile"]
RESERVE_S = 15  # kept back from every part for writing the summary
# A pytest run at its budget gets SIGINT this long before it, so that it prints its report and
# writes its JUnit XML (it stops within seconds even while compiling), then SIGTERM, then SIGKILL.
PYTEST_GRACE_S = 20
FAILURES_FILE = "tests-failures.txt"
OUT_FILES = (  # everything the check writes to --out: a device call brings back at most 8 files
    "summary.json",
    "summary.md",
    "gpu_check.log",
    "tests.log",
    "tests-junit.xml",
    FAILURES_FILE,
    "bench.jsonl",
    "bench.log",
)
# --parts: each part by name, and "tests" / "bench" for both of a kind.
PART_CHOICES = {
    "tests-eager": ["tests_eager"],
    "bench-eager": ["bench_eager"],
    "bench-compiled": ["bench_compiled"],
    "tests-compiled": ["tests_compiled"],
    "tests": ["tests_eager", "tests_compiled"],
    "bench": ["bench_eager", "bench_compiled"],
}
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
        self.junit: dict[str, Path] = {}  # each pytest run's JUnit XML, merged into tests-junit.xml
        self.bench_configs: list[str] = []  # the variants of the benchmark parts asked for
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


def run_process(
    cmd: list[str], env: dict, log: Path, timeout: float, grace: float = 0.0
) -> tuple[int | None, float, bool]:
    """Run ``cmd`` in its own process group, output appended to ``log``: (exit code, seconds,
    whether it was stopped at ``timeout``). With ``grace``, the process gets SIGINT ``grace``
    seconds before ``timeout`` and those seconds to end itself (pytest then still reports); then
    the whole group is stopped, compile workers too."""
    t0 = time.monotonic()
    with log.open("a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=max(1.0, timeout - grace)), time.monotonic() - t0, False
        except subprocess.TimeoutExpired:
            pass
        code = None
        if grace > 0:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                code = None
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):  # what is left of the group
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        f.write(f"\n[gpu_check] stopped after {time.monotonic() - t0:.0f} s (time budget {timeout:.0f} s)\n")
        return code, time.monotonic() - t0, True


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
    mods = [*REQUIRED_MODULES, "napari_sam2.engine.predict.video_predictor", "napari_sam2.plugin.sample_data"]
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
            [
                sys.executable,
                "-c",
                WEIGHTS_CODE,
                *run.bench_configs,
            ],
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


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _tail_from(path: Path, offset: int) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def merge_junit(out: Path, reports: dict[str, Path]) -> None:
    """tests-junit.xml: the test suites of every pytest run so far, each named after its part."""
    root = ET.Element("testsuites")
    for name, path in reports.items():
        try:
            suites = list(ET.parse(path).getroot().iter("testsuite"))
        except (OSError, ET.ParseError):
            continue
        for suite in suites:
            suite.set("name", name)
            root.append(suite)
    if len(root):
        ET.ElementTree(root).write(out / "tests-junit.xml", encoding="utf-8", xml_declaration=True)


def part_tests(run: Run, summary: gs.Summary, name: str) -> None:
    """One pytest run (``name`` in TEST_RUNS), within its budget; every failure's details kept."""
    a = run.args
    cap = a.tests_budget_s if name == "tests_eager" else None
    least = 20.0 if name == "tests_eager" else a.min_compile_tests_s
    left = run.left()
    timeout = min(cap, left) if cap else left
    if timeout < least:
        status = "not run" if name == "tests_eager" else "skipped"
        summary.part(name, status, note=f"no time left in the budget ({left:.0f} s left, needs {least:.0f})")
        return
    expr = TEST_RUNS[name]
    summary.part(name, "running", note=f"pytest -m '{expr}', at most {timeout:.0f} s")
    print(f"[gpu_check] {name}: pytest -m '{expr}' (at most {timeout:.0f} s)", flush=True)
    log, failures = run.out / "tests.log", run.out / FAILURES_FILE
    junit = run.scratch / f"junit-{name}.xml"
    junit.unlink(missing_ok=True)
    log_at, failures_at = _size(log), _size(failures)
    extra = [str(p) for p in a.extra_tests] if name == "tests_eager" else []
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        expr,
        *GPU_TEST_FILES,
        *extra,
        "-c",
        str(ROOT / "pyproject.toml"),
        "--rootdir",
        str(ROOT),
        "-p",
        "gpu_check_plugin",
        f"--failures-file={failures}",
        "-p",
        "no:cacheprovider",
        "-v",
        "-rA",
        f"--junitxml={junit}",
        f"--basetemp={run.scratch / ('pytest-' + name)}",
    ]
    env = dict(run.env, PYTHONPATH=os.pathsep.join([str(HERE), run.env["PYTHONPATH"]]))
    code, seconds, stopped = run_process(cmd, env, log, timeout, grace=min(PYTEST_GRACE_S, timeout / 4))
    run.junit[name] = junit
    merge_junit(run.out, {k: v for k, v in run.junit.items() if v.is_file()})
    if junit.is_file():
        counts, found, skips = gs.read_junit(junit)
        durations = gs.junit_seconds(junit)
    else:  # killed before pytest wrote its report: what the verbose log says so far
        counts, found, skips = gs.read_pytest_log(_tail_from(log, log_at))
        durations = {}
    recorded = gs.read_failures(_tail_from(failures, failures_at))
    fields = {
        "seconds": round(seconds, 1),
        "counts": counts,
        "failures": gs.merge_failures(found, recorded),
        "skip_reasons": skips,
        "test_seconds": durations,
        "junit": junit.is_file(),
    }
    for f in fields["failures"]:
        first = (str(f.get("message", "")).splitlines() or [""])[0]
        print(f"[gpu_check] {name}: {f.get('outcome', 'failed')} {f['test']}: {first}", flush=True)
    done = sum(counts.values())
    if stopped:
        summary.part(
            name,
            "timeout",
            note=(
                f"stopped at its budget after {seconds:.0f} s, {done} tests finished"
                + ("" if junit.is_file() else ", no JUnit XML (killed)")
                + "; every failure's full report in tests-failures.txt"
            ),
            **fields,
        )
    elif counts.get("failed") or counts.get("errors") or recorded or code not in (0, 5):
        summary.part(name, "failed", note=f"pytest exit {code}; full reports in tests-failures.txt", **fields)
    elif counts.get("passed"):
        summary.part(name, "passed", note=f"{counts['passed']} passed", **fields)
    else:
        summary.part(
            name,
            "skipped",
            note="every test skipped: " + "; ".join(skips or ["none collected"]),
            **fields,
        )


def bench_specs(run: Run, name: str) -> tuple[Path, list[dict], str]:
    """(script, child specs in priority order, the Meta note) of a benchmark part: side by side
    with Meta when its copy is there. Order: every variant with 1 object, then with 5 (the FPS
    targets are for 1 object; the 5-object cost needs both); within a count the variants in the
    order asked for (tiny first), each in every precision of ``--dtypes`` (fp32, then bf16)."""
    a = run.args
    on_gpu = a.device == "cuda"
    compiled = name == "bench_compiled"
    # the compiled side by side is bf16 (Meta's fastest mode is); the eager one each of --dtypes
    dtypes = ["bf16" if on_gpu else "fp32"] if compiled else a.dtypes
    run_id = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    configs = a.compiled_configs if compiled else a.configs
    objects = a.compiled_objects if compiled else a.objects
    specs: list[dict] = []
    script, note = HERE / "bench_speed.py", ""
    for dtype in dtypes:
        script, more, note = _bench_specs_of(run, compiled, dtype, configs, objects, run_id)
        specs += more
    # Priority: every variant with 1 object before 5 (the FPS targets are for 1 object), the variants
    # in the order asked for (tiny first: its numbers come within seconds), each in every precision.
    rank = {k: i for i, k in enumerate(objects)}
    crank = {c: i for i, c in enumerate(configs)}
    drank = {d: i for i, d in enumerate(dtypes)}
    specs.sort(key=lambda s: (rank[s["objects"]], crank[s["config"]], drank[s["dtype"]]))
    return script, specs, note


def _bench_specs_of(
    run: Run, compiled: bool, dtype: str, configs: list[str], objects: list[int], run_id: str
) -> tuple[Path, list[dict], str]:
    a = run.args
    on_gpu = a.device == "cuda"
    common = ["--configs", *configs, "--dtype", dtype, "--frames", str(a.frames)]
    common += ["--objects", *map(str, objects), "--track-repeats", str(a.track_repeats)]
    # the untimed warm-up tracks every frame: every shape is seen (and, compiled, every graph
    # compiled) before the clock runs
    common += ["--warmup-frames", str(a.frames if on_gpu else 1)]
    if compiled:
        common += ["--compile", "--compile-mode", a.compile_mode]
    meta_dir = None
    if a.image_size:  # a quick dry run: the model at another size, which Meta's side has no option for
        common += ["--image-size", str(a.image_size)]
    elif a.meta_repo:
        try:
            meta_dir = mr.meta_package_dir(a.meta_repo)
        except FileNotFoundError as e:
            return HERE / "bench_speed.py", [], f"Meta's copy unusable: {e}"
    if meta_dir is not None:
        args = mr.build_parser().parse_args(
            ["--meta-repo", str(meta_dir), "--device", a.device, *common]
            + (["--meta-vos"] if compiled else [])
        )
        mr.finalize_args(args)
        script, specs = HERE / "meta_reference.py", mr.make_specs(args, a.device, meta_dir, run_id)
        meta = "SAM2VideoPredictorVOS (vos_optimized)" if compiled else "SAM2VideoPredictor, eager"
        note = f"Meta's {meta} from {meta_dir}"
    else:
        args = bs.build_parser().parse_args(["--device", a.device, "--parts", "track", *common])
        script = HERE / "bench_speed.py"
        specs = [{**s, "run_id": run_id} for s in bs.plan(args, [a.device])]
        note = "Meta's copy absent (.gpu-carry/meta; gpu_prepare.sh --meta-repo): ours only"
        if a.image_size:
            note = f"--image-size {a.image_size}: ours only, at that input size (not the variant's numbers)"
    return script, specs, note


def part_bench(run: Run, summary: gs.Summary, name: str, have_weights: bool) -> None:
    a = run.args
    compiled = name == "bench_compiled"
    if not have_weights:
        summary.part(name, "skipped", note="no test weights (see the weights part)")
        return
    if compiled and a.device != "cuda":
        summary.part(
            name,
            "skipped",
            note="dry run on CPU: compiling takes minutes on a CPU; the compiled side by side is for the GPU",
        )
        return
    left = run.left()
    least = a.min_compiled_s if compiled else a.min_item_s
    if left < max(least, 1.0):
        status = "skipped" if compiled else "not run"
        summary.part(
            name,
            status,
            note=f"no time left in the budget ({left:.0f} s left, needs {least:.0f})"
            + ("; ours' first compiled run alone took 112 s on an H200" if compiled else ""),
        )
        return
    part_budget = left if compiled or not a.bench_budget_s else min(a.bench_budget_s, left)
    part_end = time.monotonic() + part_budget
    script, specs, meta_note = bench_specs(run, name)
    entry = summary.part(
        name,
        "running",
        note=meta_note,
        items=[],
        meta="present" if "meta_reference" in script.name else "absent",
    )
    if not specs:
        summary.part(name, "error", note=meta_note, items=[])
        return
    jsonl, log = run.out / "bench.jsonl", run.out / "bench.log"
    items = entry["items"]
    for spec in specs:
        timeout = min(part_end - time.monotonic(), run.left())
        if not compiled and a.item_budget_s:
            timeout = min(timeout, a.item_budget_s)
        if timeout < a.min_item_s or timeout < 1:
            items.append(gs.bench_item(spec, None, "not run", 0.0, f"no time left in the {name} budget"))
            summary.write()
            continue
        cmd = [sys.executable, str(script), "--child", json.dumps(spec), "--out", str(jsonl)]
        what = f"{spec['config']} {spec['dtype']} {spec['objects']} obj"
        print(f"[gpu_check] {name} {what} (at most {timeout:.0f} s)", flush=True)
        # The child writes straight into bench.log in --out: every number it measures (ours' run
        # before Meta's starts) is there the moment it is measured, even if the call is cut short.
        start_at = log.stat().st_size if log.exists() else 0
        code, seconds, stopped = run_process(cmd, run.env, log, timeout)
        with log.open("rb") as f:
            f.seek(start_at)
            text = f.read().decode(errors="replace")
        result, partial = gs.read_child(text)
        if result is not None:
            item = gs.bench_item(spec, result, "ok", seconds)
        elif stopped:
            where = gs.stage_reached(spec, partial)
            item = gs.bench_item(
                spec, partial, "timeout", seconds, f"stopped at its time budget, {seconds:.0f} s, {where}"
            )
        else:
            last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["?"]
            item = gs.bench_item(spec, partial, "error", seconds, f"exit {code}: {last[0][:300]}")
        print(f"[gpu_check] {name} {what}: {item['status']}", flush=True)
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
        name,
        status,
        note=meta_note,
        items=items,
        meta=entry["meta"],
        seconds=round(sum(i["seconds"] for i in items), 1),
    )


# ====================================================================== driver


def _image_size(text: str) -> int:
    size = int(text)
    if size < 64 or size % 64:
        raise argparse.ArgumentTypeError(f"--image-size must be a positive multiple of 64; got {size}")
    return size


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
        "--tests-budget-s",
        type=float,
        help="at most this much for the eager tests (default 120 / 300; the first benchmark numbers then come "
        "within 5 minutes of a fresh machine); the compile tests get what is left",
    )
    ap.add_argument(
        "--bench-budget-s",
        type=float,
        help="at most this much for the eager benchmark, all items (default 240 on cuda; no cap on cpu)",
    )
    ap.add_argument(
        "--item-budget-s",
        type=float,
        help="at most this much for one eager benchmark item (default 120 on cuda; no cap on cpu)",
    )
    ap.add_argument(
        "--min-item-s", type=float, help="start no benchmark item with less left than this (default 30 / 0)"
    )
    ap.add_argument(
        "--min-compiled-s",
        type=float,
        help="start the compiled side by side only with this much left (default 150: ours' compile alone took 112 s)",
    )
    ap.add_argument(
        "--min-compile-tests-s",
        type=float,
        help="start the compile tests only with this much left (default 120 on cuda: a compile takes ~110 s)",
    )
    ap.add_argument(
        "--configs",
        nargs="+",
        help="eager variants (default sam2.1_hiera_t sam2.1_hiera_l on cuda, tiny on cpu)",
    )
    ap.add_argument(
        "--objects", type=int, nargs="+", help="eager object counts (default 1 5 on cuda, 1 on cpu)"
    )
    ap.add_argument(
        "--dtypes",
        nargs="+",
        choices=["fp32", "bf16"],
        help="precisions of the eager side by side, each variant in each (default fp32 bf16 on cuda, fp32 on cpu: "
        "bf16 on a CPU without AVX-512 BF16 is emulated, minutes a frame)",
    )
    ap.add_argument(
        "--compiled-configs", nargs="+", help="variants of the compiled side by side (default sam2.1_hiera_t)"
    )
    ap.add_argument(
        "--compiled-objects",
        type=int,
        nargs="+",
        help="object counts of the compiled side by side (default 1)",
    )
    ap.add_argument(
        "--track-repeats", type=int, help="timed runs per implementation, median kept (default 3 / 1)"
    )
    ap.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode of ours in the compiled side by side: 'default' (inductor's default, the "
        "default here: 112 s to compile tiny on an H200) or e.g. 'max-autotune-no-cudagraphs' (compile_model's "
        "own; over 245 s there)",
    )
    ap.add_argument(
        "--image-size",
        type=_image_size,
        help="benchmark ours alone with the model at this input size (a multiple of 64), not the variant's "
        "1024: for a quick dry run on a CPU (tests/test_gpu_check_dryrun.py uses 128); never for real numbers",
    )
    ap.add_argument("--carry", type=Path, default=ROOT / ".gpu-carry", help="what gpu_prepare.sh filled")
    ap.add_argument("--meta-repo", help="Meta's sam2 checkout or package (default: <carry>/meta when there)")
    ap.add_argument(
        "--parts",
        nargs="+",
        choices=list(PART_CHOICES),
        default=["tests-eager", "bench-eager", "bench-compiled", "tests-compiled"],
        help="which parts to run, always in the order of the list above (environment, install and weights "
        "always run); 'tests' and 'bench' name both of a kind",
    )
    ap.add_argument(
        "--extra-tests",
        nargs="+",
        type=Path,
        default=[],
        help="more test files for the eager pytest run (marked gpu); the CPU dry run injects a failing one "
        "to prove that failure details are kept",
    )
    return ap


def defaults(args: argparse.Namespace) -> argparse.Namespace:
    gpu = args.device == "cuda"
    for name, on_gpu, on_cpu in (
        ("frames", 60, 2),
        ("budget_s", 470.0, 900.0),
        ("tests_budget_s", 120.0, 300.0),
        ("bench_budget_s", 240.0, None),
        ("item_budget_s", 120.0, None),
        ("min_item_s", 30.0, 0.0),
        ("min_compiled_s", 150.0, 150.0),
        ("min_compile_tests_s", 120.0, 20.0),
        ("configs", ["sam2.1_hiera_t", "sam2.1_hiera_l"], ["sam2.1_hiera_t"]),
        ("objects", [1, 5], [1]),
        ("dtypes", ["fp32", "bf16"], ["fp32"]),
        ("compiled_configs", ["sam2.1_hiera_t"], ["sam2.1_hiera_t"]),
        ("compiled_objects", [1], [1]),
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
    args.extra_tests = [p.resolve() for p in args.extra_tests]
    return args


def main(argv: list[str] | None = None) -> int:
    args = defaults(build_parser().parse_args(argv))
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args)
    run.scratch.mkdir(parents=True, exist_ok=True)
    for name in OUT_FILES:
        if name not in ("gpu_check.log", "summary.json", "summary.md"):  # the wrapper's, and rewritten
            (args.out / name).unlink(missing_ok=True)
    wanted = {p for choice in args.parts for p in PART_CHOICES[choice]}
    header = {
        "date": bs.now_iso(),
        "command": shlex.join(["benchmarks/gpu_check.sh", *(sys.argv[1:] if argv is None else argv)]),
        "device": args.device,
        "frames": args.frames,
        "configs": args.configs if "bench_eager" in wanted else [],
        "objects": args.objects,
        "dtypes": args.dtypes,
        "compiled_configs": args.compiled_configs if "bench_compiled" in wanted else [],
        "compiled_objects": args.compiled_objects,
        "compile_mode": args.compile_mode,
        "budget_s": args.budget_s,
        "budgets_s": {
            "tests_eager": args.tests_budget_s,
            "bench_eager": args.bench_budget_s,
            "bench_eager_item": args.item_budget_s,
            "bench_compiled_least": args.min_compiled_s,
            "tests_compiled_least": args.min_compile_tests_s,
        },
    }
    run.bench_configs = list(dict.fromkeys(header["configs"] + header["compiled_configs"]))
    summary = gs.Summary(args.out, header)
    summary.write()

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    interrupted = None
    try:
        if part_environment(run, summary) and part_install(run, summary):
            have_weights = part_weights(run, summary)
            for name in gs.PARTS[3:]:
                if name not in wanted:
                    summary.part(name, "skipped", note="not asked for (--parts)")
                elif name.startswith("tests"):
                    part_tests(run, summary, name)
                else:
                    part_bench(run, summary, name, have_weights)
        else:
            for p in gs.PARTS[2:]:
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
