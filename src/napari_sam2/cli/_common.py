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


def parse_window(text: str) -> str:
    """``--window``: a CT preset name or ``CENTER,WIDTH``; checked here, applied by the engine."""
    from napari_sam2.engine.normalization import CT_WINDOWS

    parts = [t.strip() for t in text.replace(";", ",").split(",")]
    if len(parts) == 1:
        key = parts[0].lower().replace("-", "_").replace(" ", "_")
        if key not in CT_WINDOWS:
            raise argparse.ArgumentTypeError(
                f"unknown window {text!r}: give CENTER,WIDTH (e.g. 40,400) or a CT preset: {', '.join(CT_WINDOWS)}"
            )
        return key
    try:
        center, width = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a window is CENTER,WIDTH (two numbers, e.g. 40,400) or a CT preset name; got {text!r}"
        ) from None
    if not width > 0:
        raise argparse.ArgumentTypeError(f"the window width must be > 0; got {text!r}")
    return f"{center:g},{width:g}"


def parse_axis(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an axis is a number (0 is the first axis); got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"an axis is a number >= 0 (0 is the first axis); got {text!r}")
    return value


def add_tracking_arguments(p: argparse.ArgumentParser, *, per_job: bool = False) -> None:
    """The options of one tracking run (track; defaults of every job for track-many)."""
    default = " (default for every job; a manifest column overrides it)" if per_job else ""
    p.add_argument(
        "--direction",
        default="both",
        choices=["forward", "backward", "both"],
        help="propagate forward from the first prompted frame, backward from the last, or both (default)"
        + default,
    )
    p.add_argument(
        "--channels",
        type=parse_channels,
        default=None,
        metavar="C[,C...]",
        help="the 1 to 3 channels the model sees, e.g. 0,2 (default: those saved with the prompts, "
        "else the first three)" + default,
    )
    p.add_argument(
        "--frame-axis",
        type=parse_axis,
        default=None,
        metavar="N",
        help="the axis to propagate along, for images of more than three axes, e.g. 1 (z) of a (T, Z, Y, X) "
        "stack (default: the axis the prompts were made along, else the first axis that is neither the image "
        "plane nor channels); every other axis is stepped through, each position its own sequence" + default,
    )
    p.add_argument(
        "--all-positions",
        action="store_true",
        help="apply the one prompts file to every position of the other axes (e.g. every time point of a "
        "(T, Z, Y, X) stack tracked along z); without it each JSON prompts file tracks the position it was "
        "saved at" + default,
    )
    p.add_argument(
        "--window",
        type=parse_window,
        default=None,
        metavar="NAME|CENTER,WIDTH",
        help="a fixed intensity window instead of the contrast fitted to the stack: a CT preset (soft_tissue, "
        "lung, bone, brain, liver, mediastinum, subdural, stroke, temporal_bone) or CENTER,WIDTH in the "
        "image's units (Hounsfield units for CT)" + default,
    )
    p.add_argument(
        "--labels-name",
        default="sam2",
        metavar="NAME",
        help="name of the label image: labels/NAME when OUTPUT is an existing OME-Zarr image, the image name "
        "of an OME-TIFF (default sam2)" + default,
    )


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
