"""Side-by-side tracking speed and mask agreement: napari-sam2 vs Meta's reference SAM 2.

Meta's code is read from a checkout that YOU supply (``--meta-repo``, a clone of
https://github.com/facebookresearch/sam2: its root or its ``sam2/`` package folder). It is
never copied into, vendored by or committed to this repository, and is not a dependency.

Meta's predictor is built without hydra: the ``sam2`` package is registered as a bare
module (its ``__init__`` imports hydra), ``iopath`` is stubbed when it is not installed (only
Hiera's optional weight loading uses it), and Meta's classes are instantiated with the
numbers of our configs (``napari_sam2.model.config.load_config``), exactly as Meta's
``build_sam2_video_predictor`` would instantiate them, then given the same checkpoint
(``load_state_dict(strict=True)``). Hole filling is off in both (``fill_hole_area=0``).

Both get the same frames already normalised: the synthetic time-lapse (256 x 256 uint16)
is mapped to RGB by ``Normalizer.fit`` / ``to_rgb`` and ``preprocess``-ed to
(T, 3, 1024, 1024); Meta's ``init_state`` is called with its frame loader replaced by one
returning that tensor (it otherwise accepts only JPEG folders / mp4, and JPEG would change
the pixels). The same clicks (ground-truth cell centroids of frame 0) are given to both,
then each ``propagate_in_video`` is timed per frame in the same way (frames after the
prompted frame 0 only; see bench_speed.time_propagation). One fresh process per
(variant, object count).

Order in a child: ours' warm-up and first timed run, then Meta's warm-up and first timed run, then
the remaining timed runs alternating; so a child stopped during Meta's warm-up (vos_optimized
compiles for minutes) has already reported ours.

    python benchmarks/meta_reference.py --meta-repo ~/src/sam2                      # tiny, fp32
    python benchmarks/meta_reference.py --meta-repo ~/src/sam2 --device cuda --dtype bf16   # both eager
    python benchmarks/meta_reference.py --meta-repo ~/src/sam2 --device cuda --dtype bf16 --meta-vos --compile

Reported: seconds per frame of each, FPS ratio ours / Meta (> 1: ours is faster), and the
agreement of the masks: min and mean IoU over (frame, object) (must be >= 0.99 in fp32)
and max relative L2 of the mask logits (Meta's as the reference).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import inspect
import json
import statistics
import subprocess
import sys
import time
import types
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_speed as bs  # noqa: E402  (the shared timing helpers)

IOU_MIN_REQUIRED = 0.99


# ====================================================================== importing Meta's code


def meta_package_dir(meta_repo: str | Path) -> Path:
    """The ``sam2`` package folder of a checkout (given its root or the package itself)."""
    repo = Path(meta_repo).expanduser().resolve()
    for cand in (repo / "sam2", repo):
        if (cand / "sam2_video_predictor.py").is_file() and (cand / "modeling").is_dir():
            return cand
    raise FileNotFoundError(
        f"{repo} is not a checkout of facebookresearch/sam2 (no sam2/sam2_video_predictor.py and sam2/modeling/ "
        "under it, nor directly in it)"
    )


def meta_revision(pkg_dir: Path) -> str | None:
    """The revision of an exported copy (``REVISION`` beside the package, written by
    gpu_prepare.sh), else that of the checkout the package is the ``sam2/`` folder of. A git
    repository further up (e.g. napari-sam2's own, which holds ``.gpu-carry/meta``) is not Meta's:
    the first GPU run reported napari-sam2's revision as Meta's that way."""
    exported = pkg_dir.parent / "REVISION"
    if exported.is_file():
        return exported.read_text().strip()[:12] or None
    try:
        top = subprocess.run(
            ["git", "-C", str(pkg_dir), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if not top or Path(top).resolve() not in (pkg_dir.resolve(), pkg_dir.resolve().parent):
            return None
        out = subprocess.run(
            ["git", "-C", str(pkg_dir), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def import_meta(meta_repo: str | Path) -> types.SimpleNamespace:
    """Meta's modules, imported from the checkout without running ``sam2/__init__.py`` (hydra)."""
    pkg_dir = meta_package_dir(meta_repo)
    existing = sys.modules.get("sam2")
    if existing is not None and list(getattr(existing, "__path__", [])) != [str(pkg_dir)]:
        raise RuntimeError(
            f"another 'sam2' package is already imported ({existing!r}); run in a fresh process"
        )
    pkg = types.ModuleType("sam2")
    pkg.__path__ = [str(pkg_dir)]
    sys.modules["sam2"] = pkg
    iopath_stubbed = False
    try:
        importlib.import_module("iopath.common.file_io")
    except ImportError:  # only Hiera(weights_path=...) uses it; we never pass one
        for name in ("iopath", "iopath.common", "iopath.common.file_io"):
            mod = types.ModuleType(name)
            mod.__path__ = []
            sys.modules[name] = mod
        sys.modules["iopath.common.file_io"].g_pathmgr = None
        iopath_stubbed = True
    hieradet = importlib.import_module("sam2.modeling.backbones.hieradet")
    image_encoder = importlib.import_module("sam2.modeling.backbones.image_encoder")
    position_encoding = importlib.import_module("sam2.modeling.position_encoding")
    memory_attention = importlib.import_module("sam2.modeling.memory_attention")
    memory_encoder = importlib.import_module("sam2.modeling.memory_encoder")
    transformer = importlib.import_module("sam2.modeling.sam.transformer")
    video = importlib.import_module("sam2.sam2_video_predictor")
    return types.SimpleNamespace(
        Hiera=hieradet.Hiera,
        ImageEncoder=image_encoder.ImageEncoder,
        FpnNeck=image_encoder.FpnNeck,
        PositionEmbeddingSine=position_encoding.PositionEmbeddingSine,
        MemoryAttention=memory_attention.MemoryAttention,
        MemoryAttentionLayer=memory_attention.MemoryAttentionLayer,
        RoPEAttention=transformer.RoPEAttention,
        MemoryEncoder=memory_encoder.MemoryEncoder,
        MaskDownSampler=memory_encoder.MaskDownSampler,
        Fuser=memory_encoder.Fuser,
        CXBlock=memory_encoder.CXBlock,
        SAM2VideoPredictor=video.SAM2VideoPredictor,
        SAM2VideoPredictorVOS=getattr(video, "SAM2VideoPredictorVOS", None),
        video_module=video,
        pkg_dir=pkg_dir,
        iopath_stubbed=iopath_stubbed,
    )


def build_meta_predictor(m: types.SimpleNamespace, cfg, checkpoint: Path, device, vos: bool):
    """Meta's video predictor for one of our configs, as ``build_sam2_video_predictor`` makes it.

    The fixed values (dropout, RoPE wiring, position encodings, mask down-sampler, CXBlock)
    are those of every one of Meta's eight YAML files; the per-variant numbers come from
    ``cfg``. Returns (predictor, tracking kwargs that this checkout's SAM2Base does not know).
    """
    import torch

    t, n, ma, me = cfg.trunk, cfg.neck, cfg.memory_attention, cfg.memory_encoder
    d = n.d_model

    def sine(num_pos_feats):
        return m.PositionEmbeddingSine(
            num_pos_feats=num_pos_feats, normalize=True, scale=None, temperature=10000
        )

    trunk = m.Hiera(
        embed_dim=t.embed_dim,
        num_heads=t.num_heads,
        stages=list(t.stages),
        global_att_blocks=list(t.global_att_blocks),
        window_spec=list(t.window_spec),
        window_pos_embed_bkg_spatial_size=list(t.window_pos_embed_bkg_spatial_size),
    )
    neck = m.FpnNeck(
        position_encoding=sine(d),
        d_model=d,
        backbone_channel_list=list(n.backbone_channel_list),
        fpn_top_down_levels=list(n.fpn_top_down_levels),
        fpn_interp_model=n.fpn_interp_model,
    )
    image_encoder = m.ImageEncoder(trunk=trunk, neck=neck, scalp=n.scalp)

    def rope(**extra):
        return m.RoPEAttention(
            rope_theta=ma.rope_theta,
            feat_sizes=list(ma.feat_sizes),
            embedding_dim=d,
            num_heads=ma.num_heads,
            downsample_rate=1,
            dropout=0.1,
            **extra,
        )

    layer = m.MemoryAttentionLayer(
        activation="relu",
        dim_feedforward=ma.dim_feedforward,
        dropout=0.1,
        pos_enc_at_attn=False,
        self_attention=rope(),
        d_model=d,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=rope(rope_k_repeat=True, kv_in_dim=me.out_dim),
    )
    memory_attention = m.MemoryAttention(
        d_model=d, pos_enc_at_input=True, layer=layer, num_layers=ma.num_layers
    )
    memory_encoder = m.MemoryEncoder(
        out_dim=me.out_dim,
        position_encoding=sine(me.out_dim),
        mask_downsampler=m.MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=m.Fuser(
            layer=m.CXBlock(dim=d, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True),
            num_layers=me.num_fuser_layers,
        ),
    )
    cls = m.SAM2VideoPredictorVOS if vos else m.SAM2VideoPredictor
    if cls is None:
        raise RuntimeError(
            "this checkout of Meta's sam2 has no SAM2VideoPredictorVOS (--meta-vos needs a newer one)"
        )
    kwargs = dict(
        asdict(cfg.tracking),
        image_size=cfg.image_size,
        backbone_stride=cfg.backbone_stride,
        sam_mask_decoder_extra_args=asdict(cfg.postprocessing),
        compile_image_encoder=vos,
    )
    accepted = set(inspect.signature(m.video_module.SAM2Base.__init__).parameters)
    unknown = {k: v for k, v in kwargs.items() if k not in accepted}
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    model = cls(
        image_encoder=image_encoder,
        memory_attention=memory_attention,
        memory_encoder=memory_encoder,
        fill_hole_area=0,
        non_overlap_masks=False,
        clear_non_cond_mem_around_input=False,
        add_all_frames_to_correct_as_cond=False,
        **kwargs,
    )
    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval(), unknown


@contextlib.contextmanager
def frames_loader(video_module, images, height: int, width: int):
    """Make Meta's ``init_state`` take our (T, 3, S, S) tensor instead of reading JPEG/mp4 files."""
    original = video_module.load_video_frames

    def load_video_frames(*_args, **_kwargs):
        return images, height, width

    video_module.load_video_frames = load_video_frames
    try:
        yield
    finally:
        video_module.load_video_frames = original


# ====================================================================== the measurement (child)


def module_mb(module) -> float:
    """Parameters and buffers of a model on its device, in MiB."""
    tensors = list(module.parameters()) + list(module.buffers())
    return round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 1)


