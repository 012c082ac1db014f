"""Gather what benchmarks/gpu_check.sh needs on a bare GPU machine into ``.gpu-carry/`` and print the call.

Run through ``benchmarks/gpu_prepare.sh`` here, where pip reaches the package index, before a device
call (the GPU machine reaches no network). It writes the git-ignored folder ``.gpu-carry/``:

- ``wheels/``: wheels of the small packages a run imports, for the CPython versions given (default
  3.10-3.12, manylinux x86_64), one version each (the one installed here), and ``requirements.txt``
  (``dist==version module`` per line). gpu_check.sh installs only those the machine's python lacks,
  with ``--no-deps`` into a scratch folder, so nothing can touch the machine's torch. The big binary
  ones (torch, numpy, scikit-image, scipy, Pillow) are expected there (KINDS.md lists them) and are
  checked by an import before anything runs;
- ``golden/``: the golden cases the gpu tests judge, their inputs, the weight generator and the
  manifests of the variants benchmarked (the test checkpoints themselves, 156 MB for tiny, are
  generated on the machine: they would not fit);
- ``meta/sam2/``: Meta's ``sam2`` package exported from the checkout given with ``--meta-repo`` (a
  work tree, its ``sam2/`` folder, or a bare git directory), with ``meta/REVISION``. Never committed;
- ``REVISION``: napari-sam2's git revision (the machine's copy of the tree has no git history).

It checks that the working tree plus ``.gpu-carry/`` fit in one device call (64 MiB) and prints the
call to make. docs/gpu-check.md walks through it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CARRY = ROOT / ".gpu-carry"
LIMIT = 64 * 2**20  # what one device call carries: working tree + carried paths

# (distribution, module): what a run imports beyond torch/numpy/scikit-image/scipy/Pillow.
WHEELS = [
    ("platformdirs", "platformdirs"),
    ("tqdm", "tqdm"),
    ("PyYAML", "yaml"),
    ("tifffile", "tifffile"),
    ("lazy_loader", "lazy_loader"),
    ("pytest", "pytest"),
    ("pluggy", "pluggy"),
    ("iniconfig", "iniconfig"),
    ("packaging", "packaging"),
    ("pygments", "pygments"),
]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
GOLDEN_CASES = ["image_truck_sam2.1t_s0", "video_bedroom_sam2.1t_s0", "video_bedroom_occlusion_sam2.1t_s0"]
GOLDEN_FILES = ["README.md", "compare.py", "goldenio.py", "tolerances.json", "sam2_test_weights.py"]


def die(msg: str) -> None:
    print(f"gpu_prepare: {msg}", file=sys.stderr)
    sys.exit(1)


def download_wheels(dest: Path, python_versions: list[str]) -> tuple[list[str], list[str]]:
    """Wheels for the given CPython versions (newest first) -> (requirements lines, notes)."""
    dest.mkdir(parents=True)
    lines, notes = [], []
    versions = sorted(python_versions, key=lambda v: tuple(int(x) for x in v.split(".")), reverse=True)
    for dist, module in WHEELS:
        try:
            spec = f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            spec = dist  # not installed here: the newest
        before = set(dest.glob("*.whl"))
        for pv in versions:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                pv,
                "--implementation",
                "cp",
                "-d",
                str(dest),
                spec,
            ]
            cmd += [a for p in PLATFORMS for a in ("--platform", p)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                if pv == versions[0]:
                    die(f"pip download {spec} for Python {pv} failed:\n{proc.stderr.strip()}")
                notes.append(f"{spec} has no wheel for Python {pv}: not carried for it")
                continue
            new = sorted(set(dest.glob("*.whl")) - before)
            if new and new[-1].name.endswith("-none-any.whl"):
                break  # pure Python: one wheel serves every version
        new = sorted(set(dest.glob("*.whl")) - before)
        if not new:
            die(f"no wheel of {dist} arrived in {dest}")
        lines.append(f"{dist}=={new[-1].name.split('-')[1]} {module}")
    (dest / "requirements.txt").write_text(
        "# dist==version module: installed by gpu_check.sh when the module is missing\n"
        + "\n".join(lines)
        + "\n"
    )
    return lines, notes


def copy_golden(src: Path, dest: Path, configs: list[str]) -> None:
    if not (src / "sam2_test_weights.py").is_file():
        die(f"{src} is not the golden folder (no sam2_test_weights.py); pass --golden DIR")
    dest.mkdir(parents=True)
    for name in GOLDEN_FILES:
        shutil.copy2(src / name, dest / name)
    inputs, needed_configs = set(), set(configs)
    for case in GOLDEN_CASES:
        shutil.copytree(src / case, dest / case)
        meta = json.loads((src / case / "case.json").read_text())
        needed_configs.add(meta["config"])
        inputs |= {(src / case / spec["file"]).resolve() for spec in meta["inputs"].values()}
    (dest / "inputs").mkdir()
    for f in sorted(inputs):
        shutil.copy2(f, dest / "inputs" / f.name)
    (dest / "manifests").mkdir()
    for config in sorted(needed_configs):
        shutil.copy2(src / "manifests" / f"{config}.json", dest / "manifests" / f"{config}.json")


def export_meta(repo: Path, dest: Path) -> str:
    """Meta's sam2 package from a work tree, its package folder or a bare git dir -> revision."""
    dest.mkdir(parents=True)
    for pkg in (repo / "sam2", repo):
        if (pkg / "sam2_video_predictor.py").is_file() and (pkg / "modeling").is_dir():
            shutil.copytree(pkg, dest / "sam2", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            proc = subprocess.run(
                ["git", "-C", str(pkg), "rev-parse", "HEAD"], capture_output=True, text=True
            )
            revision = proc.stdout.strip() or "unknown (not a git checkout)"
            break
    else:
        proc = subprocess.run(
            ["git", f"--git-dir={repo}", "rev-parse", "HEAD"], capture_output=True, text=True
        )
        if proc.returncode != 0:
            die(f"{repo} is neither a checkout of facebookresearch/sam2 nor a git directory of one")
        revision = proc.stdout.strip()
        with tempfile.TemporaryFile() as tar:
            # (a partial mirror may lack blobs outside sam2/; git then complains but exports sam2/ whole)
            proc = subprocess.run(
                ["git", f"--git-dir={repo}", "archive", "--format=tar", "HEAD", "sam2"],
                stdout=tar,
                stderr=subprocess.PIPE,
                text=True,
            )
            if proc.returncode != 0:
                die(f"git archive of sam2/ from {repo} failed: {proc.stderr.strip()}")
            tar.seek(0)
            with tarfile.open(fileobj=tar) as t:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: no paths outside dest
                    t.extractall(dest, filter="data")
                else:
                    t.extractall(dest)  # noqa: S202 - git archive of a known repository
        if not (dest / "sam2" / "sam2_video_predictor.py").is_file():
            die(f"{repo} has no sam2/sam2_video_predictor.py at HEAD")
    (dest / "REVISION").write_text(revision + "\n")
    return revision


def tree_bytes(root: Path) -> int:
    """Tracked and untracked-not-ignored files: what a device call sends besides the carried paths."""
    proc = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    )
    names = {n for n in proc.stdout.decode().split("\0") if n}
    return sum((root / n).stat().st_size for n in names if (root / n).is_file())


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--meta-repo", type=Path, help="Meta's facebookresearch/sam2: work tree, sam2/ folder or git dir"
    )
    ap.add_argument(
        "--golden",
        type=Path,
        help="the golden folder (default $NAPARI_SAM2_GOLDEN_DIR, else ../shared/golden)",
    )
    ap.add_argument(
        "--configs", nargs="+", default=["sam2.1_hiera_t", "sam2.1_hiera_l"], help="variants benchmarked"
    )
    ap.add_argument(
        "--python-versions",
        nargs="+",
        default=["3.12"],
        help="CPython versions of the machine's python (default 3.12, what KINDS.md saw there; e.g. 3.10 3.11 3.12)",
    )
    ap.add_argument("--no-wheels", action="store_true", help="carry no wheels")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # where the tests look for the goldens

    golden = args.golden or conftest.GOLDEN_DIR
    check = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", ".gpu-carry/x"])
    if check.returncode != 0:
        die(".gpu-carry/ is not git-ignored here: add '/.gpu-carry/' to .gitignore (or .git/info/exclude)")
    if CARRY.exists():
        shutil.rmtree(CARRY)
    CARRY.mkdir()
    notes = []
    if not args.no_wheels:
        lines, wheel_notes = download_wheels(CARRY / "wheels", args.python_versions)
        names = ", ".join(line.split()[0] for line in lines)
        notes += [f"wheels: {names} (Python {', '.join(args.python_versions)})", *wheel_notes]
    copy_golden(golden, CARRY / "golden", args.configs)
    notes.append(f"golden: {', '.join(GOLDEN_CASES)} from {golden}")
    if args.meta_repo:
        revision = export_meta(args.meta_repo.expanduser().resolve(), CARRY / "meta")
        notes.append(f"Meta's sam2 at {revision} from {args.meta_repo}")
    else:
        notes.append("no --meta-repo: the benchmark will run ours only (no side by side with Meta)")
    # the machine's copy of the tree has no git history: the summary reads the revision from here
    sys.path.insert(0, str(HERE))
    import bench_speed

    (CARRY / "REVISION").write_text(f"{bench_speed.git_revision()}\n")
    tree, carry = tree_bytes(ROOT), folder_bytes(CARRY)
    sizes = {p.name: folder_bytes(p) for p in sorted(CARRY.iterdir()) if p.is_dir()}
    print("\n".join(f"  {n}" for n in notes))
    print(
        f"sizes: working tree {tree / 2**20:.1f} MiB + .gpu-carry {carry / 2**20:.1f} MiB ("
        + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sizes.items())
        + f") = {(tree + carry) / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB"
    )
    if tree + carry > LIMIT:
        die("too much for one device call: drop --python-versions you do not need, or untracked files")
    print("\nthe device call (one; about 8 minutes; read docs/gpu-check.md first):\n")
    print(
        '  run(command="bash benchmarks/gpu_check.sh --device cuda --out $OUT", carry=[".gpu-carry"], timeout_s=570)'
    )
    print(
        "\nthen read $OUT/summary.md (files_at/summary.md here) and put the numbers into docs/benchmarks.md"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
