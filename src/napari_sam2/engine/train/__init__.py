"""Fine-tuning SAM 2 on a user's own labels (see docs/fine-tuning.md).

- :mod:`.data`: labelled stacks (arrays, label TIFF / OME-Zarr stacks, CTC folders) and a
  split by stack or by time block;
- :mod:`.prompts`: points, boxes and correction clicks drawn from the ground truth;
- :mod:`.trainer`: the training loop (mask decoder + prompt encoder, optionally LoRA on the
  image encoder), resumable and deterministic for a seed;
- :mod:`.export`: the official-format checkpoint, the changed tensors and the model card;
- :func:`fine_tune`: all of it in one call.
"""

from napari_sam2.engine.train.data import (
    FrameRef,
    LabeledStack,
    TrainingDataError,
    labeled_stack,
    split_frames,
)
from napari_sam2.engine.train.export import apply_delta, load_delta, save_trained
from napari_sam2.engine.train.prompts import PromptConfig
from napari_sam2.engine.train.run import fine_tune
from napari_sam2.engine.train.trainer import TrainConfig, Trainer

__all__ = [
    "FrameRef",
    "LabeledStack",
    "PromptConfig",
    "TrainConfig",
    "Trainer",
    "TrainingDataError",
    "apply_delta",
    "fine_tune",
    "labeled_stack",
    "load_delta",
    "save_trained",
    "split_frames",
]
