"""Arguments and error reporting shared by the subcommands (one home for each)."""

from __future__ import annotations

import argparse
import sys


def parse_channels(text: str) -> tuple[int, ...]:
    """``"0,2"`` -> ``(0, 2)``; argparse shows the message of a bad value."""
    try:
        values = tuple(int(t) for t in text.replace(";", ",").split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"channels must be numbers separated by commas, e.g. 0,2; got {text!r}"
        ) from None
    if not 1 <= len(values) <= 3 or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"give 1 to 3 channel numbers (0 is the first), e.g. 0,2; got {text!r}"
        )
    return values


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --checkpoint, --device, --precision, --compile."""
    from napari_sam2.model.variants import VARIANTS

    p.add_argument(
        "--model",
        default="sam2.1_hiera_t",
        help=f"model variant: {', '.join(VARIANTS)} (default sam2.1_hiera_t)",
    )
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint file (default: the official one, from the cache)"
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps"
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="fp32 (default, the reference) or bf16 mixed precision (faster on GPUs and on CPUs with bf16 "
        "matrix instructions, a few percent deviation)",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the model (pays off on a GPU over long stacks)"
    )


def report_error(command: str, exc: BaseException) -> int:
    """One line on stderr that names the problem (no traceback for problems a user can fix)."""
    from napari_sam2.engine.checkpoints import CheckpointError
    from napari_sam2.engine.session import SessionError

    known = (
        CheckpointError,
        SessionError,
        ValueError,
        OSError,
        KeyError,
        IndexError,
        TypeError,
        RuntimeError,
        MemoryError,
    )
    if isinstance(exc, KeyboardInterrupt):
        print(f"napari-sam2 {command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    if not isinstance(exc, known):
        raise exc
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        text = text.strip("'\"")
    if isinstance(exc, MemoryError):
        text = "out of memory: try a smaller model variant, or fewer frames"
    print(f"napari-sam2 {command}: {text}", file=sys.stderr)
    return 2
