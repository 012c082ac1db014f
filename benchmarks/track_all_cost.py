"""What tracking every cell costs: tracking alone, full re-seeding every N frames, every-frame discovery.

On the plugin's synthetic lineage sample (``synthetic_lineage_timelapse()``: 60 frames of
256 x 256, 9 cells on frame 0, divisions, cells entering and leaving), tiny variant, the
tests' deterministic test weights (``tests/conftest.make_test_checkpoint``), fp32. The start
frame's objects are the ground truth's cells of that frame (``start_labels``, as a user who
corrected the seeds would give them): the random test weights would seed an arbitrary
number of junk objects, and tracking's cost grows with the number of objects.

The configurations, all from the same start seeds:

- ``track``: propagation of the start frame's seeds alone (no re-seed, no discovery);
- ``reseed1`` / ``reseed5`` / ``reseed10``: full re-seeding (segment everything) every 1 / 5 /
  10 frames, discovery off;
- ``discover+reseed10``: every-frame discovery and a full re-seed every 10 frames;
- ``discover``: every-frame discovery, never a full re-seed.

Two modes:

- ``--mode runs``: the six configurations are six real track-all runs over the same frames,
  one after the other in this process (the model built once). The honest side-by-side, for a
  machine that can afford it (a GPU, or a quiet CPU: on the 2-core CPU shared by five
  agents where this was written, tracking the 9 cells costs about 100 s a frame, so six runs
  over the 11 frames that a re-seed every 10 frames needs would take about two hours).
- ``--mode components`` (default): ONE run with discovery on and never a full re-seed,
  which on every frame after the start also performs a full re-seed of that frame, timed
  and thrown away (a "shadow" re-seed: its masks do not enter the run). Every component a
  configuration is made of is so measured on the same frames in the same process: tracking
  (propagation, resolving the logits, the lost/division rules), discovery, a full re-seed;
  a configuration's cost per frame is then ``tracking + full_reseed / N + discovery x (the
  fraction of frames not re-seeded)``. What this leaves out: a re-seed or discovery that
  adds tracks makes the following frames' tracking dearer (more objects), which the random
  test weights would do arbitrarily anyway.

Measured in both modes: seconds per frame, image-encoder forward calls (a forward pre-hook on
``model.image_encoder``) per frame, by phase (tracking, discovery, full re-seed: the last two
must add none, they read the tracker's features), the generator's share of the time, prompt
points per frame, and the ratio to tracking alone.

    PYTHONPATH=src nice -n 15 python benchmarks/track_all_cost.py --frames 5 --points-per-side 8
    PYTHONPATH=src python benchmarks/track_all_cost.py --mode runs --frames 20 --device cuda

``--predictor standin`` replaces the model by the ground-truth stand-ins of ``tests/fakes.py``
(no encoder; a smoke test of the benchmark's plumbing, seconds).

Records (a header, one per measured run and one per configuration) are appended as JSON
lines to ``--out``; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name -> (reseed_every, discovery on)
CONFIGS: dict[str, tuple[int, bool]] = {
    "track": (0, False),
    "reseed1": (1, False),
    "reseed5": (5, False),
    "reseed10": (10, False),
    "discover+reseed10": (10, True),
    "discover": (0, True),
}
PHASES = ("start", "tracking", "discovery", "reseed", "shadow")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["components", "runs"], default="components")
    ap.add_argument("--predictor", choices=["model", "standin"], default="model")
    ap.add_argument("--frames", type=int, default=5, help="tracked frames after the start frame (default 5)")
    ap.add_argument("--start", type=int, default=0, help="start frame (default 0)")
    ap.add_argument(
        "--points-per-side",
        type=int,
        default=8,
        help="grid of the full re-seeds (default 8, i.e. 64 points: the default 32 x 32 takes minutes "
        "a frame on a CPU)",
    )
    ap.add_argument("--config", default="sam2.1_hiera_t", help="model variant (default tiny)")
    ap.add_argument("--checkpoint", default=None, help="checkpoint (default: the tests' test weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), help="(--mode runs)"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "track_all_cost.jsonl")
    return ap


class Meter:
    """Seconds, encoder passes and generator calls, by the phase of the run they fall in."""

    def __init__(self) -> None:
        self.phase = "start"
        self.encoder = dict.fromkeys(PHASES, 0)
        self.encoder_s = dict.fromkeys(PHASES, 0.0)
        self.generator = dict.fromkeys(PHASES, 0)
        self.generator_s = dict.fromkeys(PHASES, 0.0)
        self.points = dict.fromkeys(PHASES, 0)
        self.shadow_seeds: list[int] = []  # objects each shadow re-seed kept
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._enc_t0 = 0.0
        self._t = time.perf_counter()

    def switch(self, phase: str) -> str:
        now = time.perf_counter()
        self.seconds[self.phase] += now - self._t
        self._t, old, self.phase = now, self.phase, phase
        return old

    def hook_encoder(self, model: Any) -> list[Any]:
        def pre(module, args):
            self.encoder[self.phase] += 1
            self._enc_t0 = time.perf_counter()

        def post(module, args, out):
            self.encoder_s[self.phase] += time.perf_counter() - self._enc_t0

        return [
            model.image_encoder.register_forward_pre_hook(pre),
            model.image_encoder.register_forward_hook(post),
        ]

    def wrap_generator(self, generator: Any) -> None:
        """Time the generator's ``generate`` (the instance's; its signature kept, so that
        with_stack_contrast still passes the stack's normaliser) and count its prompts."""
        inner = generator.generate

        @functools.wraps(inner)
        def generate(*args: Any, **kwargs: Any) -> Any:
            grids = getattr(generator, "point_grids", None)
            self.points[self.phase] += int(sum(len(g) for g in grids)) if grids is not None else 0
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.generator[self.phase] += 1
                self.generator_s[self.phase] += time.perf_counter() - t

        generator.generate = generate


