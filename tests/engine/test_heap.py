"""Giving freed heap memory back to the OS (engine/predict/heap.py): the look-up of glibc's
``malloc_trim`` and what happens where it is missing. That trimming really frees memory on
Linux is measured in test_memory.py."""

from __future__ import annotations

import ctypes
import sys

import pytest

from napari_sam2.engine.predict import heap


@pytest.fixture
def fresh_lookup(monkeypatch):
    """Forget the cached libc so each test looks it up again (restored afterwards)."""
    monkeypatch.setattr(heap, "_libc", None)


def test_another_platform_reports_false_without_loading_a_library(fresh_lookup, monkeypatch):
    loaded = []
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: loaded.append(name))
    assert heap.trim_heap() is False
    assert loaded == []


@pytest.mark.parametrize("error", [OSError("libc.so.6: cannot open"), AttributeError("malloc_trim")])
def test_a_libc_without_malloc_trim_reports_false_and_is_not_looked_up_again(
    fresh_lookup, monkeypatch, error
):
    tries = []

    def cdll(name):
        tries.append(name)
        raise error

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", cdll)
    assert heap.trim_heap() is False
    assert heap.trim_heap() is False  # once known missing, never tried again (called every frame)
    assert tries == ["libc.so.6"]


def test_the_library_is_loaded_once_and_its_answer_returned_as_a_bool(fresh_lookup, monkeypatch):
    calls = []

    class FakeTrim:
        argtypes = restype = None

        def __call__(self, pad):
            calls.append(pad)
            return len(calls) % 2  # 1: memory was released, 0: nothing to release

    class FakeLibc:
        malloc_trim = FakeTrim()

    loads = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: loads.append(name) or FakeLibc())
    assert heap.trim_heap() is True
    assert heap.trim_heap() is False
    assert loads == ["libc.so.6"] and calls == [0, 0]  # pad 0: trim everything above the heap's top
    assert FakeLibc.malloc_trim.argtypes == [ctypes.c_size_t] and FakeLibc.malloc_trim.restype is ctypes.c_int


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_on_linux_the_real_call_answers_a_bool(fresh_lookup):
    assert isinstance(heap.trim_heap(), bool)
    assert heap._libc is not False
