"""Arguments and error reporting shared by the subcommands (one home for each)."""

from __future__ import annotations

import argparse
import sys

from napari_sam2.errors import InputError, NotWritableError


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
    from napari_sam2.engine.frames.normalization import CT_WINDOWS

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


def add_cache_arguments(p: argparse.ArgumentParser, *, allow_off: bool = True) -> None:
    """--cache-dir, --cache-max-gb (and --no-cache): the persistent embedding cache."""
    p.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="the embedding cache's folder (default: $NAPARI_SAM2_EMBEDDING_DIR, else the user cache "
        "folder's napari-sam2/embeddings); a new or empty folder, or one the cache made",
    )
    p.add_argument(
        "--cache-max-gb",
        "--max-cache-gb",
        dest="cache_max_gb",
        type=float,
        default=None,
        metavar="GB",
        help="bound on the embedding cache's size in GiB; least recently used entries go past it "
        "(default: $NAPARI_SAM2_EMBEDDING_CACHE_GB, else 20)",
    )
    if allow_off:
        p.add_argument(
            "--no-cache",
            action="store_true",
            help="do not read or store image features in the embedding cache (as NAPARI_SAM2_EMBEDDING_CACHE=0)",
        )


def cache_from_args(args: argparse.Namespace, *, required: bool = False):
    """The embedding cache the cache options name (None: off), its folder created and checked now,
    before any work; ``required``: the command needs one (precompute)."""
    import os

    from napari_sam2.engine.cache.embedding_cache import EmbeddingCache, resolve_embedding_cache

    if getattr(args, "no_cache", False):
        return None
    gb = getattr(args, "cache_max_gb", None)
    if gb is not None and not gb > 0:
        off = "" if required else " (to turn the cache off: --no-cache)"
        raise InputError(f"--cache-max-gb must be > 0 GiB; got {gb:g}{off}")
    max_bytes = None if gb is None else int(gb * 2**30)
    folder = getattr(args, "cache_dir", None)
    if folder is None and not required and resolve_embedding_cache("auto") is None:
        return None  # NAPARI_SAM2_EMBEDDING_CACHE=0
    cache = EmbeddingCache(folder, max_bytes=max_bytes)
    try:
        cache.ensure_folder()
    except OSError as e:
        raise NotWritableError(
            f"cannot create the embedding cache folder {cache.folder} ({e.strerror or e}); give another "
            "with --cache-dir" + ("" if required else ", or --no-cache")
        ) from None
    if not os.access(cache.folder, os.W_OK):
        raise NotWritableError(
            f"cannot write into the embedding cache folder {cache.folder}: permission denied; give another "
            "with --cache-dir" + ("" if required else ", or --no-cache")
        )
    return cache


def cache_summary(cache) -> str:
    """The line a command's summary ends with: the cache's folder, size and bound (or that it was off)."""
    if cache is None:
        return "embedding cache: off"
    from napari_sam2.engine.cache.embedding_cache import cache_info

    info = cache_info(cache.folder)
    return (
        f"embedding cache {info.folder}: {info.entries} entries, {info.bytes / 2**30:.2f} GiB (at most "
        f"{cache.max_bytes / 2**30:.3g} GiB; `napari-sam2 cache clear` empties it)"
    )


def report_error(command: str, exc: BaseException) -> int:
    """One line on stderr that names the problem (no traceback for problems a user can fix)."""
    from napari_sam2.engine.track.session import SessionError
    from napari_sam2.engine.weights.checkpoints import CheckpointError

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
