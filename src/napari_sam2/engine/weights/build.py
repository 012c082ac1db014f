"""Build SAM 2 models from a config name and an official checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from napari_sam2.errors import InputError, StateError
from napari_sam2.model import SAM2Model, load_config


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; else ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    from napari_sam2.engine.validation import check_device_name

    name = check_device_name(device)  # the syntax, with the forms that work; availability below
    if name == "auto":
        return resolve_device("auto")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StateError(
            f"device {device!r} was requested but this PyTorch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'no'}); use device='cpu' or 'auto', or install the CUDA build "
            "of torch from pytorch.org"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise StateError(
            f"device {device!r} was requested but only {torch.cuda.device_count()} CUDA GPU(s) are visible"
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise StateError(
            "device 'mps' was requested but Apple's Metal backend is not available; use 'cpu' or 'auto'"
        )
    return dev


def resolve_autocast_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """An ``autocast_dtype`` / precision as the predictors use it: None (float32, the parity
    reference) or a torch dtype; strings ``"bf16"``, ``"bfloat16"``, ``"fp16"``, ``"float16"``,
    ``"fp32"``, ``"float32"`` are mapped here, once; anything else is refused with a message."""
    from napari_sam2.engine.validation import ParameterError, check_precision_name

    if value is None or value == torch.float32:
        return None
    if isinstance(value, torch.dtype):
        if value in (torch.bfloat16, torch.float16):
            return value
        raise ParameterError(
            f"autocast_dtype {value} is not a mixed precision; use torch.bfloat16, torch.float16 or None (float32)"
        )
    name = check_precision_name(value, argument="autocast_dtype")
    return None if name == "float32" else getattr(torch, name)


def load_model_weights(
    model: SAM2Model, state_dict: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Load strictly: every key of the official checkpoint, nothing missing, nothing extra.

    A mismatch names the variant the checkpoint looks like, which is the usual cause.
    """
    from napari_sam2.engine.weights.checkpoints import CheckpointError, guess_variant

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state_dict) if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or wrong_shape:
        guess = guess_variant(state_dict)
        hint = f" It looks like a '{guess}' checkpoint." if guess and guess != model.config.name else ""
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong_shape:
            k = wrong_shape[0]
            details.append(
                f"{len(wrong_shape)} keys with other shapes (e.g. {k}: {tuple(state_dict[k].shape)} "
                f"in the file, {tuple(expected[k].shape)} in the model)"
            )
        raise CheckpointError(
            f"{source} does not fit model config '{model.config.name}': {'; '.join(details)}.{hint}"
        )
    model.load_state_dict(state_dict, strict=True)


def build_sam2_model(
    config_name: str,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    download: bool = True,
    compile: bool | str = False,
) -> SAM2Model:
    """A SAM 2 network in eval mode with the checkpoint's weights.

    ``checkpoint=None`` uses the cached official checkpoint, downloading it once when
    ``download`` is true. ``compile=True`` applies :func:`compile_model` (worth it on a GPU,
    for long runs: the first frames pay for compilation); a mode string (``"default"``,
    ``"max-autotune-no-cudagraphs"``) is passed on, modes with CUDA graphs are refused
    (:func:`~napari_sam2.engine.validation.check_compile_mode`).
    """
    from napari_sam2.engine.validation import check_compile_mode
    from napari_sam2.engine.weights.checkpoints import load_state_dict_file
    from napari_sam2.engine.weights.download import ensure_checkpoint

    mode = check_compile_mode(compile)  # before any download or load
    dev = resolve_device(device)

    cfg = load_config(config_name)
    path = ensure_checkpoint(cfg.name, checkpoint, download=download)
    state_dict = load_state_dict_file(path)
    model = SAM2Model(cfg)
    load_model_weights(model, state_dict, source=f"checkpoint {path}")
    model = model.to(dev).eval()
    if mode is not None:
        compile_model(model, mode=mode)
    return model


# The components that carry the work, and whether their input shapes change between calls:
# the memory attention sees a token count that grows over the first frames of a track, the
# others a fixed image size (the decoders a varying object count, left to torch's automatic
# dynamic-shape detection).
COMPILED_COMPONENTS: dict[str, bool | None] = {
    "image_encoder": False,
    "memory_attention": True,
    "memory_encoder": None,
    "sam_prompt_encoder": None,
    "sam_mask_decoder": None,
}


def compile_model(
    model: SAM2Model,
    mode: str | None = "max-autotune-no-cudagraphs",
    backend: str | Callable = "inductor",
    components: tuple[str, ...] | None = None,
) -> SAM2Model:
    """``torch.compile`` the model's heavy components in place; returns the model.

    The default mode leaves CUDA graphs out on purpose: with them a compiled module's
    outputs are overwritten by its next call, and the predictors keep image features and
    memories across calls. ``mode`` only applies to the inductor backend. Compiled and eager
    results agree to floating-point reassociation, not bit for bit.
    """
    names = tuple(COMPILED_COMPONENTS) if components is None else components
    unknown = [n for n in names if n not in COMPILED_COMPONENTS]
    if unknown:
        raise InputError(f"cannot compile {unknown}; components are {list(COMPILED_COMPONENTS)}")
    options: dict = {"backend": backend}
    if backend == "inductor" and mode is not None:
        options["mode"] = mode
    for name in names:
        getattr(model, name).compile(dynamic=COMPILED_COMPONENTS[name], **options)
    return model


def build_sam2(
    config_name: str, checkpoint: str | Path | None = None, device: str | torch.device = "cpu", **kwargs
) -> SAM2Model:  # kwargs: download, compile
    """Meta-compatible name for :func:`build_sam2_model` (the image model)."""
    return build_sam2_model(config_name, checkpoint, device, **kwargs)
