"""Sequence-level contrast normalisation and SAM 2 preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam2.engine.frames.normalization import IMAGENET_MEAN, IMAGENET_STD, Normalizer, preprocess
from napari_sam2.engine.frames.open import open_frames


def _movie_uint16(t=20, h=40, w=50, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(500, 20, size=(t, h, w))
    base[:, 10:20, 10:25] += np.linspace(1000, 3000, t)[:, None, None]  # a cell brightening over time
    return np.clip(base, 0, 65535).astype(np.uint16)


# -- fitting --------------------------------------------------------------------------------------


def test_rgb8_is_exactly_x_over_255():
    rng = np.random.default_rng(0)
    movie = rng.integers(0, 256, size=(3, 17, 19, 3), dtype=np.uint8)
    norm = Normalizer.fit(movie)
    assert norm.mode == "rgb8"
    out = norm.to_rgb(movie[1])
    assert out.dtype == np.float32 and out.shape == (17, 19, 3)
    expected = movie[1].astype(np.float32) / 255  # what torchvision's ToTensor computes
    assert np.array_equal(out, expected)
    # torch float32 division, as in ToTensor, agrees bit for bit
    assert np.array_equal(out, (torch.from_numpy(movie[1]).to(torch.float32).div(255)).numpy())


def test_rgba8_drops_alpha():
    rng = np.random.default_rng(1)
    movie = rng.integers(0, 256, size=(2, 8, 9, 4), dtype=np.uint8)
    norm = Normalizer.fit(movie)
    assert norm.mode == "rgb8" and norm.num_channels == 4
    assert np.array_equal(norm.to_rgb(movie[0]), movie[0, ..., :3].astype(np.float32) / 255)


def test_uint16_maps_into_unit_range():
    movie = _movie_uint16()
    norm = Normalizer.fit(movie)
    assert norm.mode == "percentile"
    for i in (0, 7, 19):
        out = norm.to_rgb(movie[i])
        assert out.dtype == np.float32 and out.shape == (40, 50, 3)
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])  # gray
    lo, hi = norm.low[0], norm.high[0]
    assert 350 < lo < 500 < hi <= 3700


def test_float_input_and_percentile_formula():
    rng = np.random.default_rng(2)
    movie = rng.normal(0.0, 1.0, size=(5, 30, 30)).astype(np.float32)
    norm = Normalizer.fit(movie, percentiles=(1.0, 99.0))
    lo, hi = np.percentile(movie.astype(np.float64), [1.0, 99.0])  # small frames: every pixel is used
    assert norm.low[0] == pytest.approx(lo) and norm.high[0] == pytest.approx(hi)
    out = norm.to_rgb(movie[2])
    manual = np.clip((movie[2].astype(np.float32) - np.float32(lo)) / np.float32(hi - lo), 0, 1)
    np.testing.assert_allclose(out[..., 0], manual, atol=1e-6)


def test_range_is_fitted_once_not_per_frame():
    movie = _movie_uint16()
    src = open_frames(movie)
    norm = Normalizer.fit(src)
    forward = [norm.frame_rgb(src, i) for i in range(len(src))]
    backward = [norm.frame_rgb(src, i) for i in reversed(range(len(src)))][::-1]
    for a, b in zip(forward, backward):
        assert np.array_equal(a, b)
    # A dim frame is not stretched to full range on its own: brightness follows the data.
    assert forward[0][10:20, 10:25].mean() < forward[-1][10:20, 10:25].mean()
    # Refitting is reproducible (seeded pixel subsampling).
    assert Normalizer.fit(src) == norm


def test_samples_evenly_spaced_frames():
    movie = _movie_uint16(t=100, h=8, w=8)
    norm = Normalizer.fit(movie, sample_frames=5)
    assert norm.sampled_frames == (0, 25, 50, 74, 99)
    assert Normalizer.fit(movie[:3], sample_frames=16).sampled_frames == (0, 1, 2)


def test_large_frames_are_subsampled_but_close():
    rng = np.random.default_rng(3)
    movie = rng.integers(0, 4096, size=(2, 600, 600), dtype=np.uint16)  # 360k px > per-frame cap
    norm = Normalizer.fit(movie)
    lo, hi = np.percentile(movie, [0.5, 99.8])
    assert abs(norm.low[0] - lo) < 20 and abs(norm.high[0] - hi) < 20


def test_constant_image_gives_no_nan():
    movie = np.full((3, 10, 10), 7, np.uint16)
    norm = Normalizer.fit(movie)
    assert norm.high[0] > norm.low[0]
    out = norm.to_rgb(movie[0])
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    zeros = Normalizer.fit(np.zeros((2, 5, 5), np.float32))
    assert np.isfinite(zeros.to_rgb(np.zeros((5, 5), np.float32))).all()


def test_sparse_signal_falls_back_to_min_max():
    movie = np.zeros((2, 100, 100), np.uint16)
    movie[:, 50, 50] = 1000  # 0.01 % of pixels: both percentiles are 0
    norm = Normalizer.fit(movie)
    assert (norm.low[0], norm.high[0]) == (0.0, 1000.0)
    assert norm.to_rgb(movie[0])[50, 50, 0] == 1.0


def test_nan_fitting_ignored_and_all_nan_raises():
    rng = np.random.default_rng(4)
    movie = rng.random((4, 20, 20)).astype(np.float32)
    movie[1, :5] = np.nan
    norm = Normalizer.fit(movie)
    assert np.isfinite(norm.low[0]) and np.isfinite(norm.high[0])
    with pytest.raises(ValueError, match="frame 1 contains NaN"):
        norm.frame_rgb(open_frames(movie), 1)
    with pytest.raises(ValueError, match="frame 3 contains NaN"):
        norm.to_rgb(movie[1], frame_index=3)
    with pytest.raises(ValueError, match="NaN in every sampled pixel"):
        Normalizer.fit(np.full((2, 4, 4), np.nan, np.float32))


def test_bool_frames():
    movie = np.zeros((2, 6, 6), bool)
    movie[:, 2:4, 2:4] = True
    norm = Normalizer.fit(movie)
    out = norm.to_rgb(movie[0])
    assert out[3, 3, 0] == 1.0 and out[0, 0, 0] == 0.0


# -- channels -------------------------------------------------------------------------------------


def test_two_channels_go_to_red_and_green():
    rng = np.random.default_rng(5)
    movie = rng.integers(0, 1000, size=(3, 10, 12, 2), dtype=np.uint16)
    norm = Normalizer.fit(movie)
    assert norm.channels == (0, 1)
    out = norm.to_rgb(movie[0])
    assert out.shape == (10, 12, 3)
    assert np.all(out[..., 2] == 0)
    assert out[..., 0].max() > 0.5 and out[..., 1].max() > 0.5


def test_three_channel_uint16_is_per_channel():
    rng = np.random.default_rng(6)
    movie = rng.integers(0, 100, size=(3, 10, 10, 3), dtype=np.uint16)
    movie[..., 2] *= 100
    norm = Normalizer.fit(movie)
    assert norm.mode == "percentile" and norm.channels == (0, 1, 2)
    assert norm.high[2] > 50 * norm.high[0]


def test_four_channels_default_and_selection():
    rng = np.random.default_rng(7)
    movie = rng.random((2, 8, 8, 4)).astype(np.float32)
    assert Normalizer.fit(movie).channels == (0, 1, 2)
    single = Normalizer.fit(movie, channels=3)
    out = single.to_rgb(movie[0])
    assert single.channels == (3,)
    assert np.array_equal(out[..., 0], out[..., 1])
    manual = np.clip((movie[0, ..., 3] - single.low[0]) / (single.high[0] - single.low[0]), 0, 1)
    np.testing.assert_allclose(out[..., 0], manual, atol=1e-6)
    picked = Normalizer.fit(movie, channels=(3, 1, 0))
    assert picked.channels == (3, 1, 0)


def test_rgb8_with_channel_selection_uses_percentiles():
    rng = np.random.default_rng(8)
    movie = rng.integers(0, 60, size=(2, 8, 8, 3), dtype=np.uint8)
    norm = Normalizer.fit(movie, channels=1)
    assert norm.mode == "percentile"


def test_bad_channel_selection():
    movie = np.zeros((2, 4, 4, 2), np.uint16)
    with pytest.raises(ValueError, match="channel 5 does not exist"):
        Normalizer.fit(movie, channels=5)
    with pytest.raises(ValueError, match="1 to 3"):
        Normalizer.fit(movie, channels=(0, 1, 0, 1))


def test_to_rgb_checks_channel_count():
    norm = Normalizer.fit(np.zeros((2, 4, 4), np.uint16))
    with pytest.raises(ValueError, match="fitted on frames with 1"):
        norm.to_rgb(np.zeros((4, 4, 3), np.uint16))


def test_describe_is_one_line():
    for movie in (_movie_uint16(t=4), np.zeros((2, 5, 5, 3), np.uint8), np.ones((2, 5, 5, 2), np.float32)):
        text = Normalizer.fit(movie).describe()
        assert isinstance(text, str) and "\n" not in text and text
    assert "x / 255" in Normalizer.fit(np.zeros((2, 5, 5, 3), np.uint8)).describe()


def test_invalid_normalizer_rejected():
    with pytest.raises(ValueError):
        Normalizer("percentile", (1.0,), (1.0,), (0,))
    with pytest.raises(ValueError):
        Normalizer("magic", (0.0,), (1.0,), (0,))


# -- preprocess -----------------------------------------------------------------------------------


def _manual(frame_rgb: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(frame_rgb).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (t - mean) / std


@pytest.mark.parametrize("hw", [(48, 80), (300, 200)])
def test_preprocess_matches_resize_then_normalize(hw):
    rng = np.random.default_rng(9)
    rgb = rng.random(hw + (3,)).astype(np.float32)
    out = preprocess(rgb, image_size=128)
    assert out.shape == (3, 128, 128) and out.dtype == torch.float32
    assert torch.equal(out, _manual(rgb, 128))


def test_preprocess_no_resize_at_model_size():
    rng = np.random.default_rng(10)
    rgb = rng.random((64, 64, 3)).astype(np.float32)
    out = preprocess(rgb, image_size=64)
    mean = np.array(IMAGENET_MEAN, np.float32)
    std = np.array(IMAGENET_STD, np.float32)
    expected = ((rgb - mean) / std).transpose(2, 0, 1)
    assert np.array_equal(out.numpy(), expected)


def test_preprocess_default_1024_not_resized():
    rgb = np.random.default_rng(11).random((1024, 1024, 3)).astype(np.float32)
    out = preprocess(rgb)
    assert out.shape == (3, 1024, 1024)
    expected = (rgb - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    assert np.array_equal(out.numpy(), expected.transpose(2, 0, 1))


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="float"):
        preprocess(np.zeros((8, 8, 3), np.uint8))


def test_golden_input_pipeline(golden_dir):
    """8-bit RGB input: to_rgb + preprocess equals the goldens' recipe (x/255 - mean) / std."""
    iio = pytest.importorskip("imageio.v3")
    img = np.asarray(iio.imread(golden_dir / "inputs" / "truck.png"))[..., :3]
    norm = Normalizer.fit(img[None])
    assert norm.mode == "rgb8"
    out = preprocess(norm.to_rgb(img))
    x = img.astype(np.float32) / 255
    expected = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    assert np.array_equal(out.numpy(), expected.transpose(2, 0, 1))


