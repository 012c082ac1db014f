#!/usr/bin/env bash
# Gather into .gpu-carry/ (git-ignored) what benchmarks/gpu_check.sh needs on a bare GPU machine that
# reaches no network: wheels of the small packages a run imports, the golden cases the gpu tests judge,
# and Meta's sam2 package for the side-by-side benchmark (never committed). Checks that one device
# call can carry it (64 MiB with the working tree) and prints that call. Run it here, before the call.
#
#   bash benchmarks/gpu_prepare.sh --meta-repo PATH [--golden DIR] [--configs ...] [--python-versions ...] [--no-wheels]
#
# --meta-repo: Meta's facebookresearch/sam2 as a work tree, its sam2/ folder, or a bare git directory.
# Everything is explained in docs/gpu-check.md; the work is done by benchmarks/gpu_prepare.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${NAPARI_SAM2_PYTHON:-python3}" "$here/gpu_prepare.py" "$@"
