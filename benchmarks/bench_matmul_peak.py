"""What this machine's matrix units deliver, in fp32 and bf16 (GFLOP/s).

A ceiling for the model's speed: a tracked frame of SAM 2.1 tiny is ~913 GFLOP of mostly
matrix products (Meta's count), each extra object ~621 GFLOP. Dividing by the GFLOP/s
measured here gives the fastest a frame could possibly be on this device and precision,
whatever the implementation.

Shapes are the model's own: the memory-attention cross-attention product (4096 queries,
7 x 4096 + 64 memory tokens, head dim 256), a square GEMM, and a Hiera-tiny MLP layer
(16384 tokens x 96 -> 384 channels at the first stage).

    python benchmarks/bench_matmul_peak.py                 # cpu, fp32 and bf16
    python benchmarks/bench_matmul_peak.py --device cuda --threads 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_speed import append_jsonl, command_line, machine_info, now_iso, sync  # noqa: E402

# (name, m, k, n): C[m, n] = A[m, k] @ B[k, n]
SHAPES = (
    ("square 4096", 4096, 4096, 4096),
    ("memory attention q.k (4096 x 256 x 28736)", 4096, 256, 28736),
    ("memory attention attn.v (4096 x 28736 x 256)", 4096, 28736, 256),
    ("hiera-t stage-1 MLP (16384 x 96 x 384)", 16384, 96, 384),
)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def gflops(m: int, k: int, n: int, dtype: str, device: str, repeats: int) -> dict:
    import torch

    dt = getattr(torch, DTYPES[dtype])
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device=device, dtype=dt)
    b = torch.randn(k, n, generator=g).to(device=device, dtype=dt)
    torch.mm(a, b)  # warm-up: kernel selection, first-touch of the output
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        times.append(time.perf_counter() - t)
    best, median = min(times), statistics.median(times)
    flop = 2.0 * m * k * n
    return {
        "gflop": round(flop / 1e9, 2),
        "best_s": round(best, 4),
        "median_s": round(median, 4),
        "gflops_best": round(flop / best / 1e9, 1),
        "gflops_median": round(flop / median / 1e9, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "matmul_peak.jsonl")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    header = {
        "kind": "run",
        "script": "bench_matmul_peak",
        "command": command_line(),
        "date": now_iso(),
        "machine": machine_info(),
        "device": args.device,
    }
    append_jsonl(args.out, header)
    print(json.dumps(header))
    print()
    print("| product | " + " | ".join(f"{d} GFLOP/s (best / median)" for d in args.dtype) + " |")
    print("|---|" + "---|" * len(args.dtype))
    for name, m, k, n in SHAPES:
        cells = []
        for dtype in args.dtype:
            r = gflops(m, k, n, dtype, args.device, args.repeats)
            append_jsonl(
                args.out,
                {
                    "kind": "matmul",
                    "shape": name,
                    "m": m,
                    "k": k,
                    "n": n,
                    "dtype": dtype,
                    "device": args.device,
                    **r,
                },
            )
            cells.append(f"{r['gflops_best']:.0f} / {r['gflops_median']:.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
