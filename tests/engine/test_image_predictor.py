"""SAM2ImagePredictor on microscopy-like inputs: dtypes, non-square images, coordinates,
batched prompts, batched images, logits and input errors.

Uses the SAM 2.1 tiny test weights. Embedding a 1024-pixel image is the expensive step
(~5 s on 2 cores), so each image is embedded once per module: two single images and one
batch of the same two (the batch must agree with them). Numerical agreement with Meta's
predictor is the golden test's job (test_golden_image.py).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam2 import SAM2ImagePredictor, build_sam2

H_A, W_A = 240, 400  # grayscale uint16, landscape
H_B, W_B = 300, 180  # float32 RGB, portrait


def _image_a() -> np.ndarray:
    yy, xx = np.mgrid[0:H_A, 0:W_A]
    img = 1000 + 20 * xx + 5 * yy
    img[40:120, 250:360] += 30000  # a bright rectangle
    return img.astype(np.uint16)


def _image_b() -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.normal(0.2, 0.05, (H_B, W_B, 3)).astype(np.float32)
    img[100:220, 40:140] += np.array([1.5, 0.3, 0.8], np.float32)  # a blob
    return img


@pytest.fixture(scope="module", autouse=True)
def threads():
    """Prompt decoding is many small ops: one thread avoids OpenMP start-up and, on a busy
    machine, contention that makes it ~10x slower. Embeddings use the usual thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield n
    torch.set_num_threads(n)


