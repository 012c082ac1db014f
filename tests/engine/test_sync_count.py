"""Operations that would stall a GPU's queue, counted on the CPU (issue 22).

On CUDA, every operation whose result the host must read (``.item()``, ``bool(tensor)``, an output
whose size depends on the data: ``nonzero``, ``unique``, boolean-mask indexing), every copy to the
host (``.cpu()``, ``.numpy()``, ``.tolist()``) and every tensor made from host data (``torch.tensor``,
``torch.as_tensor``, ``torch.from_numpy``: the copy to the device waits) makes the host wait for the
device. ``SyncOpCounter`` sees them on any device: the data-dependent ones as aten operations through a
``TorchDispatchMode``, the copies through patches of the Python methods (a CPU tensor's ``.cpu()``
reaches no operator), and names the source line in napari_sam2 that asked for each.

The bounds are per tracked frame: the frame's pixels going to the device (1 host-to-device copy) and
the masks handed to the caller (1 device-to-host copy, made by the caller), nothing else, and nothing
inside ``model/``. ``test_gpu.py::test_cuda_syncs_per_tracked_frame`` checks the same on a real GPU
with ``torch.cuda.set_sync_debug_mode``.
"""

from __future__ import annotations

import contextlib
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor

SRC = Path(__file__).resolve().parents[2] / "src" / "napari_sam2"
PKG = "napari_sam2"

# aten operations that read device data on the host, by kind
_READ_BACK = {"_local_scalar_dense": "item/bool"}
_DATA_DEPENDENT = ("nonzero", "unique", "_unique", "unique_dim", "unique_consecutive", "masked_select")
_FROM_HOST = {"lift_fresh": "from-host", "lift_fresh_copy": "from-host"}


def _site() -> str:
    """The innermost napari_sam2 source line on the stack ("caller" when none)."""
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename.replace("\\", "/")
        if f"/{PKG}/" in path and "/tests/" not in path:
            rel = path.split(f"/{PKG}/", 1)[1]
            return f"{rel}:{frame.lineno}"
    return "caller"