# -- fixed windows (CT) ---------------------------------------------------------------------------


def test_window_edges_and_center_are_exact():
    norm = Normalizer.window(40, 400)  # soft tissue: [-160, 240] HU
    assert (norm.mode, norm.low, norm.high, norm.center_width) == (
        "window",
        (-160.0,),
        (240.0,),
        (40.0, 400.0),
    )
    hu = np.array([[-1024, -160, -60, 40, 140, 240, 3000]], dtype=np.int16)
    rgb = norm.to_rgb(hu)
    assert rgb.shape == (1, 7, 3) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb[0, :, 0], np.array([0, 0, 0.25, 0.5, 0.75, 1, 1], np.float32))
    assert np.array_equal(rgb[..., 0], rgb[..., 2])  # gray


def test_window_is_not_fitted_to_the_data():
    a = Normalizer.ct_preset("lung")
    movie = np.full((3, 4, 4), -600, np.int16)
    movie[1] = 5000  # whatever the data, the same HU give the same brightness
    assert a.to_rgb(movie[0])[0, 0, 0] == 0.5
    assert a.to_rgb(movie[1])[0, 0, 0] == 1.0
    assert a.sampled_frames == () and a.percentiles is None


@pytest.mark.parametrize(
    ("name", "center", "width"),
    [("soft_tissue", 50, 400), ("lung", -600, 1500), ("bone", 400, 1800), ("brain", 40, 80),
     ("liver", 30, 150), ("mediastinum", 50, 350)],
)  # fmt: skip
def test_ct_presets_have_their_standard_values(name, center, width):
    norm = Normalizer.ct_preset(name)
    assert norm.center_width == (center, width) and norm.preset == name
    assert norm.low == (center - width / 2,) and norm.high == (center + width / 2,)
    assert f"CT window {name}" in norm.describe()