def measure(spec: dict) -> dict:
    import torch

    from napari_sam2.engine.frames.normalization import Normalizer, preprocess
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.weights.build import build_sam2_model, compile_model
    from napari_sam2.model import load_config

    bs.setup_torch(spec.get("threads"))
    device, dtype = torch.device(spec["device"]), spec["dtype"]
    m = import_meta(spec["meta_repo"])
    cfg = load_config(spec["config"])
    ckpt = bs.resolve_checkpoint(spec["config"], spec["weights"], spec.get("checkpoint"))
    image, prompts = bs.tracking_inputs(spec["frames"], spec["objects"])
    height, width = image.shape[1:3]
    record = {
        **spec,
        "kind": "meta_reference",
        "checkpoint_file": ckpt.name,
        "meta_package": str(m.pkg_dir),
        "meta_git": meta_revision(m.pkg_dir),
        "iopath_stubbed": m.iopath_stubbed,
    }

    bs.sync(device)
    t0 = time.perf_counter()
    ours_model = build_sam2_model(spec["config"], ckpt, device)
    if spec.get("compile", False):
        compile_model(ours_model, **bs.compile_options(spec))
    ours = SAM2VideoPredictor(
        ours_model, fill_hole_area=0, autocast_dtype=torch.bfloat16 if dtype == "bf16" else None
    )
    bs.sync(device)
    record["ours_load_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    meta, unknown_kwargs = build_meta_predictor(m, cfg, ckpt, device, spec["meta_vos"])
    bs.sync(device)
    record["meta_load_s"] = round(time.perf_counter() - t0, 3)
    record["meta_unknown_kwargs"] = unknown_kwargs or None
    record["ours_model_mb"], record["meta_model_mb"] = module_mb(ours_model), module_mb(meta)
    bs.progress(record)

    # The frames both see: Meta's init_state would hold exactly this (normalised, on the device).
    norm = Normalizer.fit(image)
    prep_s = []
    rgb_frames = []
    for t in range(len(image)):
        t1 = time.perf_counter()
        rgb_frames.append(preprocess(norm.to_rgb(image[t], frame_index=t), cfg.image_size, device=device))
        bs.sync(device)
        prep_s.append(time.perf_counter() - t1)
    images = torch.stack(rgb_frames)
    del rgb_frames
    # Meta's init_state would allocate these frames itself: they count towards Meta's memory.
    record["meta_frames_mb"] = round(images.numel() * images.element_size() / 2**20, 1)
    record["preprocess_ms_per_frame"] = round(1000 * statistics.median(prep_s), 2)

    def run_ours(max_frames=None, memory=None):
        state = ours.init_state(image, normalizer=norm)
        for obj_id, xy in prompts:
            ours.add_new_points_or_box(state, 0, obj_id, points=[xy], labels=[1])
        result = timed(ours.propagate_in_video(state, max_frame_num_to_track=max_frames), memory)
        state.close()
        return result

    def run_meta(max_frames=None, memory=None):
        with torch.inference_mode(), bs.autocast(device, dtype):
            with frames_loader(m.video_module, images, height, width):
                state = meta.init_state(video_path="<frames given in memory>")
            for obj_id, xy in prompts:
                meta.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, points=[xy], labels=[1])
            return timed(meta.propagate_in_video(state, max_frame_num_to_track=max_frames), memory)

    def timed(frames_iter, memory):
        """Per-frame seconds and masks; each frame's logits are kept on the host, untimed, and
        (CUDA) the resident device memory after each frame is read before that copy."""
        logits = []

        def on_frame(item):
            if memory is not None:
                memory.append(bs.device_allocated_bytes(device))
            logits.append(item[2][:, 0].float().cpu().numpy())

        seconds, masks, _ = bs.time_propagation(frames_iter, device, on_frame)
        return seconds, masks, logits

    def first_run(name, fn):
        """The untimed warm-up run (with compile: where compilation and autotuning happen)."""
        if spec["warmup_frames"] <= 0:
            return
        bs.sync(device)
        t0 = time.perf_counter()
        fn(spec["warmup_frames"])
        bs.sync(device)
        record[f"{name}_first_run_s"] = round(time.perf_counter() - t0, 3)
        record["first_run_frames"] = spec["warmup_frames"]
        if name == "ours" and spec.get("compile"):
            record["ours_dynamo"] = bs.dynamo_stats()
        bs.progress(record)

    def measured_run(fn):
        """One timed run, with its device memory: the peak over what was allocated before it,
        and the resident memory after every frame (same baseline)."""
        memory: list[int | None] = []
        base = bs.device_allocated_bytes(device)
        bs.reset_device_peak(device)
        seconds, masks, logits = fn(memory=memory)
        peak = bs.device_peak_mb(device)
        if base is not None:
            memory = [b - base for b in memory]
            peak = round(peak - base / 2**20, 1)
        return (seconds, masks, logits), {"run_peak_mb": peak, "trace": memory}

    # Ours is warmed up and timed once before Meta's warm-up starts, so that a run stopped during
    # Meta's warm-up (vos_optimized compiles all of Meta's components with max-autotune: minutes)
    # still reports ours; the further timed runs alternate, so that drifting load hits both alike.
    ours_runs, meta_runs = [], []

    def timed_run(name, fn, runs):
        runs.append(measured_run(fn))
        record[name] = bs.per_frame_stats(runs[-1][0][0])
        ours_s, meta_s = (record.get(k, {}).get("s_per_frame") for k in ("ours", "meta"))
        if ours_s and meta_s:  # provisional (first runs); the final record has the median runs'
            record["fps_ratio_ours_over_meta"] = round(meta_s / ours_s, 3)
        bs.progress(record)

    first_run("ours", run_ours)
    timed_run("ours", run_ours, ours_runs)
    first_run("meta", run_meta)
    timed_run("meta", run_meta, meta_runs)
    for _ in range(spec["track_repeats"] - 1):
        timed_run("ours", run_ours, ours_runs)
        timed_run("meta", run_meta, meta_runs)
    ours_run, ours_mem = sorted(ours_runs, key=lambda r: sum(r[0][0]))[len(ours_runs) // 2]
    meta_run, meta_mem = sorted(meta_runs, key=lambda r: sum(r[0][0]))[len(meta_runs) // 2]

    ious, rels = [], []
    for f in range(len(ours_run[1])):
        ious += [bs.mask_iou(a, b) for a, b in zip(ours_run[1][f], meta_run[1][f])]
        rels += [bs.rel_l2(a, b) for a, b in zip(ours_run[2][f], meta_run[2][f])]
    agreement = bs.deviation_stats(ious, rels)
    ours_stats, meta_stats = bs.per_frame_stats(ours_run[0]), bs.per_frame_stats(meta_run[0])
    ratio = None
    if ours_stats.get("s_per_frame") and meta_stats.get("s_per_frame"):
        ratio = round(meta_stats["s_per_frame"] / ours_stats["s_per_frame"], 3)
    for stats, mem, model_mb, extra_mb in (
        (ours_stats, ours_mem, record["ours_model_mb"], 0.0),
        (meta_stats, meta_mem, record["meta_model_mb"], record["meta_frames_mb"]),
    ):
        if mem["run_peak_mb"] is not None:
            stats["cuda_run_peak_mb"] = mem["run_peak_mb"]
            # what this implementation alone would hold at its peak: its weights, its frames, its run
            stats["cuda_own_peak_mb"] = round(model_mb + extra_mb + mem["run_peak_mb"], 1)
        stats.update(bs.memory_trace_stats(mem["trace"], spec["objects"]))
    record.update(
        {
            "ours": ours_stats,
            "meta": meta_stats,
            "ours_s_per_frame_all_repeats": [
                round(sum(r[0][0]) / len(r[0][0]), 4) for r in ours_runs if r[0][0]
            ],
            "meta_s_per_frame_all_repeats": [
                round(sum(r[0][0]) / len(r[0][0]), 4) for r in meta_runs if r[0][0]
            ],
            "fps_ratio_ours_over_meta": ratio,
            "agreement": agreement,
            "parity_ok": agreement["iou_min"] >= IOU_MIN_REQUIRED,
            "peak_rss_mb": round(bs.peak_rss_mb(), 1),
        }
    )
    return record


# ====================================================================== driver


def markdown_table(records: list[dict]) -> str:
    head = [
        "variant",
        "device",
        "dtype",
        "Meta mode",
        "objects",
        "ours s/frame",
        "Meta s/frame",
        "FPS ours/Meta",
        "mask IoU min",
        "logit rel-L2 max",
        f"IoU >= {IOU_MIN_REQUIRED}",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        mode = "VOS (compiled)" if r.get("meta_vos") else "SAM2VideoPredictor"
        if r.get("kind") == "error":
            lines.append(
                f"| {r['config']} | {r['device']} | {r['dtype']} | {mode} | {r['objects']} | failed "
                f"(exit {r.get('returncode')}) |" + " |" * (len(head) - 6)
            )
            continue
        a = r["agreement"]
        lines.append(
            " | ".join(
                [
                    f"| {r['config']}",
                    r["device"],
                    r["dtype"] + (" (ours compiled)" if r.get("compile") else ""),
                    mode,
                    str(r["objects"]),
                    bs._fmt(r["ours"].get("s_per_frame")),
                    bs._fmt(r["meta"].get("s_per_frame")),
                    bs._fmt(r["fps_ratio_ours_over_meta"]),
                    f"{a['iou_min']:.5f}",
                    f"{a['logit_rel_l2_max']:.3g}",
                    (
                        "yes"
                        if r["parity_ok"]
                        else "**NO**"
                        if r["dtype"] == "fp32"
                        else "no (bf16: informational)"
                    )
                    + " |",
                ]
            )
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--meta-repo", help="your checkout of facebookresearch/sam2 (root or its sam2/ folder)")
    ap.add_argument(
        "--configs",
        nargs="+",
        default=["sam2.1_hiera_t"],
        choices=bs.CONFIGS,
        metavar="CONFIG",
        help=f"model variants (default sam2.1_hiera_t); any of: {', '.join(bs.CONFIGS)}",
    )
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    ap.add_argument("--dtype", default="fp32", choices=bs.DTYPES, help="fp32, or bf16 autocast for both")
    ap.add_argument(
        "--meta-vos",
        action="store_true",
        help="Meta's SAM2VideoPredictorVOS (torch.compile of its components; CUDA only)",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile ours too (napari_sam2.engine.weights.build.compile_model); with --meta-vos and --dtype bf16 "
        "this is each implementation's fastest mode",
    )
    ap.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode of ours with --compile (default: compile_model's, max-autotune-no-cudagraphs; "
        "'default' for inductor's default mode)",
    )
    ap.add_argument(
        "--frames", type=int, default=8, help="tracked frames after the prompted frame 0 (default 8)"
    )
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 5], help="object counts (default 1 5)")
    ap.add_argument(
        "--track-repeats",
        type=int,
        default=1,
        help="timed runs of each, alternating ours / Meta; the median run is reported (default 1)",
    )
    ap.add_argument(
        "--warmup-frames",
        type=int,
        default=None,
        help="frames of an untimed warm-up run of each first (default 2; all --frames with --meta-vos "
        "or --compile, whose compilation would otherwise be timed)",
    )
    ap.add_argument(
        "--weights",
        choices=["test", "official"],
        default="test",
        help="test: the tests' deterministic weights (default); official: cached official checkpoints",
    )
    ap.add_argument("--checkpoint", help="explicit checkpoint file (only with a single --configs entry)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "meta_reference.jsonl")
    ap.add_argument(
        "--dry-run", action="store_true", help="parse the options, check the checkout, print the plan"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap


def finalize_args(args: argparse.Namespace) -> None:
    """Defaults that depend on other options."""
    if args.warmup_frames is None:
        args.warmup_frames = args.frames if (args.meta_vos or args.compile) else 2


def make_specs(args: argparse.Namespace, device: str, pkg_dir: Path, run_id: str) -> list[dict]:
    """One child spec per (variant, object count), in that order."""
    return [
        {
            "run_id": run_id,
            "config": c,
            "device": device,
            "dtype": args.dtype,
            "meta_vos": args.meta_vos,
            "compile": args.compile,
            "compile_mode": args.compile_mode,
            "objects": k,
            "frames": args.frames,
            "track_repeats": args.track_repeats,
            "warmup_frames": args.warmup_frames,
            "weights": args.weights,
            "checkpoint": args.checkpoint,
            "threads": args.threads,
            "meta_repo": str(pkg_dir),
        }
        for c in args.configs
        for k in args.objects
    ]


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.child:
        bs.emit(measure(json.loads(args.child)), args.out)
        return 0
    if not args.meta_repo:
        ap.error(
            "--meta-repo is required: the path of your checkout of https://github.com/facebookresearch/sam2"
        )
    if args.frames < 1 or args.track_repeats < 1 or any(k < 1 for k in args.objects):
        ap.error("--frames, --track-repeats and --objects must be >= 1")
    if args.checkpoint and len(args.configs) != 1:
        ap.error("--checkpoint needs exactly one --configs entry")
    finalize_args(args)
    try:
        pkg_dir = meta_package_dir(args.meta_repo)
    except FileNotFoundError as e:
        ap.error(str(e))
    devices, problems = bs.resolve_devices([args.device])
    device = devices[0]
    if args.meta_vos and not device.startswith("cuda"):
        problems.append(
            "--meta-vos needs --device cuda (Meta's VOS predictor compiles its components "
            "with torch.compile(mode='max-autotune'), which targets GPUs)"
        )
    run_id = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    specs = make_specs(args, device, pkg_dir, run_id)
    if args.dry_run:
        print(f"Meta's sam2 package: {pkg_dir} (git {meta_revision(pkg_dir) or 'unknown'})")
        print(f"plan ({len(specs)} fresh processes; results would be appended to {args.out}):")
        for s in specs:
            print(
                f"  {s['config']:16s} {s['device']:6s} {s['dtype']:5s} {s['objects']} obj, {s['frames']} frames, "
                f"Meta {'VOS' if s['meta_vos'] else 'SAM2VideoPredictor'}"
            )
        for p in problems:
            print(f"  note: {p}")
        return 0
    if problems:
        ap.error("; ".join(problems))
    for config in args.configs:
        bs.resolve_checkpoint(config, args.weights, args.checkpoint)
    header = {
        "kind": "run",
        "run_id": run_id,
        "script": "meta_reference",
        "command": bs.command_line(),
        "date": bs.now_iso(),
        "machine": bs.machine_info(),
        "meta_package": str(pkg_dir),
        "meta_git": meta_revision(pkg_dir),
    }
    bs.append_jsonl(args.out, header)
    print(json.dumps(header))
    records = []
    for spec in specs:
        print(f"# {spec['config']} {spec['device']} {spec['dtype']} {spec['objects']} obj", flush=True)
        records.append(bs.run_child(Path(__file__), spec, args.out))
    print()
    print(bs.describe_run(header))
    print(f"Meta's sam2: {pkg_dir} (git {header['meta_git'] or 'unknown'})")
    print()
    print(markdown_table(records))
    ok = all(r.get("kind") != "error" and (r["parity_ok"] or r["dtype"] != "fp32") for r in records)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
