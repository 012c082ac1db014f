"""``napari-sam2 precompute``: fill the persistent embedding cache for a stack ahead of time.

The image encoder is most of a tracked frame's cost on a CPU. Run this once (overnight, or
on a machine left alone) and the widget's previews, propagations and ``napari-sam2 track``
on the same stack read the features instead of computing them, as long as they run the same
model, checkpoint, precision and device (:mod:`napari_sam2.engine.cache.embedding_cache`).
Frames already in the cache are skipped. Every argument is checked before the first frame
is computed.
"""

from __future__ import annotations

import argparse
import sys

from napari_sam2.errors import InputError

from ._common import (
    add_cache_arguments,
    add_model_arguments,
    cache_from_args,
    cache_summary,
    parse_channels,
    report_error,
)


def parse_frames(text: str) -> tuple[int | None, int | None]:
    """``"A:B"`` -> (A, B) (B excluded, as a Python slice), ``"A:"``, ``":B"``, or ``"A"`` alone."""
    parts = text.strip().split(":")
    try:
        if len(parts) == 1 and parts[0].strip():
            start = int(parts[0])
            return start, start + 1
        if len(parts) == 2:
            start = int(parts[0]) if parts[0].strip() else None
            stop = int(parts[1]) if parts[1].strip() else None
            if (start is None or start >= 0) and (stop is None or stop >= 0):
                return start, stop
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"--frames takes A:B (frames A to B-1, counted from 0), A: (A to the end), :B or A; got {text!r}"
    )


def _select(frames: tuple[int | None, int | None] | None, n: int) -> list[int]:
    if frames is None:
        return list(range(n))
    start, stop = frames
    start = 0 if start is None else start
    stop = n if stop is None else stop
    if start >= n or stop > n:
        raise InputError(f"--frames: the stack has {n} frames (0 .. {n - 1}); got {start}:{stop}")
    if stop <= start:
        raise InputError(f"--frames {start}:{stop} selects no frame (the end is excluded, e.g. 0:{n})")
    return list(range(start, stop))


def _build(spec, cache):
    """The predictor the widget and ``track`` would build, with this cache (tests replace it)."""
    from napari_sam2.engine.track.session import build_predictor

    return build_predictor(spec, embedding_cache=cache)


def _run(args: argparse.Namespace) -> int:
    from napari_sam2.engine.batch.precompute import precompute_frames
    from napari_sam2.engine.frames.normalization import Normalizer
    from napari_sam2.engine.frames.open import open_frames
    from napari_sam2.engine.track.session import ModelSpec
    from napari_sam2.engine.weights.build import resolve_device
    from napari_sam2.engine.weights.download import ensure_checkpoint
    from napari_sam2.model.variants import resolve_variant

    source = None
    try:
        config_name = resolve_variant(args.model)
        resolve_device(args.device)  # a bad device fails now, not after a download
        source = open_frames(args.stack)
        indices = _select(args.frames, len(source))
        normalizer = Normalizer.fit(source, channels=args.channels)  # as init_state fits it
        cache = cache_from_args(args, required=True)
        ensure_checkpoint(config_name, args.checkpoint, download=True)
        spec = ModelSpec(config_name, args.checkpoint, args.device, args.precision, args.compile)
        predictor = _build(spec, cache)
        _warn_if_over_bound(predictor, cache, len(indices), args.quiet)
        computed = cached = 0
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(desc="embedding", unit="frame", total=len(indices), file=sys.stderr)
        try:
            for event in precompute_frames(predictor, source, normalizer, cache, indices):
                computed += event.computed
                cached += not event.computed
                if bar is not None:
                    bar.set_postfix(computed=computed, cached=cached, refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    except Exception as exc:  # noqa: BLE001 - every failure is reported in one line, with what to do
        return report_error("precompute", exc)
    finally:
        if source is not None:
            source.close()
    if cache.write_error is not None:
        print(
            f"napari-sam2 precompute: the features could not be stored: {cache.write_error}", file=sys.stderr
        )
        return 1
    if not args.quiet:
        print(f"{len(indices)} frames: {computed} computed, {cached} already cached")
        print(cache_summary(cache))
    return 0


def _warn_if_over_bound(predictor, cache, frames: int, quiet: bool) -> None:
    """Say before computing when the frames cannot all stay in the cache."""
    size = predictor.model.image_size
    # float32 features per frame (vision and position: 256 x S/16 x S/16; high-res: 32 x S/4 x S/4
    # and 64 x S/8 x S/8); zstd keeps about 0.7 of it (measured on tiny at 1024: 14.5 of 20 MB)
    entry = 0.7 * 4 * (2 * 256 * (size // 16) ** 2 + 32 * (size // 4) ** 2 + 64 * (size // 8) ** 2)
    if not quiet and frames * entry > cache.max_bytes:
        print(
            f"napari-sam2 precompute: {frames} frames take about {frames * entry / 2**30:.1f} GiB, more than the "
            f"cache's bound of {cache.max_bytes / 2**30:.3g} GiB: the least recently used entries will be "
            "removed (raise it with --cache-max-gb or NAPARI_SAM2_EMBEDDING_CACHE_GB)",
            file=sys.stderr,
        )


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "precompute",
        help="compute a stack's image features into the embedding cache ahead of time",
        description="Compute the image features of every frame of a stack (or of --frames) into the "
        "persistent embedding cache, so that the widget and `napari-sam2 track` on the same stack read them "
        "instead of computing them. They must use the same model, checkpoint, precision, device and "
        "channels. Frames already cached are skipped. Every argument is checked before the first frame "
        "is computed.",
    )
    p.add_argument("stack", help="TIFF/OME-TIFF stack (T, Y, X[, C]), OME-Zarr, NIfTI or a folder of images")
    add_model_arguments(p)
    p.add_argument(
        "--channels",
        type=parse_channels,
        default=None,
        metavar="C[,C...]",
        help="the 1 to 3 channels the model sees, e.g. 0,2 (default: the first three); use the ones you "
        "will track with",
    )
    p.add_argument(
        "--frames",
        type=parse_frames,
        default=None,
        metavar="A:B",
        help="only frames A to B-1 (counted from 0; A: to the end, :B from the start; default: all)",
    )
    add_cache_arguments(p, allow_off=False)
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_run)