class SyncOpCounter(TorchDispatchMode):
    """Counts would-be host<->device synchronisations by (kind, source line)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: Counter[tuple[str, str]] = Counter()
        self._reading = 0  # inside a counted Python-level read: its aten read is the same sync

    # ------------------------------------------------------------------ aten operations
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        kind = _READ_BACK.get(name) or _FROM_HOST.get(name)
        if kind == "item/bool" and self._reading:
            kind = None  # counted once, by the Python-level patch
        if kind is None and name.startswith(_DATA_DEPENDENT):
            kind = "data-dependent"
        if kind is None and name in ("index", "index_put", "index_put_", "_index_put_impl_"):
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(i is not None and i.dtype == torch.bool for i in indices):
                kind = "bool-index"
        if kind is None and name == "repeat_interleave" and "output_size" not in kwargs:
            # by a tensor of repeats, the output size is read from the device: overload
            # repeat_interleave.Tensor(repeats) or repeat_interleave.self_Tensor(self, repeats)
            repeats = args[0] if func._overloadname == "Tensor" else (args[1:2] or [kwargs.get("repeats")])[0]
            if isinstance(repeats, torch.Tensor):
                kind = "data-dependent"
        if kind is not None:
            self.sites[(kind, _site())] += 1
        return func(*args, **kwargs)

    # ------------------------------------------------------------------ Python-level reads and copies
    @contextlib.contextmanager
    def counting(self):
        """Count inside this block. Besides the aten operations: copies to the host (``.cpu()``,
        ``.numpy()``, ``.tolist()``, ``.to("cpu")``) and scalar reads (``.item()``, ``bool()``,
        ``int()``, ``float()``), patched at the Python level: under ``torch.inference_mode`` the
        scalar reads of inference tensors never reach a dispatch mode."""
        patched = {}

        def wrap(attr, kind, applies=lambda a, k: True):
            original = getattr(torch.Tensor, attr)
            patched[attr] = original

            def counted(tensor, *a, **k):
                # x.cpu().numpy() is one copy on a GPU: the host tensor .cpu() made is not counted again
                hit = applies(a, k)
                count = hit is True and not getattr(tensor, "_on_host_already", False)
                if count:
                    self.sites[(kind, _site())] += 1
                self._reading += 1
                try:
                    out = original(tensor, *a, **k)
                finally:
                    self._reading -= 1
                if hit and kind == "to-host" and isinstance(out, torch.Tensor):
                    out = out.view_as(out)  # a CPU tensor's .cpu() is itself: mark a new alias
                    out._on_host_already = True
                return out

            setattr(torch.Tensor, attr, counted)

        def to_cpu(a, k):
            """True: a copy to the host that waits. "async": one that does not (non_blocking: on
            CUDA into pinned memory, read once an event says it is done), not counted, but its
            result is on the host. Only an explicit "cpu": on the CPU .to(self.device) cannot be
            told from a copy to the host."""
            target = k.get("device", a[0] if a else None)
            if not (isinstance(target, str) and target.split(":")[0] == "cpu"):
                return False
            non_blocking = k.get("non_blocking", False) or any(x is True for x in a[1:])
            return "async" if non_blocking else True

        for attr in ("cpu", "numpy", "tolist"):
            wrap(attr, "to-host")
        wrap("to", "to-host", to_cpu)
        for attr in ("item", "__bool__", "__int__", "__float__"):
            wrap(attr, "item/bool")
        try:
            with self:
                yield self
        finally:
            for attr, original in patched.items():
                setattr(torch.Tensor, attr, original)

    # ------------------------------------------------------------------ reading
    def total(self, where: str | None = None, kind: str | None = None) -> int:
        return sum(
            n
            for (k, site), n in self.sites.items()
            if (kind is None or k == kind) and (where is None or site.startswith(where))
        )

    def report(self, frames: int = 1) -> str:
        if not self.sites:
            return "none"
        return ", ".join(
            f"{k} at {s} x{n} ({n / frames:.3g}/frame)" for (k, s), n in self.sites.most_common()
        )


def count_propagation(predictor, image, clicks, skip: int) -> tuple[SyncOpCounter, int]:
    """Counts inside ``propagate_in_video`` and the caller's copy of each frame's masks to the host,
    after ``skip`` frames (the prompted frame and the filling of the memory bank)."""
    state = predictor.init_state(image)
    for obj_id, xy in clicks:
        predictor.add_new_points_or_box(state, 0, obj_id, points=[xy], labels=[1])
    frames = iter(predictor.propagate_in_video(state))
    for _ in range(skip):
        next(frames)
    counter, n = SyncOpCounter(), 0
    with torch.inference_mode():
        while True:
            with counter.counting():
                item = next(frames, None)
                if item is None:
                    break
                (item[2] > 0).cpu().numpy()  # what a caller does with each frame's masks
            n += 1
    state.close()
    return counter, n


# ====================================================================== the counter itself


def test_counter_sees_every_kind_of_sync_and_names_the_line():
    x = torch.randn(8)
    counter = SyncOpCounter()
    with counter.counting():
        x.sum().item()
        bool(x[0] > 0)
        x.nonzero()
        torch.unique(x)
        x[x > 0]
        torch.tensor([1.0, 2.0])
        torch.from_numpy(np.ones(3))
        torch.as_tensor(np.ones(3))
        x.cpu()
        x.numpy()
        x.tolist()
        x.to("cpu")
        x.to("cpu", non_blocking=True).numpy()  # a copy that does not wait, read when done: none
        (x > 0).cpu().numpy()  # one copy
        int(x[0])
        float(x[0])
        torch.repeat_interleave(torch.ones(3, dtype=torch.long))
        x.repeat_interleave(torch.ones(8, dtype=torch.long))
        x.repeat_interleave(torch.ones(8, dtype=torch.long), output_size=8)  # size given: no sync
        torch.where(x > 0, 0.1, x)  # a Python scalar is a kernel argument: no sync
        x[1:3] * 2  # views and kernels: no sync
    assert counter.total(kind="item/bool") == 4, counter.report()
    assert counter.total(kind="data-dependent") == 4, counter.report()
    assert counter.total(kind="bool-index") == 1
    assert counter.total(kind="from-host") == 3
    assert counter.total(kind="to-host") == 5
    assert counter.total() == 17
    assert counter.total(where="caller") == 17  # none of it ran in napari_sam2


def test_counter_sees_scalar_reads_in_inference_mode():
    """Under torch.inference_mode ``.item()`` and ``bool()`` of inference tensors bypass the
    dispatch mode: the Python-level patch must still see them, once each."""
    counter = SyncOpCounter()
    with torch.inference_mode():
        y = torch.randn(8) > 0
        with counter.counting():
            bool(y[0])
            bool(torch.all(y))
            y[0].item()
            y.nonzero()
    assert counter.total(kind="item/bool") == 3, counter.report()
    assert counter.total(kind="data-dependent") == 1, counter.report()


def test_counter_attributes_to_the_package_line():
    from napari_sam2.engine.predict import video_inference

    counter = SyncOpCounter()
    with counter.counting():
        video_inference.fill_holes_in_mask_scores(torch.randn(1, 1, 16, 16), 4)
    assert counter.total(where="model/") == 0
    assert all(site != "caller" or k == "to-host" for (k, site) in counter.sites)


# ====================================================================== propagation


def _timelapse(n_frames: int, shape=(64, 80)):
    rng = np.random.default_rng(0)
    stack = rng.normal(1000, 50, size=(n_frames, *shape)).astype(np.uint16)
    stack[:, 10:30, 10:30] += 3000
    stack[:, 35:55, 45:70] += 2500
    return stack, [(1, [20.0, 20.0]), (2, [57.0, 45.0])]


# Per tracked frame: the frame's pixels to the device, and the masks to the caller.
MAX_SYNCS_PER_FRAME = 2
MAX_TO_HOST_PER_FRAME = 1


def _check_propagation_counts(predictor, n_frames: int, skip: int):
    image, clicks = _timelapse(n_frames)
    counter, frames = count_propagation(predictor, image, clicks, skip=skip)
    assert frames == n_frames - skip
    where = counter.report(frames)
    print(f"\nper tracked frame, {frames} frames, 2 objects: {counter.total() / frames:.3g}: {where}")
    assert counter.total(where="model/") == 0, f"syncs inside model/: {where}"
    assert counter.total(kind="to-host") <= MAX_TO_HOST_PER_FRAME * frames, where
    assert counter.total(kind="to-host", where="caller") == frames, where
    assert counter.total() <= MAX_SYNCS_PER_FRAME * frames, where
    return counter, frames


@pytest.mark.parametrize("fill_hole_area", [0, 8], ids=["no-hole-filling", "hole-filling"])
@pytest.mark.parametrize("batch_objects", [False, True], ids=["one-by-one", "batched"])
def test_propagation_syncs_per_tracked_frame(small_model, tmp_path, fill_hole_area, batch_objects):
    predictor = SAM2VideoPredictor(
        small_model,
        fill_hole_area=fill_hole_area,
        batch_objects=batch_objects,
        spill_to_disk=False,
        spill_dir=str(tmp_path),
    )
    _check_propagation_counts(predictor, n_frames=6, skip=2)


def test_spilling_copies_to_the_host_do_not_wait(small_model, tmp_path):
    """Spilling after 2 frames (the default keeps 16): every tracked frame sends older outputs to
    the scratch file. Those copies go to the host without blocking (read once an event says they
    are done), so the only copy that waits stays the caller's. Reading spilled frames back (here
    every frame, as 2 frames hold too few memories) makes tensors from host data: on CUDA through
    pinned memory without blocking, which the CPU count cannot tell apart; reported, not bounded."""
    predictor = SAM2VideoPredictor(
        small_model, fill_hole_area=0, hot_frames=2, spill_to_disk=True, spill_dir=str(tmp_path)
    )
    image, clicks = _timelapse(6)
    counter, frames = count_propagation(predictor, image, clicks, skip=2)
    where = counter.report(frames)
    print(f"\nspilling after 2 frames, per tracked frame: {counter.total() / frames:.3g}: {where}")
    assert counter.total(where="model/") == 0, where
    assert counter.total(kind="to-host") == counter.total(kind="to-host", where="caller") == frames, where
    assert (
        counter.total() - counter.total(where="engine/predict/output_store.py")
        <= MAX_SYNCS_PER_FRAME * frames
    ), where


# ====================================================================== hole filling on the device


def _fill_holes_by_labelling(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """The rule as scikit-image states it (the host implementation this replaced)."""
    from skimage.measure import label

    bg = (mask <= 0).numpy()
    fill = np.zeros_like(bg)
    for idx in np.ndindex(bg.shape[:-2]):
        lab = label(bg[idx], connectivity=2)
        areas = np.bincount(lab.ravel())
        small = areas <= max_area
        small[0] = False
        fill[idx] = small[lab]
    return torch.where(torch.from_numpy(fill), 0.1, mask)


@pytest.mark.parametrize("max_area", [1, 2, 3, 8, 30, 100])
def test_device_hole_filling_equals_connected_component_labelling(max_area):
    from napari_sam2.engine.predict.video_inference import _fill_holes_on_device, fill_holes_in_mask_scores

    rng = np.random.default_rng(max_area)
    for density in (0.2, 0.45, 0.6, 0.8):
        # blobs and speckle: long thin components, diagonal-only contacts, borders, many sizes
        logits = torch.from_numpy(rng.normal(size=(3, 1, 40, 52)).astype(np.float32))
        logits += torch.from_numpy((rng.random((3, 1, 40, 52)) < density).astype(np.float32)) * 2 - 1
        expected = _fill_holes_by_labelling(logits, max_area)
        got = _fill_holes_on_device(logits, max_area)
        assert torch.equal(got, expected), (max_area, density, (got != expected).sum())
        # what the predictor calls (on the CPU, large areas go to the labelling: same result)
        assert torch.equal(fill_holes_in_mask_scores(logits, max_area), expected)
    spiral = torch.full((1, 1, 9, 9), 5.0)  # a 1-pixel-wide background path longer than the steps
    spiral[0, 0, 1, 1:8] = spiral[0, 0, 1:8, 7] = spiral[0, 0, 7, 1:8] = spiral[0, 0, 3:8, 1] = -1.0
    assert torch.equal(_fill_holes_on_device(spiral, max_area), _fill_holes_by_labelling(spiral, max_area))


# ====================================================================== image predictor and AMG
# Not yet at the tracking loop's bound: these pin today's numbers (docs/benchmarks.md) so that
# they can only go down. The remaining sites are in files other work owns: image_predictor.py
# (prompts made from host data, 3 copies of the outputs to the host) and automatic_mask_generator.py.


def _test_image():
    rng = np.random.default_rng(0)
    img = rng.normal(1000, 50, size=(64, 80)).astype(np.uint16)
    img[10:30, 10:30] += 3000
    return img


def test_image_predictor_syncs(small_model):
    from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor

    predictor, image = SAM2ImagePredictor(small_model), _test_image()
    predictor.set_image(image)  # first call: one-time constants
    counter = SyncOpCounter()
    with counter.counting():
        predictor.set_image(image)
    print(f"\nset_image: {counter.total()}: {counter.report()}")
    assert counter.total() <= 1, counter.report()  # the pixels to the device
    for prompt in ({"point_coords": [[20, 20]], "point_labels": [1]}, {"box": [5, 5, 35, 35]}):
        counter = SyncOpCounter()
        with counter.counting():
            predictor.predict(**prompt)
        print(f"predict({', '.join(prompt)}): {counter.total()}: {counter.report()}")
        assert counter.total(where="model/") == 0, counter.report()
        assert counter.total(kind="to-host") <= 3, counter.report()  # masks, IoUs, low-res logits
        assert counter.total(kind="from-host") <= 3, counter.report()  # the prompts
        assert counter.total() <= 6, counter.report()


def test_automatic_mask_generation_syncs_per_batch(small_model):
    from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator

    image, totals = _test_image(), {}
    for per_side in (4, 8):  # 16 and 64 points: 1 and 4 batches of 16
        amg = SAM2AutomaticMaskGenerator(small_model, points_per_side=per_side, points_per_batch=16)
        amg.generate(image)
        counter = SyncOpCounter()
        with counter.counting():
            amg.generate(image)
        totals[per_side] = counter
        assert counter.total(where="model/") == 0, counter.report()
    per_batch = (totals[8].total() - totals[4].total()) / 3
    print(f"\nAMG per batch of 16 points: {per_batch:.3g}: {totals[8].report(4)}")
    # points in, their scaling, 2 filters, the crop-edge check, the batch's RLEs (found, copied)
    assert per_batch <= 7, totals[8].report(4)
