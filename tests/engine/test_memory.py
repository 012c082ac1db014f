"""Returning freed heap memory to the OS (napari_sam2.engine.predict.heap)."""

import sys

import numpy as np
import pytest

from napari_sam2.engine.predict.heap import trim_heap


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only")
def test_trim_returns_fragmented_free_memory():
    if not trim_heap():
        trim_heap()  # nothing to trim is fine; availability is what matters here
    # 100 KB blocks (below glibc's mmap threshold: they come from the heap) with small
    # long-lived blocks in between, so freeing the big ones leaves holes, not a short heap.
    big, pins = [], []
    for _ in range(2000):
        big.append(np.ones(100_000 // 8))
        pins.append(np.ones(16))
    del big
    before = _rss_kb()
    assert trim_heap() is True
    after = _rss_kb()
    assert before - after > 100_000, (before, after)  # most of the ~200 MB came back
    del pins
