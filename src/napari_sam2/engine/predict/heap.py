"""Give freed heap memory back to the operating system during long runs.

Tracking allocates and frees large buffers (attention, features) every frame while small
long-lived objects (outputs, pointers) land between them in glibc's main heap. The freed
blocks then stay resident: measured on a 400-frame run, the process held 1.65 GB of which
only ~0.27 GB was live tracking state; ``malloc_trim(0)`` gave 0.58 GB back at once.
Trimming after each frame keeps resident memory flat in the number of frames.
"""

from __future__ import annotations

import ctypes
import sys

_libc: object = None  # None: not looked up yet; False: not available


def trim_heap() -> bool:
    """Return free heap pages to the OS (glibc's ``malloc_trim``). False where unavailable."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                libc.malloc_trim.restype = ctypes.c_int
                _libc = libc
            except (OSError, AttributeError):  # musl or another libc without malloc_trim
                _libc = False
    if _libc is False:
        return False
    return bool(_libc.malloc_trim(0))