def test_ct_preset_names_are_forgiving_and_checked():
    assert Normalizer.ct_preset("Soft tissue") == Normalizer.ct_preset("soft-tissue")
    with pytest.raises(ValueError, match=r"unknown CT window 'kidney'.*soft_tissue.*Normalizer.window"):
        Normalizer.ct_preset("kidney")
    with pytest.raises(ValueError, match="width > 0"):
        Normalizer.window(0, 0)
    with pytest.raises(ValueError, match="center_width"):
        Normalizer("window", (0.0,), (1.0,), (0,))


def test_window_float_and_wide_types():
    norm = Normalizer.window(-600.0, 1500.0)
    hu = np.array([[-1350.0, -600.0, 150.0]])
    for dtype in (np.float32, np.float64, np.int32):
        np.testing.assert_array_equal(norm.to_rgb(hu.astype(dtype))[0, :, 0], [0.0, 0.5, 1.0])


def test_window_normalizer_in_the_predictors(small_model, monkeypatch):
    """init_state(normalizer=...) and set_image(normalizer=...) take a window as they take a fit."""
    from napari_sam2.engine.predict import image_predictor, video_inference
    from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor

    seen = []
    for module in (video_inference, image_predictor):
        original = module.preprocess
        monkeypatch.setattr(
            module, "preprocess", lambda rgb, *a, _o=original, **k: seen.append(rgb) or _o(rgb, *a, **k)
        )
    ct = np.full((3, 24, 32), -1024, np.int16)
    ct[:, 8:16, 8:20] = 50  # soft tissue in air
    soft = Normalizer.ct_preset("soft_tissue")  # L 50 W 400: [-150, 250] HU
    state = SAM2VideoPredictor(small_model).init_state(ct, normalizer=soft)
    assert state.normalizer is soft
    SAM2ImagePredictor(small_model).set_image(ct[0], normalizer=soft)
    assert len(seen) == 2
    for rgb in seen:
        assert set(np.unique(rgb)) == {0.0, 0.5}  # -1024 HU clipped to black, 50 HU mid-gray
        np.testing.assert_array_equal(rgb[8:16, 8:20], 0.5)
