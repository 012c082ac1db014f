"""SAM 2 / SAM 2.1 network in pure PyTorch (no napari, no I/O)."""

from .config import SAM2Config, available_configs, load_config
from .sam2 import NO_OBJ_SCORE, FrameFeatures, HeadsOutput, MemoryEntry, SAM2Model

__all__ = [
    "NO_OBJ_SCORE",
    "FrameFeatures",
    "HeadsOutput",
    "MemoryEntry",
    "SAM2Config",
    "SAM2Model",
    "available_configs",
    "load_config",
]
