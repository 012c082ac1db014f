"""Run our predictors on the golden cases and write outputs in the golden file format,
so that ``../shared/golden/compare.py`` (the reference's own judge) decides pass/fail."""

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


def write_image_case(golden_dir: Path, case: str, predictor, out_dir: Path) -> None:
    """Replay an image case's calls on ``predictor`` and write features + per-call npz files."""
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
            masks_packed=packed, masks_shape=shape, iou_predictions=ious.astype(np.float32),
            low_res_masks=low.astype(np.float32),
        )