class _StandinGenerator:
    """The ground-truth generator with a ``generate`` method (so the meter can time it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def generate(self, frame: Any) -> Any:
        return self.inner(frame)


def make_engine(args: argparse.Namespace, image: Any, labels: Any) -> tuple[Any, Any, Any]:
    """(a factory of predictors, the generator, the model or None)."""
    if args.predictor == "standin":
        sys.path.insert(0, str(ROOT / "tests"))
        from fakes import GroundTruthMaskGenerator, GroundTruthPredictor

        return (
            (lambda: GroundTruthPredictor(labels)),
            _StandinGenerator(GroundTruthMaskGenerator(image, labels)),
            None,
        )
    from napari_sam2.engine.cells.seeding import default_mask_generator
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.weights.build import build_sam2_model

    checkpoint = args.checkpoint
    if checkpoint is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_test_checkpoint  # the tests' deterministic weights

        checkpoint = make_test_checkpoint(args.config)
    model = build_sam2_model(args.config, checkpoint, args.device)
    generator = default_mask_generator(model, points_per_side=args.points_per_side)
    return (lambda: SAM2VideoPredictor(model)), generator, model


def instrumented_run_class(meter: Meter, shadow: bool) -> type:
    from napari_sam2.engine.cells.track_all import TrackAllRun

    class Instrumented(TrackAllRun):
        def _seed_start(self, t0):
            yield from super()._seed_start(t0)
            meter.switch("tracking")  # the start frame is seeded: what follows is the frames' work

        def _discover(self, t, current):
            if shadow and t > self.config.start_frame:
                old = meter.switch("shadow")  # a full re-seed of this frame, timed, thrown away
                seeds = self._segment(t)
                meter.shadow_seeds.append(len(seeds))
                meter.switch(old)
            old = meter.switch("discovery")
            try:
                yield from super()._discover(t, current)
            finally:
                meter.switch(old)

        def _reseed(self, t, current):
            old = meter.switch("reseed")
            try:
                yield from super()._reseed(t, current)
            finally:
                meter.switch(old)

    return Instrumented


def measure(
    args, predictor_factory, generator, model, image, start_labels, name, reseed_every, discover, shadow
):
    """One instrumented run; returns its record."""
    from napari_sam2.engine.cells.seeding import SeedFilter
    from napari_sam2.engine.cells.track_all import TrackAllConfig
    from napari_sam2.engine.track.events import TrackStarted

    meter = Meter()
    hooks = meter.hook_encoder(model) if model is not None else []
    if not hasattr(generator, "_meter_inner"):
        generator._meter_inner = generator.generate
    generator.generate = generator._meter_inner
    meter.wrap_generator(generator)
    config = TrackAllConfig(
        start_frame=args.start,
        end_frame=args.start + args.frames,
        reseed_every=reseed_every,
        discover_every_frame=discover,
        seed_filter=SeedFilter(drop_border_touching=False),
    )
    run = instrumented_run_class(meter, shadow)(
        predictor_factory(), image, generator, config, start_labels=start_labels
    )
    started: dict[str, int] = {}
    wall0 = time.perf_counter()
    for event in run.events():
        if isinstance(event, TrackStarted):
            started[event.reason] = started.get(event.reason, 0) + 1
    meter.switch(meter.phase)
    wall = time.perf_counter() - wall0
    for h in hooks:
        h.remove()
    F = args.frames
    frames_s = sum(meter.seconds[p] for p in ("tracking", "discovery", "reseed"))
    gen_s = meter.generator_s["discovery"] + meter.generator_s["reseed"]
    return {
        "kind": "run",
        "name": name,
        "reseed_every": reseed_every,
        "discovery": discover,
        "shadow_reseeds": shadow,
        "frames": F,
        "objects_start": int(len([i for i in set(start_labels.ravel().tolist()) if i])),
        "tracks_started": started,
        "tracks": len(run.graph),
        "wall_s": round(wall, 2),
        "seconds": {p: round(v, 3) for p, v in meter.seconds.items()},
        "encoder_passes": dict(meter.encoder),
        "encoder_s": {p: round(v, 3) for p, v in meter.encoder_s.items()},
        "generator_calls": dict(meter.generator),
        "generator_s": {p: round(v, 3) for p, v in meter.generator_s.items()},
        "points": dict(meter.points),
        "shadow_seeds": meter.shadow_seeds,
        "discovery_points": run.discovery_points,
        "s_per_frame": round(frames_s / F, 3),
        "encoder_per_frame": round(sum(meter.encoder[p] for p in ("tracking", "discovery", "reseed")) / F, 3),
        "generator_share": round(gen_s / frames_s, 4) if frames_s else None,
    }


def compose(rec: dict) -> list[dict]:
    """The configurations' per-frame costs from one components-mode run (module doc)."""
    F = rec["frames"]
    track = rec["seconds"]["tracking"] / F
    disc = rec["seconds"]["discovery"] / F
    disc_gen = rec["generator_s"]["discovery"] / F
    reseed = rec["seconds"]["shadow"] / F  # one full re-seed of a frame, on average
    reseed_gen = rec["generator_s"]["shadow"] / F
    enc = rec["encoder_passes"]
    passes_track = enc["tracking"] / F
    rows = []
    for name, (every, discover) in CONFIGS.items():
        n_reseed = 1.0 / every if every else 0.0
        n_disc = (1.0 - n_reseed) if discover else 0.0
        s = track + n_reseed * reseed + n_disc * disc
        gen = n_reseed * reseed_gen + n_disc * disc_gen
        passes = (
            passes_track + n_reseed * enc["shadow"] / F + (n_disc * enc["discovery"] / F if discover else 0)
        )
        rows.append(
            {
                "kind": "config",
                "mode": "components",
                "name": name,
                "reseed_every": every,
                "discovery": discover,
                "s_per_frame": round(s, 3),
                "encoder_per_frame": round(passes, 3),
                "generator_share": round(gen / s, 4) if s else None,
                "ratio": round(s / track, 3) if track else None,
                "points_per_frame": round(
                    n_reseed * rec["points"]["shadow"] / F + n_disc * rec["points"]["discovery"] / F, 2
                ),
            }
        )
    return rows


