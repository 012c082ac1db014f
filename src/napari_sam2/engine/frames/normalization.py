"""Contrast normalisation of microscopy frames into the RGB input SAM 2 expects.

SAM 2 was trained on 8-bit RGB photographs. Microscopy frames are 8/12/16-bit or float,
one to four channels, and often use a small part of their range. :class:`Normalizer`
maps them into ``[0, 1]`` RGB:

- ``uint8`` frames with 3 channels (or 4, RGBA, whose alpha is dropped) get exactly
  Meta's treatment, ``x / 255``: mode ``"rgb8"``.
- Everything else gets robust per-channel percentiles (default 0.5 % and 99.8 %),
  ``(x - low) / (high - low)`` clipped to ``[0, 1]``: mode ``"percentile"``.
- CT (and any data in calibrated units) can instead get a fixed intensity window,
  ``low = center - width / 2``, ``high = center + width / 2`` in the source's units
  (Hounsfield units for CT), nothing fitted: mode ``"window"``, made by
  :meth:`Normalizer.window` or by name with :meth:`Normalizer.ct_preset` (``CT_WINDOWS``).

The range is computed ONCE per sequence, from a sample of evenly spaced frames, and then
applied unchanged to every frame: per-frame normalisation would make the brightness
flicker from frame to frame, and SAM 2's memory would see that flicker as change.

Channels to RGB (``channels`` picks which source channels are used, in order):

- 1 channel  -> replicated to R, G and B (gray);
- 2 channels -> c0 -> R, c1 -> G, B = 0 (the usual red/green composite; no channel is
  duplicated, so neither dominates);
- 3 channels -> R, G, B as they are;
- 4 channels -> the first three by default (alpha of RGBA is dropped), or the ones
  given in ``channels``.

:func:`preprocess` then does what Meta's ``SAM2ImagePredictor`` does with torchvision:
``ToTensor`` -> ``Resize((1024, 1024))`` (bilinear, antialiased) -> ``Normalize`` with
the ImageNet mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_sam2.engine.frames.open import FrameSource, open_frames
from napari_sam2.errors import InputError

__all__ = ["CT_WINDOWS", "IMAGENET_MEAN", "IMAGENET_STD", "Normalizer", "choose_channels", "preprocess"]

#: ImageNet statistics used by SAM 2 (sam2/utils/transforms.py, SAM2Transforms).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Standard CT display windows, name -> (center/level, width) in Hounsfield units.
#: Values: Radiopaedia, "Windowing (CT)" (https://radiopaedia.org/articles/windowing-ct),
#: typical window widths and levels: brain W:80 L:40; lungs W:1500 L:-600; mediastinum
#: W:350 L:50; abdomen soft tissues W:400 L:50; liver W:150 L:30; bone W:1800 L:400;
#: subdural W:215 L:75 (its W:130-300 L:50-100 range, mid); stroke W:40 L:40;
#: temporal bones W:2800 L:600.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (30.0, 150.0),
    "mediastinum": (50.0, 350.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "temporal_bone": (600.0, 2800.0),
}
_MODES = ("rgb8", "percentile", "window")

# Pixels sampled per frame when fitting: bounds the cost on large frames while keeping
# the percentile error far below one grey level of the 8-bit range SAM saw in training.
_MAX_PIXELS_PER_FRAME = 1 << 17


def choose_channels(num_channels: int, channels: int | Sequence[int] | None = None) -> tuple[int, ...]:
    """The source channels the model sees (the one home of this choice): the given ones
    (1 to 3, in R, G, B order), or by default the first three."""
    return _channel_selection(num_channels, channels)


def _channel_selection(num_channels: int, channels: int | Sequence[int] | None) -> tuple[int, ...]:
    if channels is None:
        return tuple(range(min(num_channels, 3)))
    if isinstance(channels, (int, np.integer)):
        channels = (int(channels),)
    sel = tuple(int(c) for c in channels)
    if not 1 <= len(sel) <= 3:
        raise InputError(f"channels must name 1 to 3 source channels (for R, G, B); got {sel}")
    for c in sel:
        if not -num_channels <= c < num_channels:
            raise InputError(f"channel {c} does not exist: the frames have {num_channels} channel(s)")
    return tuple(c % num_channels for c in sel)


def _sample_frame_indices(n: int, sample_frames: int) -> tuple[int, ...]:
    k = max(1, min(int(sample_frames), n))
    return tuple(int(i) for i in np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64)))


@dataclass(frozen=True)
class Normalizer:
    """Fixed per-channel intensity mapping from source frames to RGB in ``[0, 1]``.

    Make one with :meth:`fit` (fitted to the data), or :meth:`window` / :meth:`ct_preset`
    (a fixed window); it is immutable, so every frame of a sequence is mapped identically
    whatever order the frames are read in.

    Attributes:
        mode: ``"rgb8"`` (``x / 255``), ``"percentile"`` or ``"window"`` (both
            ``(x - low) / (high - low)`` clipped to [0, 1]).
        low, high: per used channel, in source units (``high > low`` always).
        channels: source channel index for each used channel (1 to 3 of them).
        num_channels: channels of the source frames (1 for (H, W) frames).
        percentiles: the (low, high) percentiles used, None for ``"rgb8"``.
        sampled_frames: indices of the frames the range was computed from.
        num_frames: frames in the sequence it was fitted on.
        center_width: (center, width) of a ``"window"`` normaliser, else None.
        preset: name of the CT preset it came from (a key of ``CT_WINDOWS``), else None.
    """

    mode: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    channels: tuple[int, ...]
    num_channels: int = 1
    percentiles: tuple[float, float] | None = None
    sampled_frames: tuple[int, ...] = ()
    num_frames: int = 0
    center_width: tuple[float, float] | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise InputError(f"unknown normalisation mode {self.mode!r}; expected one of {', '.join(_MODES)}")
        if (self.mode == "window") != (self.center_width is not None):
            raise InputError("center_width is given exactly for mode 'window'")
        if not (len(self.low) == len(self.high) == len(self.channels)) or not 1 <= len(self.channels) <= 3:
            raise InputError("low, high and channels must have the same length, 1 to 3")
        for lo, hi in zip(self.low, self.high):
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise InputError(f"invalid intensity range [{lo}, {hi}]: need finite low < high")

    # -- fitting ----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        source: FrameSource | Any,
        *,
        sample_frames: int = 16,
        percentiles: tuple[float, float] = (0.5, 99.8),
        channels: int | Sequence[int] | None = None,
        seed: int = 0,
    ) -> Normalizer:
        """Compute the normalisation of a whole sequence from a sample of its frames.

        Args:
            source: a :class:`FrameSource` or anything :func:`open_frames` accepts.
            sample_frames: at most this many evenly spaced frames are read (first and
                last included).
            percentiles: (low, high) percentiles mapped to 0 and 1.
            channels: source channel(s) to use: an index (shown as gray) or 1 to 3
                indices (for R, G, B); default the first three.
            seed: seed of the pixel subsampling, so that fitting is reproducible.

        Percentiles ignore NaN (``nanpercentile``); if every sampled pixel of a used
        channel is NaN a ValueError is raised. A channel whose percentiles coincide
        (e.g. sparse fluorescence, mostly background) falls back to its sampled min and
        max; a channel that is constant over the sample, value ``v``, gets the range
        ``[v, v + 1]`` so that no division by zero (and no NaN) can happen.
        """
        src = open_frames(source)
        plo, phi = (float(percentiles[0]), float(percentiles[1]))
        if not 0.0 <= plo < phi <= 100.0:
            raise InputError(f"percentiles must satisfy 0 <= low < high <= 100; got {percentiles}")
        nc = src.num_channels
        sel = _channel_selection(nc, channels)
        idx = _sample_frame_indices(len(src), sample_frames)

        if src.dtype == np.uint8 and nc in (3, 4) and sel == (0, 1, 2):
            # Exactly Meta's treatment of 8-bit RGB(A) pictures: no stretching at all.
            return cls("rgb8", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), sel, nc, None, (), len(src))

        rng = np.random.default_rng(seed)
        samples: list[list[np.ndarray]] = [[] for _ in sel]
        for i in idx:
            frame = src[i]
            if frame.ndim == 2:
                frame = frame[..., None]
            flat = frame.reshape(-1, frame.shape[-1])
            if flat.shape[0] > _MAX_PIXELS_PER_FRAME:
                rows = rng.integers(0, flat.shape[0], _MAX_PIXELS_PER_FRAME)
                flat = flat[rows]
            for k, c in enumerate(sel):
                samples[k].append(np.asarray(flat[:, c], dtype=np.float64))

        lows: list[float] = []
        highs: list[float] = []
        for k, c in enumerate(sel):
            values = np.concatenate(samples[k])
            values = values[~np.isnan(values)]
            if values.size == 0:
                raise InputError(
                    f"channel {c} is NaN in every sampled pixel of frames {list(idx)}; cannot compute an intensity range"
                )
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                raise InputError(f"channel {c} has no finite values in the sampled frames {list(idx)}")
            lo, hi = (float(v) for v in np.percentile(finite, [plo, phi]))
            if not hi > lo:
                lo, hi = float(finite.min()), float(finite.max())
            if not hi > lo:
                hi = lo + 1.0
                if not hi > lo:  # |lo| so large that +1 is lost to rounding
                    hi = lo + abs(lo) * 1e-6
            lows.append(lo)
            highs.append(hi)
        return cls("percentile", tuple(lows), tuple(highs), sel, nc, (plo, phi), idx, len(src))

    @classmethod
    def window(
        cls,
        center: float,
        width: float,
        *,
        num_channels: int = 1,
        channels: int | Sequence[int] | None = None,
        preset: str | None = None,
    ) -> Normalizer:
        """A fixed intensity window: ``center - width / 2`` -> 0, ``center + width / 2`` -> 1.

        In the source's own units (Hounsfield units for CT read through
        :mod:`napari_sam2.engine.io`), with nothing fitted, so the same tissue has the same
        brightness in every scan. Values outside the window are clipped (black / white).
        ``num_channels`` is the channel count of the frames (1 for CT); the window applies to
        each selected channel.
        """
        center, width = float(center), float(width)
        if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
            raise InputError(
                f"a window needs a finite center and a width > 0; got center={center}, width={width}"
            )
        sel = _channel_selection(int(num_channels), channels)
        low, high = center - width / 2.0, center + width / 2.0
        return cls(
            "window",
            (low,) * len(sel),
            (high,) * len(sel),
            sel,
            int(num_channels),
            center_width=(center, width),
            preset=preset,
        )

    @classmethod
    def ct_preset(cls, name: str, **kwargs: Any) -> Normalizer:
        """The CT window ``name`` of ``CT_WINDOWS`` (``"soft_tissue"``, ``"lung"``, ``"bone"``...)."""
        key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
        if key not in CT_WINDOWS:
            raise InputError(
                f"unknown CT window {name!r}; choose one of {', '.join(CT_WINDOWS)} or use Normalizer.window"
            )
        center, width = CT_WINDOWS[key]
        return cls.window(center, width, preset=key, **kwargs)

    # -- applying ---------------------------------------------------------------------------
    def to_rgb(self, frame: np.ndarray, *, frame_index: int | None = None) -> np.ndarray:
        """Map one source frame, (H, W) or (H, W, C), to float32 RGB (H, W, 3) in [0, 1].

        ``frame_index`` only serves error messages (a NaN frame is named by it).
        """
        x = np.asarray(frame)
        where = f"frame {frame_index}" if frame_index is not None else "the frame"
        if x.dtype == np.bool_:
            x = x.astype(np.uint8)
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3:
            raise InputError(f"{where} has shape {x.shape}; expected (H, W) or (H, W, C)")
        if x.shape[-1] != self.num_channels:
            raise InputError(
                f"{where} has {x.shape[-1]} channel(s) but this normaliser was fitted on frames with {self.num_channels}"
            )
        if x.dtype.kind not in "uif":
            raise InputError(f"{where} has dtype {x.dtype}, which is not an image type")
        x = x[..., list(self.channels)] if self.channels != tuple(range(x.shape[-1])) else x
        if x.dtype.kind == "f" and np.isnan(x).any():
            raise InputError(
                f"{where} contains NaN pixels; SAM 2 cannot segment undefined values — fill them first "
                "(e.g. np.nan_to_num(x, nan=background))"
            )
        if self.mode == "rgb8":
            # Bit-identical to torchvision ToTensor: float32 division by 255.
            y = x.astype(np.float32) / np.float32(255.0)
        elif self.mode == "window":
            # Division (correctly rounded), so window edges and center map to exactly 0, 1, 0.5.
            work = np.float32 if x.dtype.itemsize <= 2 or x.dtype == np.float32 else np.float64
            low = np.asarray(self.low, dtype=work)
            width = np.asarray(np.asarray(self.high) - np.asarray(self.low), dtype=work)
            y = (x.astype(work) - low) / width
            np.clip(y, 0.0, 1.0, out=y)
            y = y.astype(np.float32, copy=False)
        else:
            # float64 for wide types: float32 cannot hold int32 / float64 values exactly.
            work = np.float32 if x.dtype.itemsize <= 2 or x.dtype == np.float32 else np.float64
            low = np.asarray(self.low, dtype=work)
            scale = np.asarray(1.0 / (np.asarray(self.high) - np.asarray(self.low)), dtype=work)
            y = (x.astype(work) - low) * scale
            np.clip(y, 0.0, 1.0, out=y)
            y = y.astype(np.float32, copy=False)
        k = y.shape[-1]
        if k == 1:
            y = np.repeat(y, 3, axis=-1)
        elif k == 2:
            y = np.concatenate([y, np.zeros_like(y[..., :1])], axis=-1)
        return np.ascontiguousarray(y, dtype=np.float32)

    def frame_rgb(self, source: FrameSource, index: int) -> np.ndarray:
        """``to_rgb(source[index])``, with the frame index in error messages."""
        return self.to_rgb(source[index], frame_index=index)

    # -- reporting --------------------------------------------------------------------------
    def describe(self) -> str:
        """One line for UIs and logs."""
        if self.num_channels == 1:
            chan = "gray"
        else:
            names = {1: "gray", 2: "R, G", 3: "R, G, B"}[len(self.channels)]
            chan = f"channels {list(self.channels)} of {self.num_channels} -> {names}"
        if self.mode == "rgb8":
            return f"8-bit RGB, x / 255 (as SAM 2); {chan}"
        if self.mode == "window":
            center, width = self.center_width
            name = f"CT window {self.preset}" if self.preset else "window"
            return f"{name} L {_fmt(center)} W {_fmt(width)}: [{_fmt(self.low[0])}, {_fmt(self.high[0])}]; {chan}"
        ranges = ", ".join(
            f"c{c} [{_fmt(lo)}, {_fmt(hi)}]" for c, lo, hi in zip(self.channels, self.low, self.high)
        )
        plo, phi = self.percentiles if self.percentiles else (float("nan"), float("nan"))
        return (
            f"percentiles {_fmt(plo)}-{_fmt(phi)} % from {len(self.sampled_frames)} of {self.num_frames} frames: "
            f"{ranges}; {chan}"
        )


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def preprocess(frame_rgb: np.ndarray, image_size: int = 1024, device: Any = "cpu") -> torch.Tensor:  # noqa: F821
    """The model input for one RGB frame, as Meta's ``SAM2ImagePredictor`` makes it.

    ``frame_rgb`` is float (H, W, 3) in [0, 1] (from :meth:`Normalizer.to_rgb`). Returns a
    float32 tensor (3, image_size, image_size) on ``device``: resized with bilinear
    interpolation and antialiasing (torchvision's ``Resize`` on tensors, torchvision >=
    0.17), then normalised with the ImageNet mean and std, in that order, as in
    ``sam2/utils/transforms.py``. A frame that is already image_size x image_size is not
    resampled.
    """
    import torch
    import torch.nn.functional as F

    x = np.asarray(frame_rgb)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise InputError(f"expected an RGB frame of shape (H, W, 3); got {x.shape}")
    if x.dtype.kind != "f":
        raise InputError(f"expected a float RGB frame in [0, 1] (see Normalizer.to_rgb); got dtype {x.dtype}")
    # ToTensor: HWC -> CHW float32. The frame's pixels are the one copy to the device a frame needs;
    # on CUDA it goes through pinned memory without blocking, so the host does not wait for the GPU.
    host = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    device = torch.device(device)
    if device.type == "cuda":
        t = host.pin_memory().to(device, non_blocking=True).permute(2, 0, 1)
    else:
        t = host.permute(2, 0, 1).to(device)
    if t.shape[1:] != (image_size, image_size):
        t = F.interpolate(
            t[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    mean, std = _imagenet_constants(t.device)
    # torchvision Normalize: sub then div (not multiplication by 1/std).
    return ((t - mean) / std).contiguous()


_IMAGENET_ON_DEVICE: dict[str, tuple] = {}


def _imagenet_constants(device) -> tuple:
    """ImageNet mean and std as (3, 1, 1) float32 tensors on ``device``, made once per device:
    a tensor made from host data each frame would be a copy the host waits for on a GPU."""
    import torch

    key = str(device)
    if key not in _IMAGENET_ON_DEVICE:
        with torch.inference_mode(False):  # usable in and outside inference mode
            _IMAGENET_ON_DEVICE[key] = tuple(
                torch.tensor(v, dtype=torch.float32, device=device)[:, None, None]
                for v in (IMAGENET_MEAN, IMAGENET_STD)
            )
    return _IMAGENET_ON_DEVICE[key]
