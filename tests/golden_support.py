"""Run our predictors on the golden cases and write outputs in the golden file format,
so that ``../shared/golden/compare.py`` (the reference's own judge) decides pass/fail.

Parity runs in full float32: TF32 (10-bit mantissa matmuls and convolutions on NVIDIA GPUs since
Ampere; torch enables it for cuDNN convolutions by default) is switched off while a case is written,
because the goldens were made in full float32 and their tolerances are float32's. TF32 is judged
separately and loosely (tests/engine/test_gpu.py::test_cuda_tf32_smoke, docs/gpu-check.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np


def golden_module(golden_dir: Path, name: str):
    """Import goldenio / compare from the golden folder."""
    if str(golden_dir) not in sys.path:
        sys.path.insert(0, str(golden_dir))  # compare.py imports goldenio by name
    spec = importlib.util.spec_from_file_location(f"golden_{name}", golden_dir / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_compare(golden_dir: Path, case: str, candidate_dir: Path) -> tuple[int, str, dict]:
    """compare.py on one case -> (exit code, printed report, worst value per metric)."""
    compare = golden_module(golden_dir, "compare")
    worst_json = candidate_dir / "worst.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = compare.main([str(golden_dir / case), str(candidate_dir), "--json", str(worst_json)])
    worst = json.loads(worst_json.read_text()) if worst_json.exists() else {}
    return code, out.getvalue(), worst


@contextlib.contextmanager
def full_fp32():
    """No TF32 in cuBLAS matmuls nor cuDNN convolutions, and "highest" float32 matmul precision,
    restored afterwards. Only torch's legacy switches are used: newer torch refuses to read the
    flags back once the legacy and the new (``fp32_precision``) switches were mixed."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch prefers fp32_precision; the flags still work
        saved = (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision(),
        )
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
            torch.set_float32_matmul_precision(saved[2])


def write_image_case(golden_dir: Path, case: str, predictor, out_dir: Path) -> None:
    """Replay an image case's calls on ``predictor`` (in full float32) and write the npz files."""
    with full_fp32():
        _write_image_case(golden_dir, case, predictor, out_dir)


def _write_image_case(golden_dir: Path, case: str, predictor, out_dir: Path) -> None:
    gio = golden_module(golden_dir, "goldenio")
    cdir = golden_dir / case
    meta = json.loads((cdir / "case.json").read_text())
    image = gio.load_rgb_png(str(cdir / meta["inputs"][meta["image"]]["file"]))
    predictor.set_image(image)
    feats = predictor._features
    out_dir.mkdir(parents=True, exist_ok=True)
    gio.save_npz(
        out_dir / "features.npz",
        image_embed=feats["image_embed"].cpu().numpy().astype(np.float16),
        high_res_feats_0=feats["high_res_feats"][0].cpu().numpy().astype(np.float16),
        high_res_feats_1=feats["high_res_feats"][1].cpu().numpy().astype(np.float16),
    )
    results = {}
    for i, call in enumerate(meta["calls"]):
        mask_input = None
        if "mask_input_from" in call:
            masks, ious, low = results[call["mask_input_from"]]
            mask_input = low[int(np.argmax(ious))][None]
        masks, ious, low = predictor.predict(
            point_coords=call.get("point_coords"),
            point_labels=call.get("point_labels"),
            box=call.get("box"),
            mask_input=mask_input,
            multimask_output=call["multimask_output"],
        )
        results[call["name"]] = (masks, ious, low)
        packed, shape = gio.pack_masks(masks)
        gio.save_npz(
            out_dir / f"call_{i:02d}_{call['name']}.npz",
            masks_packed=packed,
            masks_shape=shape,
            iou_predictions=ious.astype(np.float32),
            low_res_masks=low.astype(np.float32),
        )