def from_runs(records: list[dict]) -> list[dict]:
    base = next((r["s_per_frame"] for r in records if r["name"] == "track"), None)
    rows = []
    for r in records:
        F = r["frames"]
        rows.append(
            {
                "kind": "config",
                "mode": "runs",
                "name": r["name"],
                "reseed_every": r["reseed_every"],
                "discovery": r["discovery"],
                "s_per_frame": r["s_per_frame"],
                "encoder_per_frame": r["encoder_per_frame"],
                "generator_share": r["generator_share"],
                "ratio": round(r["s_per_frame"] / base, 3) if base else None,
                "points_per_frame": round((r["points"]["discovery"] + r["points"]["reseed"]) / F, 2),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| configuration | s / frame | ratio to tracking alone | encoder passes / frame | generator share | prompt points / frame |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        share = "-" if r["generator_share"] is None else f"{100 * r['generator_share']:.1f} %"
        lines.append(
            f"| {r['name']} | {r['s_per_frame']:.2f} | {r['ratio']:.3f}x | {r['encoder_per_frame']:.2f} "
            f"| {share} | {r['points_per_frame']:g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1:
        print("track_all_cost: --frames must be >= 1", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    import bench_speed  # machine description, command line and date, as the other benchmarks
    import numpy as np

    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    if args.predictor == "model":
        bench_speed.setup_torch(args.threads)
    image, labels, _ = synthetic_lineage_timelapse()
    if args.start + args.frames >= len(image):
        print(f"track_all_cost: --start + --frames must be < {len(image)}", file=sys.stderr)
        return 2
    header = {
        "kind": "header",
        "benchmark": "track_all_cost",
        "date": bench_speed.now_iso(),
        "command": bench_speed.command_line(),
        "machine": bench_speed.machine_info(),
        "mode": args.mode,
        "predictor": args.predictor,
        "points_per_side": args.points_per_side,
        "sample": "synthetic_lineage_timelapse() (60 x 256 x 256, seed 0)",
        "start_labels": f"ground truth of frame {args.start}",
    }
    bench_speed.append_jsonl(args.out, header)
    print(bench_speed.describe_run(header), flush=True)
    factory, generator, model = make_engine(args, image, labels)
    start_labels = np.asarray(labels[args.start], dtype=np.int32)
    if args.mode == "components":
        rec = measure(args, factory, generator, model, image, start_labels, "components", 0, True, True)
        bench_speed.append_jsonl(args.out, rec)
        print(rec, flush=True)
        rows = compose(rec)
    else:
        records = []
        for name in args.configs:
            every, discover = CONFIGS[name]
            rec = measure(args, factory, generator, model, image, start_labels, name, every, discover, False)
            bench_speed.append_jsonl(args.out, rec)
            print(rec, flush=True)
            records.append(rec)
        rows = from_runs(records)
    for r in rows:
        bench_speed.append_jsonl(args.out, r)
    print(markdown(rows))
    shadow_s = [] if args.mode == "runs" else [rec["seconds"]["shadow"] / args.frames]
    if shadow_s:
        print(f"full re-seed ({args.points_per_side**2} points): {statistics.mean(shadow_s):.2f} s a frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
