#!/usr/bin/env bash
# The GPU check of issue 14 in one command (docs/gpu-check.md): installs what is missing from the
# carried wheels, then, in the order of what each second is worth: the eager `gpu` tests, ours side by
# side with Meta's SAM 2 with no compile on either side (tiny and large, 1 and 5 objects), if time is
# left the compiled side by side (tiny, 1 object) and the compile tests; writes summary.json /
# summary.md, every failed test's full report (tests-failures.txt) and the logs to --out (default
# $OUT, else benchmarks/results/gpu-check).
#
#   bash benchmarks/gpu_check.sh --device cuda --out "$OUT"              # on a GPU machine
#   bash benchmarks/gpu_check.sh --device cpu --frames 2 --out /tmp/x    # dry run on CPU
#   bash benchmarks/gpu_check.sh --help                                  # every option
#
# The work is done by benchmarks/gpu_check.py; this wrapper picks the python (python3, or
# $NAPARI_SAM2_PYTHON), keeps its whole output in gpu_check.log, and writes a summary itself if that
# driver dies before writing one, so the check never ends without saying why.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${NAPARI_SAM2_PYTHON:-python3}"

for a in "$@"; do
    case "$a" in -h | --help) exec "$py" "$here/gpu_check.py" "$@" ;; esac
done

out="${OUT:-$root/benchmarks/results/gpu-check}"
have_out=0
prev=""
for a in "$@"; do
    if [[ "$prev" == "--out" ]]; then out="$a"; have_out=1; fi
    if [[ "$a" == --out=* ]]; then out="${a#--out=}"; have_out=1; fi
    prev="$a"
done
extra=()
if [[ $have_out -eq 0 ]]; then extra=(--out "$out"); fi
mkdir -p "$out" || { echo "gpu_check.sh: cannot create the output folder $out" >&2; exit 2; }
rm -f "$out/summary.json" "$out/summary.md"

export PYTHONUNBUFFERED=1
set -o pipefail
"$py" "$here/gpu_check.py" "$@" "${extra[@]}" 2>&1 | tee "$out/gpu_check.log"
rc=${PIPESTATUS[0]}

if [[ ! -s "$out/summary.json" ]]; then
    [[ $rc -eq 0 ]] && rc=1
    printf '{"schema": 1, "status": "error", "exit_code": %d, "problems": ["benchmarks/gpu_check.py (run by %s) ended before writing a summary; see gpu_check.log"]}\n' \
        "$rc" "$py" >"$out/summary.json"
    {
        echo "# GPU check: ERROR"
        echo
        echo "benchmarks/gpu_check.py (run by \`$py\`) ended with exit code $rc before writing a summary."
        echo "Last lines of gpu_check.log:"
        echo
        echo '```'
        tail -n 30 "$out/gpu_check.log"
        echo '```'
    } >"$out/summary.md"
fi
exit "$rc"