def _output_arrays(outs):
    """Stack per-object FrameOutputs (None -> the reference's 'no output' fill)."""
    logits, scores, ptrs = [], [], []
    for out in outs:
        if out is None:
            logits.append(np.full((256, 256), -1024.0, dtype=np.float32))
            scores.append(np.nan)
            ptrs.append(np.full(256, np.nan, dtype=np.float32))
        else:
            logits.append(out.pred_masks[0, 0].float().cpu().numpy())
            scores.append(float(out.object_score_logits.reshape(-1)[0]))
            ptrs.append(out.obj_ptr[0].float().cpu().numpy())
    return (
        np.stack(logits).astype(np.float16),
        np.asarray(scores, dtype=np.float32),
        np.stack(ptrs).astype(np.float32),
    )


def video_case_frames(golden_dir: Path, case: str) -> np.ndarray:
    """The case's frames as (T, H, W, 3) uint8 (our predictor normalises them like Meta)."""
    gio = golden_module(golden_dir, "goldenio")
    cdir = golden_dir / case
    meta = json.loads((cdir / "case.json").read_text())
    return np.stack([gio.load_rgb_png(str(cdir / meta["inputs"][name]["file"])) for name in meta["frames"]])


def write_video_case(golden_dir: Path, case: str, predictor, out_dir: Path, frames=None) -> None:
    """Replay a video case's ops (in full float32) and write op_NN_*.npz files in the golden layout."""
    with full_fp32():
        _write_video_case(golden_dir, case, predictor, out_dir, frames)


def _write_video_case(golden_dir: Path, case: str, predictor, out_dir: Path, frames=None) -> None:
    import torch

    gio = golden_module(golden_dir, "goldenio")
    meta = json.loads((golden_dir / case / "case.json").read_text())
    if frames is None:
        frames = video_case_frames(golden_dir, case)
    state = predictor.init_state(frames)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, op in enumerate(meta["ops"]):
        name = op["op"]
        path = out_dir / f"op_{i:02d}_{name}.npz"
        if name == "add_new_points_or_box":
            f_idx, obj_ids, masks = predictor.add_new_points_or_box(
                state,
                op["frame_idx"],
                op["obj_id"],
                points=op.get("points"),
                labels=op.get("labels"),
                clear_old_points=op.get("clear_old_points", True),
                box=op.get("box"),
            )
            logits, scores, ptrs = _output_arrays(predictor.frame_outputs(state, f_idx))
            packed, shape = gio.pack_masks((masks[:, 0] > 0).cpu().numpy())
            gio.save_npz(
                path,
                frame_idx=np.array([f_idx]),
                obj_ids=np.array(obj_ids),
                masks_packed=packed,
                masks_shape=shape,
                low_res_logits=logits,
                object_score_logits=scores,
                obj_ptr=ptrs,
            )
        elif name == "add_new_mask":
            raise NotImplementedError("no golden case uses add_new_mask yet")
        elif name == "propagate_in_video":
            rows = {"frame_idx": [], "masks": [], "logits": [], "scores": [], "ptrs": []}
            obj_ids = []
            for f_idx, obj_ids, masks in predictor.propagate_in_video(  # noqa: B007 - the last ids are saved
                state,
                start_frame_idx=op.get("start_frame_idx"),
                max_frame_num_to_track=op.get("max_frame_num_to_track"),
                reverse=op.get("reverse", False),
            ):
                logits, scores, ptrs = _output_arrays(predictor.frame_outputs(state, f_idx))
                rows["frame_idx"].append(f_idx)
                rows["masks"].append((masks[:, 0] > 0).cpu().numpy())
                rows["logits"].append(logits)
                rows["scores"].append(scores)
                rows["ptrs"].append(ptrs)
            if rows["frame_idx"]:
                packed, shape = gio.pack_masks(np.stack(rows["masks"]))
                gio.save_npz(
                    path,
                    frame_idx=np.array(rows["frame_idx"]),
                    obj_ids=np.array(obj_ids),
                    masks_packed=packed,
                    masks_shape=shape,
                    low_res_logits=np.stack(rows["logits"]),
                    object_score_logits=np.stack(rows["scores"]),
                    obj_ptr=np.stack(rows["ptrs"]),
                )
            else:
                gio.save_npz(path, frame_idx=np.zeros(0, dtype=np.int64))
        else:
            raise ValueError(f"unknown op {name}")
    del torch
