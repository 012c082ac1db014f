"""Headless batch tracking: a stack + a prompts file -> a label stack (no napari, no Qt).

The same steps as the plugin's propagate, for scripts and the ``napari-sam2 track`` command:
prompts are read from the JSON/CSV files the widget saves, every object is tracked through
the whole stack, and the result is one label image per frame (label = object id).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .prompts import PromptSet, load_prompts, masks_to_labels
from .video_predictor import SAM2VideoPredictor, VideoSession


def add_prompts(predictor: SAM2VideoPredictor, state: VideoSession, prompts: PromptSet) -> int:
    """Send every prompt of ``prompts`` to the predictor. Returns how many (frame, object) pairs."""
    n = 0
    for frame, obj_id, p in prompts.items():
        if p.mask is not None:
            predictor.add_new_mask(state, frame, obj_id, p.mask)
        if p.has_points_or_box:
            points, labels = p.engine_points()
            predictor.add_new_points_or_box(
                state,
                frame,
                obj_id,
                points=points,
                labels=labels,
                box=p.engine_box(),
                clear_old_points=p.mask is None,
            )
        n += 1
    if n == 0:
        raise ValueError("the prompts file holds no prompt: add at least one point, box or mask")
    return n


def track_stack(
    predictor: SAM2VideoPredictor,
    frames: Any,
    prompts: PromptSet,
    direction: str = "both",
    progress: Callable[[int, int], None] | None = None,
    channels: Any = None,
) -> np.ndarray:
    """Track all prompted objects through ``frames``; returns labels (T, H, W) uint16.

    ``progress(done, total)`` is called after each frame. Frames the tracking does not
    reach (e.g. before the first prompt with ``direction="forward"``) stay 0.
    """
    state = predictor.init_state(frames, channels=channels)
    try:
        add_prompts(predictor, state, prompts)
        labels = np.zeros((state.num_frames, state.video_height, state.video_width), dtype=np.uint16)
        done = 0
        for frame_idx, obj_ids, logits in predictor.propagate(state, direction=direction):
            labels[frame_idx] = masks_to_labels(obj_ids, logits.cpu().numpy())
            done += 1  # noqa: SIM113 - counts yielded frames, not loop steps
            if progress is not None:
                progress(done, state.num_frames)
        return labels
    finally:
        state.close()


def track_files(
    stack_path: str | Path,
    prompts_path: str | Path,
    output_path: str | Path,
    config_name: str = "sam2.1_hiera_t",
    checkpoint: str | Path | None = None,
    device: str = "auto",
    direction: str = "both",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Read a TIFF stack (or image folder) and a prompts file, write the labels as TIFF."""
    import tifffile

    from .video_predictor import build_sam2_video_predictor

    output_path = Path(output_path)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass overwrite=True (--overwrite) to replace it")
    prompts, _meta = load_prompts(prompts_path)
    predictor = build_sam2_video_predictor(config_name, checkpoint, device=device)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="tracking", unit="frame")

    def report(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        labels = track_stack(predictor, str(stack_path), prompts, direction=direction, progress=report)
    finally:
        if bar is not None:
            bar.close()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".part")
    tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack", metadata={"axes": "TYX"})
    tmp.replace(output_path)  # never leave a half-written result under the final name
    return output_path