@contextlib.contextmanager
def num_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return build_sam2("sam2.1_hiera_t", tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def pred_a(model, threads):
    p = SAM2ImagePredictor(model)
    with num_threads(threads):
        p.set_image(_image_a())
    return p


@pytest.fixture(scope="module")
def pred_b(model, threads):
    p = SAM2ImagePredictor(model)
    with num_threads(threads):
        p.set_image(_image_b())
    return p


@pytest.fixture(scope="module")
def pred_batch(model, threads):
    p = SAM2ImagePredictor(model)
    with num_threads(threads):
        p.set_image_batch([_image_a(), _image_b()])
    return p


@pytest.fixture
def spy_prompts(model, monkeypatch):
    """Record the (coords, labels) and mask the prompt encoder receives."""
    seen = []
    enc = model.sam_prompt_encoder
    orig = enc.forward

    def spy(points, masks, batch_size=1):
        seen.append((points, masks))
        return orig(points, masks, batch_size)

    monkeypatch.setattr(enc, "forward", spy)
    return seen


@pytest.fixture
def spy_decoder(model, monkeypatch):
    """Record the decoder's raw low-resolution mask logits."""
    seen = []
    dec = model.sam_mask_decoder
    orig = dec.forward

    def spy(*args, **kwargs):
        out = orig(*args, **kwargs)
        seen.append(out.masks.clone())
        return out

    monkeypatch.setattr(dec, "forward", spy)
    return seen


# ----------------------------------------------------------------------------- dtypes and shapes
@pytest.mark.slow
def test_uint16_grayscale_non_square(pred_a):
    masks, ious, low = pred_a.predict(point_coords=[[300, 80]], point_labels=[1])
    assert masks.shape == (3, H_A, W_A) and masks.dtype == np.bool_
    assert (
        ious.shape == (3,) and ious.dtype == np.float32 and np.all((ious >= 0) & (ious <= 1))
    )  # sigmoid IoUs
    assert low.shape == (3, 256, 256) and low.dtype == np.float32
    assert np.abs(low).max() <= 32.0  # clamped as in Meta's predictor
    emb = pred_a.get_image_embedding()
    assert emb.shape == (1, 256, 64, 64) and torch.isfinite(emb).all()


@pytest.mark.slow
def test_float_rgb_portrait(pred_b):
    masks, ious, low = pred_b.predict(point_coords=[[90, 160]], point_labels=[1], multimask_output=False)
    assert masks.shape == (1, H_B, W_B) and masks.dtype == np.bool_
    assert ious.shape == (1,) and low.shape == (1, 256, 256)


@pytest.mark.slow
def test_embedding_depends_on_the_image(pred_a, pred_b):
    a, b = pred_a.get_image_embedding(), pred_b.get_image_embedding()
    assert (a - b).abs().mean() > 1e-2 * a.abs().mean()


# ----------------------------------------------------------------------------- coordinates
@pytest.mark.slow
def test_points_and_boxes_map_to_the_1024_frame(pred_a, spy_prompts):
    # x is scaled by 1024 / W, y by 1024 / H (400 x 240 image)
    pred_a.predict(point_coords=[[100, 60], [399, 0]], point_labels=[1, 0])
    coords, labels = spy_prompts[-1][0]
    torch.testing.assert_close(coords, torch.tensor([[[256.0, 256.0], [1021.44, 0.0]]]))
    assert labels.tolist() == [[1, 0]] and labels.dtype == torch.int32

    # a box is two corner points labelled 2 and 3, placed before the clicks
    pred_a.predict(point_coords=[[200, 120]], point_labels=[0], box=[40, 30, 200, 120])
    coords, labels = spy_prompts[-1][0]
    torch.testing.assert_close(coords, torch.tensor([[[102.4, 128.0], [512.0, 512.0], [512.0, 512.0]]]))
    assert labels.tolist() == [[2, 3, 0]]

    # normalize_coords=False: coordinates are already fractions of the image
    pred_a.predict(point_coords=[[0.25, 0.5]], point_labels=[1], normalize_coords=False)
    coords, _ = spy_prompts[-1][0]
    torch.testing.assert_close(coords, torch.tensor([[[256.0, 512.0]]]))


@pytest.mark.slow
def test_same_fraction_same_prompt_on_other_image_size(pred_a, pred_b, spy_prompts):
    pred_a.predict(point_coords=[[0.3 * W_A, 0.7 * H_A]], point_labels=[1])
    pred_b.predict(point_coords=[[0.3 * W_B, 0.7 * H_B]], point_labels=[1])
    torch.testing.assert_close(spy_prompts[0][0][0], spy_prompts[1][0][0])


@pytest.mark.slow
def test_masks_are_low_res_logits_resized_to_the_image(pred_a, spy_decoder):
    logits, ious, low = pred_a.predict(point_coords=[[300, 80]], point_labels=[1], return_logits=True)
    raw = spy_decoder[-1]  # (1, 3, 256, 256)
    want = F.interpolate(raw.float(), (H_A, W_A), mode="bilinear", align_corners=False)[0]
    assert logits.dtype == np.float32 and logits.shape == (3, H_A, W_A)
    np.testing.assert_allclose(logits, want.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(low, raw.clamp(-32, 32)[0].numpy())


@pytest.mark.slow
def test_return_logits_threshold_equals_boolean_masks(pred_a):
    kw = dict(point_coords=[[300, 80], [50, 200]], point_labels=[1, 0])
    masks, ious, low = pred_a.predict(**kw)
    logits, ious2, low2 = pred_a.predict(**kw, return_logits=True)
    np.testing.assert_array_equal(logits > 0, masks)
    np.testing.assert_array_equal(ious, ious2)
    np.testing.assert_array_equal(low, low2)
    assert 0 < masks.sum() < masks.size  # the comparison is not vacuous
    pred_a.mask_threshold = 2.0
    try:
        np.testing.assert_array_equal(pred_a.predict(**kw)[0], logits > 2.0)
    finally:
        pred_a.mask_threshold = 0.0


@pytest.mark.slow
def test_mask_input_from_a_previous_call(pred_a, spy_prompts):
    masks, ious, low = pred_a.predict(point_coords=[[300, 80]], point_labels=[1])
    best = low[int(np.argmax(ious))][None]
    masks2, _, low2 = pred_a.predict(
        point_coords=[[300, 80]], point_labels=[1], mask_input=best, multimask_output=False
    )
    assert masks2.shape == (1, H_A, W_A)
    mask_seen = spy_prompts[-1][1]
    assert mask_seen.shape == (1, 1, 256, 256)
    np.testing.assert_array_equal(mask_seen[0].numpy(), best)
    # a mask prompt changes the result
    plain = pred_a.predict(point_coords=[[300, 80]], point_labels=[1], multimask_output=False)[2]
    assert not np.allclose(plain, low2)


# ----------------------------------------------------------------------------- batched prompts
@pytest.mark.slow
def test_batched_points_equal_one_prompt_at_a_time(pred_a):
    pts = np.array([[[300, 80]], [[50, 200]], [[200, 120]]], dtype=np.float32)
    lab = np.array([[1], [1], [0]])
    masks, ious, low = pred_a.predict(point_coords=pts, point_labels=lab, return_logits=True)
    assert masks.shape == (3, 3, H_A, W_A) and ious.shape == (3, 3) and low.shape == (3, 3, 256, 256)
    for i in range(3):
        m, io, lo = pred_a.predict(point_coords=pts[i], point_labels=lab[i], return_logits=True)
        np.testing.assert_allclose(masks[i], m, atol=1e-3, rtol=1e-4)
        np.testing.assert_allclose(ious[i], io, atol=1e-5)
        np.testing.assert_allclose(low[i], lo, atol=1e-3, rtol=1e-4)
    assert not np.allclose(low[0], low[1])  # the prompts really differ


@pytest.mark.slow
def test_batched_boxes_equal_one_box_at_a_time(pred_a):
    boxes = np.array([[250, 40, 360, 120], [0, 0, 399, 239]], dtype=np.float32)
    masks, ious, low = pred_a.predict(box=boxes, multimask_output=False, return_logits=True)
    assert masks.shape == (2, 1, H_A, W_A)
    for i in range(2):
        m, io, lo = pred_a.predict(box=boxes[i], multimask_output=False, return_logits=True)
        np.testing.assert_allclose(masks[i], m, atol=1e-3, rtol=1e-4)
        np.testing.assert_allclose(low[i], lo, atol=1e-3, rtol=1e-4)


# ----------------------------------------------------------------------------- batched images
@pytest.mark.slow
def test_image_batch_embeddings_equal_single_images(pred_a, pred_b, pred_batch):
    emb = pred_batch.get_image_embedding()
    assert emb.shape == (2, 256, 64, 64)
    torch.testing.assert_close(emb[0:1], pred_a.get_image_embedding(), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(emb[1:2], pred_b.get_image_embedding(), atol=1e-3, rtol=1e-3)


@pytest.mark.slow
def test_predict_batch_equals_per_image_predict(pred_a, pred_b, pred_batch):
    pts = [np.array([[300.0, 80.0]]), np.array([[90.0, 160.0], [10.0, 10.0]])]
    labels = [np.array([1]), np.array([1, 0])]
    boxes = [None, np.array([30.0, 90.0, 150.0, 230.0])]
    masks, ious, lows = pred_batch.predict_batch(pts, labels, box_batch=boxes, return_logits=True)
    assert [m.shape for m in masks] == [(3, H_A, W_A), (3, H_B, W_B)]
    for i, single in enumerate((pred_a, pred_b)):
        m, io, lo = single.predict(pts[i], labels[i], box=boxes[i], return_logits=True)
        np.testing.assert_allclose(lows[i], lo, atol=2e-2, rtol=1e-3)
        np.testing.assert_allclose(ious[i], io, atol=1e-3)
        np.testing.assert_allclose(masks[i], m, atol=2e-2, rtol=1e-3)
    bool_masks, _, _ = pred_batch.predict_batch(pts, labels, box_batch=boxes)
    assert bool_masks[1].dtype == np.bool_
    np.testing.assert_array_equal(bool_masks[1], masks[1] > 0)


# ----------------------------------------------------------------------------- errors
def test_predict_before_set_image(model):
    p = SAM2ImagePredictor(model)
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(point_coords=[[1, 1]], point_labels=[1])
    with pytest.raises(RuntimeError):
        p.predict_batch([[[1, 1]]], [[1]])
    with pytest.raises(RuntimeError):
        p.get_image_embedding()


@pytest.mark.parametrize(
    "shape",
    [(2, 64, 64, 3), (5, 64, 64), (64,), (64, 64, 3, 1), (3, 64, 64)],
    ids=["4d", "stack", "1d", "4d-trailing", "channels-first"],
)
def test_bad_image_shapes(model, shape):
    p = SAM2ImagePredictor(model)
    with pytest.raises(ValueError, match="shape"):
        p.set_image(np.zeros(shape, np.uint8))
    with pytest.raises(RuntimeError):  # nothing was embedded
        p.predict(point_coords=[[1, 1]], point_labels=[1])


def test_bad_image_batches(model):
    p = SAM2ImagePredictor(model)
    with pytest.raises(ValueError):
        p.set_image_batch([])
    with pytest.raises(ValueError):
        p.set_image_batch(np.zeros((2, 64, 64), np.uint8))  # an array is not a list of images
    with pytest.raises(ValueError, match="shape"):
        p.set_image_batch([np.zeros((64, 64), np.uint8), np.zeros((2, 64, 64, 3), np.uint8)])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(point_coords=[[10, 10]]), "together"),  # points without labels
        (dict(point_labels=[1]), "point_coords"),  # labels without points
        (dict(point_labels=[1], box=[10, 10, 20, 20]), "together"),
        (dict(point_coords=[[10, 10, 1]], point_labels=[1]), "point_coords"),
        (dict(point_coords=[[10, 10], [20, 20]], point_labels=[1]), "point_labels"),
        (dict(point_coords=[[[10, 10]]], point_labels=[1]), "point_labels"),
        (dict(point_coords=[10, 10], point_labels=[1]), "point_coords"),
        (dict(box=[10, 10, 20]), "box"),
        (dict(mask_input=np.zeros((1, 128, 128), np.float32)), "mask_input"),
        (dict(mask_input=np.zeros((1, 1024, 1024), np.float32)), "mask_input"),
        (dict(mask_input=np.zeros((256, 256), np.float32)), "mask_input"),
        (dict(), "prompt"),
    ],
    ids=[
        "no-labels",
        "no-points",
        "no-points-box",
        "xyz",
        "label-count",
        "label-batch",
        "flat",
        "box3",
        "mask128",
        "mask1024",
        "mask2d",
        "nothing",
    ],
)
def test_bad_prompts(pred_a, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pred_a.predict(**kwargs)


@pytest.mark.slow
def test_single_and_batch_modes_are_not_mixed(pred_a, pred_batch):
    with pytest.raises(RuntimeError, match="predict_batch"):
        pred_batch.predict(point_coords=[[1, 1]], point_labels=[1])
    with pytest.raises(RuntimeError, match="set_image_batch"):
        pred_a.predict_batch([[[1, 1]]], [[1]])


def test_bf16_autocast_mode_stays_close_to_fp32(small_model):
    """The optional bf16 mode runs and deviates from fp32 only by rounding."""
    import numpy as np

    from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor

    rng = np.random.default_rng(3)
    image = rng.normal(1000, 100, size=(40, 52)).astype(np.uint16)
    outs = []
    for dtype in (None, torch.bfloat16):
        pred = SAM2ImagePredictor(small_model, autocast_dtype=dtype)
        pred.set_image(image)
        outs.append(pred.predict(point_coords=[[20, 15]], point_labels=[1], multimask_output=True))
    (m32, iou32, lr32), (m16, iou16, lr16) = outs
    assert m16.shape == m32.shape and lr16.dtype == np.float32
    assert np.linalg.norm(lr16 - lr32) / np.linalg.norm(lr32) < 0.1
    assert np.abs(iou16 - iou32).max() < 0.05


def test_given_features_replace_the_encoder_pass_and_give_the_same_masks(small_model, monkeypatch):
    """set_image(features=...) and a feature provider: the features of another predictor of the
    same model and normaliser (the video predictor's, in track-all) give the same masks, no pass."""
    from napari_sam2.engine.frames.normalization import Normalizer

    image = np.random.default_rng(3).integers(0, 4000, (40, 52)).astype(np.uint16)
    normalizer = Normalizer.fit(image[None])
    plain = SAM2ImagePredictor(small_model)
    plain.set_image(image, normalizer)
    expected = plain.predict(point_coords=[[20, 10]], point_labels=[1])
    x = plain._prepare(image, normalizer)
    with torch.inference_mode():
        features = small_model.forward_image(x[None])[0]
    calls = []
    monkeypatch.setattr(
        type(small_model), "forward_image", lambda *a, **k: calls.append(1) or pytest.fail("encoded")
    )
    given = SAM2ImagePredictor(small_model)
    given.set_image(image, normalizer, features=features)
    for a, b in zip(expected, given.predict(point_coords=[[20, 10]], point_labels=[1])):
        np.testing.assert_array_equal(a, b)
    asked = []
    provided = SAM2ImagePredictor(small_model)
    provided.feature_provider = lambda im, n: asked.append((im.shape, n is normalizer)) or features
    provided.set_image(image, normalizer)
    assert asked == [((40, 52), True)]
    np.testing.assert_array_equal(provided.predict(point_coords=[[20, 10]], point_labels=[1])[0], expected[0])
    assert not calls
