"""``napari-sam2 cache info|clear``: see and empty the persistent embedding cache.

The cache (:mod:`napari_sam2.engine.cache.embedding_cache`) is on by default in the plugin and the
command line and grows up to its bound (20 GiB unless set); this shows where it is and how
much it holds, and removes its entries (only the files the cache wrote).
"""

from __future__ import annotations

import argparse
import sys

from ._common import report_error


def _cache(args: argparse.Namespace):
    from napari_sam2.engine.cache.embedding_cache import EmbeddingCache

    return EmbeddingCache(args.cache_dir)


def _info(args: argparse.Namespace) -> int:
    try:
        cache = _cache(args)
        usage = cache.usage()
    except Exception as exc:  # noqa: BLE001 - one line with what to do
        return report_error("cache info", exc)
    state = "" if cache.folder.is_dir() else " (not created yet)"
    print(f"folder:  {cache.folder}{state}")
    print(f"entries: {usage.entries}")
    print(f"size:    {usage.bytes / 2**30:.2f} GiB ({usage.bytes:,} bytes)")
    print(
        f"bound:   {cache.max_bytes / 2**30:.3g} GiB (set NAPARI_SAM2_EMBEDDING_CACHE_GB or --cache-max-gb)"
    )
    return 0


def _clear(args: argparse.Namespace) -> int:
    try:
        cache = _cache(args)
        size = cache.size_bytes()
        removed = cache.clear()
    except Exception as exc:  # noqa: BLE001 - one line with what to do
        return report_error("cache clear", exc)
    left = cache.usage()
    print(f"removed {removed} entries ({size / 2**30:.2f} GiB) from {cache.folder}")
    if left.entries:
        print(
            f"napari-sam2 cache clear: {left.entries} entries could not be removed (in use or read-only?)",
            file=sys.stderr,
        )
        return 1
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "cache",
        help="show or empty the embedding cache (image features kept between runs)",
        description="The persistent embedding cache keeps each frame's image features on disk so that "
        "re-propagations and later runs read them instead of computing them again. `info` shows its folder, "
        "entries, size and bound; `clear` removes its entries (only files the cache wrote).",
    )
    sub = p.add_subparsers(dest="action", metavar="<action>", required=True)
    for name, func, text in (
        ("info", _info, "the cache's folder, entry count, size and bound"),
        ("clear", _clear, "remove every entry (files the cache wrote; nothing else)"),
    ):
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument(
            "--cache-dir",
            default=None,
            metavar="DIR",
            help="the cache folder (default: $NAPARI_SAM2_EMBEDDING_DIR, else the user cache folder's "
            "napari-sam2/embeddings)",
        )
        q.set_defaults(func=func)
