"""A catalogue of bad inputs and faults: each must end in a message that names the problem
(and, where there is one, what to do), never in a raw traceback from deep inside, and
never change anything. Cases that need a viewer are in tests/plugin/test_annotator.py
(deleted layers, cancelled runs, user labels); the CLI's own checks in tests/engine/test_batch.py.

``python tests/test_bad_inputs.py`` prints the table of cases and the message each gives.
"""

from __future__ import annotations

import json
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_sam2.engine.prompts.prompt_files import load_prompts, save_prompts
from napari_sam2.engine.prompts.prompt_set import PromptSet
from napari_sam2.engine.validation import PromptError, check_box, check_mask, check_obj_id, check_points


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[dict], object]
    error: type | tuple
    match: str


# ------------------------------------------------------------------ fixtures as a dict (the cases take one)


@pytest.fixture(scope="module")
def env(small_model, tmp_path_factory):
    from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor

    tmp = tmp_path_factory.mktemp("bad")
    image = SAM2ImagePredictor(small_model)
    image.set_image(np.random.default_rng(0).integers(0, 255, (40, 56), dtype=np.uint8))
    video = SAM2VideoPredictor(small_model, fill_hole_area=0, spill_dir=str(tmp))
    frames = np.random.default_rng(0).integers(0, 255, (4, 40, 56), dtype=np.uint8)
    state = video.init_state(frames)
    video.add_new_points_or_box(state, 0, 1, points=[[10, 10]], labels=[1])
    return {"image": image, "video": video, "state": state, "tmp": tmp, "model": small_model}


def _pts(env, **kw):
    call = {"frame_idx": 0, "obj_id": 2, "points": [[5, 5]], "labels": [1]} | kw
    return env["video"].add_new_points_or_box(env["state"], **call)


def _file(env, name: str, text: str | bytes) -> Path:
    p = env["tmp"] / name
    p.write_bytes(text) if isinstance(text, bytes) else p.write_text(text)
    return p


def _doc(**records) -> str:
    return json.dumps({"format": "napari-sam2-prompts", "version": 2, **records})


def _checkpoint(env, name: str, content) -> Path:
    import torch

    p = env["tmp"] / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        torch.save(content, p)
    return p


class _Evil:
    def __reduce__(self):  # a pickle that would run code when loaded
        return (print, ("pwned",))


def _truncated_zip(env) -> Path:
    import torch

    good = env["tmp"] / "good.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, good)
    data = good.read_bytes()
    return _checkpoint(env, "truncated.pt", data[: len(data) // 2])


def _wrong_variant(env) -> Path:
    from conftest import make_test_checkpoint

    return make_test_checkpoint("sam2_hiera_t", 0)


CASES = [
    # ---- images and stacks: dims and dtypes
    Case(
        "image: 1-D array",
        lambda e: e["image"].set_image(np.zeros(5)),
        ValueError,
        r"shape \(H, W\) or \(H, W, C\)",
    ),
    Case(
        "image: 4-D stack",
        lambda e: e["image"].set_image(np.zeros((2, 3, 8, 8))),
        ValueError,
        "video predictor",
    ),
    Case("image: 5 channels", lambda e: e["image"].set_image(np.zeros((8, 8, 5))), ValueError, "C <= 4"),
    Case("image: complex", lambda e: e["image"].set_image(np.zeros((8, 8), complex)), TypeError, "numeric"),
    Case("image: a file name", lambda e: e["image"].set_image("cells.tif"), TypeError, "not a file name"),
    Case("image: empty", lambda e: e["image"].set_image(np.zeros((0, 8))), ValueError, "empty"),
    Case("stack: 2-D", lambda e: e["video"].init_state(np.zeros((8, 8))), ValueError, "SAM2ImagePredictor"),
    Case("stack: 5-D", lambda e: e["video"].init_state(np.zeros((2, 2, 2, 8, 8))), ValueError, "select one"),
    Case(
        "stack: strings",
        lambda e: e["video"].init_state(np.array([["a"]] * 3)),
        ValueError,
        "not an image type",
    ),
    Case("stack: no frames", lambda e: e["video"].init_state(np.zeros((0, 8, 8))), ValueError, "no frames"),
    Case(
        "stack: missing path",
        lambda e: e["video"].init_state("/nonexistent/cells.tif"),
        ValueError,
        "no such file",
    ),
    Case("stack: empty folder", lambda e: e["video"].init_state(e["tmp"]), ValueError, "no images"),
    # ---- points, boxes, labels
    Case("point: NaN (video)", lambda e: _pts(e, points=[[np.nan, 5]]), PromptError, "not a finite number"),
    Case(
        "point: inf (image)",
        lambda e: e["image"].predict([[np.inf, 3]], [1]),
        PromptError,
        "not a finite number",
    ),
    Case(
        "point: outside (video)",
        lambda e: _pts(e, points=[[60, 5]]),
        PromptError,
        "outside the 56 x 40 frame",
    ),
    Case(
        "point: outside (image)",
        lambda e: e["image"].predict([[500, 3]], [1]),
        PromptError,
        "outside the 56 x 40",
    ),
    Case("point: negative", lambda e: _pts(e, points=[[-1, 5]]), PromptError, "outside"),
    Case(
        "point: normalized > 1",
        lambda e: _pts(e, points=[[2, 0.5]], normalize_coords=False),
        PromptError,
        r"\[0, 1\]",
    ),
    Case("label: 7 (image)", lambda e: e["image"].predict([[5, 5]], [7]), PromptError, "label must be 1"),
    Case("label: 1.7 (video)", lambda e: _pts(e, labels=[1.7]), PromptError, "holds 1.7"),
    Case("label: -1", lambda e: _pts(e, labels=[-1]), PromptError, "holds -1"),
    Case(
        "labels: count",
        lambda e: _pts(e, points=[[5, 5], [6, 6]], labels=[1]),
        PromptError,
        "holds 2 point.s. .* but labels holds 1 label",
    ),
    Case("labels: without points", lambda e: _pts(e, points=None), PromptError, "given together"),
    Case("prompt: nothing", lambda e: _pts(e, points=None, labels=None), PromptError, "empty prompt"),
    Case("points: empty array", lambda e: _pts(e, points=np.zeros((0, 2)), labels=[]), PromptError, "empty"),
    Case(
        "box: 3 numbers",
        lambda e: _pts(e, points=None, labels=None, box=[1, 2, 3]),
        PromptError,
        r"\[x0, y0, x1, y1\]",
    ),
    Case("box: zero width", lambda e: e["image"].predict(box=[5, 5, 5, 9]), PromptError, "zero width"),
    Case("box: outside", lambda e: e["image"].predict(box=[5, 5, 90, 9]), PromptError, "outside"),
    # ---- object ids and frames
    Case("obj_id: 1.5", lambda e: _pts(e, obj_id=1.5), PromptError, "integer object id.*1.5"),
    Case("obj_id: None", lambda e: _pts(e, obj_id=None), PromptError, "integer object id.*None"),
    Case("obj_id: list", lambda e: _pts(e, obj_id=[1]), PromptError, r"integer object id.*\[1\]"),
    Case("obj_id: True", lambda e: _pts(e, obj_id=True), PromptError, "integer object id.*True"),
    Case("frame: beyond", lambda e: _pts(e, frame_idx=4), IndexError, r"outside the stack \(0 .. 3\)"),
    Case("frame: 1.5", lambda e: _pts(e, frame_idx=1.5), TypeError, "integer frame index"),
    Case(
        "remove: unknown strict",
        lambda e: e["video"].remove_object(e["state"], 9, strict=True),
        KeyError,
        "not tracked",
    ),
    # ---- masks
    Case(
        "mask: empty",
        lambda e: e["video"].add_new_mask(e["state"], 0, 3, np.zeros((40, 56), bool)),
        PromptError,
        "is empty",
    ),
    Case(
        "mask: shape",
        lambda e: e["video"].add_new_mask(e["state"], 0, 3, np.ones((4, 4), bool)),
        PromptError,
        r"has shape \(4, 4\)",
    ),
    Case(
        "mask: NaN",
        lambda e: e["video"].add_new_mask(e["state"], 0, 3, np.full((40, 56), np.nan)),
        PromptError,
        "NaN",
    ),
    Case(
        "mask: label image",
        lambda e: e["video"].add_new_mask(e["state"], 0, 3, np.full((40, 56), 2)),
        PromptError,
        "values other than 0 and 1",
    ),
    Case(
        "mask_input: shape",
        lambda e: e["image"].predict(mask_input=np.zeros((1, 5, 5))),
        PromptError,
        "low-resolution logits",
    ),
    # ---- prompt files
    Case(
        "file: not JSON", lambda e: load_prompts(_file(e, "a.json", "{oops")), PromptError, "not valid JSON"
    ),
    Case(
        "file: not ours",
        lambda e: load_prompts(_file(e, "b.json", "{}")),
        PromptError,
        "not a napari-sam2 prompts file",
    ),
    Case(
        "file: newer version",
        lambda e: load_prompts(
            _file(e, "c.json", json.dumps({"format": "napari-sam2-prompts", "version": 99}))
        ),
        PromptError,
        "update napari-sam2",
    ),
    Case("file: missing", lambda e: load_prompts(e["tmp"] / "none.json"), PromptError, "does not exist"),
    Case(
        "file: version true",
        lambda e: load_prompts(
            _file(e, "v.json", json.dumps({"format": "napari-sam2-prompts", "version": True, "points": []}))
        ),
        PromptError,
        r'"version" must be a whole number from 1 to 2; got a boolean true',
    ),
    Case(
        "file: no points, boxes or masks",
        lambda e: load_prompts(_file(e, "n.json", _doc(point=[]))),
        PromptError,
        r"holds no prompts: .*'points', 'boxes' or 'masks' \(its other keys: 'point'\)",
    ),
    Case(
        "file: frame 0.5",
        lambda e: load_prompts(
            _file(e, "f.json", _doc(points=[{"frame": 0.5, "obj_id": 1, "x": 1, "y": 1, "label": 1}]))
        ),
        PromptError,
        r"points entry 1: frame must be a whole number \(a frame index counted from 0\); got a number 0.5",
    ),
    Case(
        "file: corrections not pairs",
        lambda e: load_prompts(_file(e, "k.json", _doc(points=[], corrections=[[0]]))),
        PromptError,
        r"corrections entry 1: expected a \[frame, obj_id\] pair",
    ),
    Case(
        "csv: label -1",
        lambda e: load_prompts(_file(e, "d.csv", "kind,frame,obj_id,x,y,label\npoint,0,1,3,3,-1\n")),
        PromptError,
        "line 2: .*label -1",
    ),
    Case(
        "csv: label 5",
        lambda e: load_prompts(_file(e, "e.csv", "kind,frame,obj_id,x,y,label\npoint,0,1,3,3,5\n")),
        PromptError,
        "label 5",
    ),
    Case(
        "csv: obj_id 1.5",
        lambda e: load_prompts(_file(e, "f.csv", "kind,frame,obj_id,x,y,label\npoint,0,1.5,3,3,1\n")),
        PromptError,
        "integer object id",
    ),
    Case(
        "csv: no frame column",
        lambda e: load_prompts(_file(e, "g.csv", "kind,obj_id,x,y,label\npoint,1,3,3,1\n")),
        PromptError,
        "missing column",
    ),
    Case(
        "csv: unknown kind",
        lambda e: load_prompts(_file(e, "h.csv", "kind,frame,obj_id,x,y,label\ncircle,0,1,3,3,1\n")),
        PromptError,
        "unknown kind 'circle'",
    ),
    Case(
        "json: frame -1",
        lambda e: load_prompts(
            _file(e, "i.json", _doc(points=[{"frame": -1, "obj_id": 1, "x": 1, "y": 1, "label": 1}]))
        ),
        PromptError,
        "negative",
    ),
    Case(
        "json: object 0",
        lambda e: load_prompts(
            _file(e, "j.json", _doc(points=[{"frame": 0, "obj_id": 0, "x": 1, "y": 1, "label": 1}]))
        ),
        PromptError,
        "0 is background",
    ),
    Case(
        "json: NaN point",
        lambda e: load_prompts(
            _file(e, "k.json", _doc(points=[{"frame": 0, "obj_id": 1, "x": "nan", "y": 1, "label": 1}]))
        ),
        PromptError,
        "not a finite number",
    ),
    Case(
        "json: bad RLE",
        lambda e: load_prompts(
            _file(e, "l.json", _doc(masks=[{"frame": 0, "obj_id": 1, "shape": [4, 4], "rle": [3, 2]}]))
        ),
        PromptError,
        "add up to 5 pixels",
    ),
    Case(
        "json: box of 3",
        lambda e: load_prompts(
            _file(e, "m.json", _doc(boxes=[{"frame": 0, "obj_id": 1, "x0": 1, "y0": 1, "x1": 2}]))
        ),
        PromptError,
        "missing y1",
    ),
    # ---- checkpoints
    Case("checkpoint: missing", lambda e: _load(e["tmp"] / "none.pt"), Exception, "does not exist"),
    Case("checkpoint: a folder", lambda e: _load(e["tmp"]), Exception, "not a file"),
    Case("checkpoint: empty", lambda e: _load(_checkpoint(e, "empty.pt", b"")), Exception, "empty"),
    Case(
        "checkpoint: random bytes",
        lambda e: _load(_checkpoint(e, "rand.pt", np.random.default_rng(0).bytes(4096))),
        Exception,
        "corrupted or truncated: it is not a PyTorch checkpoint",
    ),
    Case("checkpoint: truncated", lambda e: _load(_truncated_zip(e)), Exception, "corrupted or truncated"),
    Case(
        "checkpoint: malicious pickle",
        lambda e: _load(_checkpoint(e, "evil.pt", pickle.dumps({"model": _Evil()}, protocol=2))),
        Exception,
        "does not load for safety",
    ),
    Case(
        "checkpoint: no tensors",
        lambda e: _load(_checkpoint(e, "notsd.pt", {"model": {"w": 3}})),
        Exception,
        "not a SAM 2 checkpoint",
    ),
    Case(
        "checkpoint: wrong variant",
        lambda e: _build("sam2.1_hiera_t", _wrong_variant(e)),
        Exception,
        "looks like a 'sam2_hiera_t' checkpoint",
    ),
    Case(
        "model: unknown variant",
        lambda e: _build("sam3_hiera_t", None),
        ValueError,
        "unknown SAM 2 model variant 'sam3_hiera_t'",
    ),
    Case("device: gpu", lambda e: _device("gpu"), ValueError, "unknown device 'gpu'"),
]


def _load(path):
    from napari_sam2.engine.weights.checkpoints import load_state_dict_file

    return load_state_dict_file(path)


def _build(config, checkpoint):
    from napari_sam2.engine.weights.build import build_sam2_model

    return build_sam2_model(config, checkpoint, "cpu", download=False)


def _device(name):
    from napari_sam2.engine.weights.build import resolve_device

    return resolve_device(name)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_message_that_names_it(env, case):
    before = list(env["state"].obj_ids)
    with pytest.raises(case.error) as err:
        case.run(env)
    message = str(err.value)
    assert re.search(case.match, message), f"{case.name}: {message!r}"
    assert "Traceback" not in message
    assert env["state"].obj_ids == before, "a refused prompt left an object behind"


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 40


def test_removing_an_unknown_object_warns_as_documented(env):
    with pytest.warns(UserWarning, match="cannot remove object id 9: it is not tracked"):
        ids, updated = env["video"].remove_object(env["state"], 9)
    assert ids == env["state"].obj_ids and updated == []


def test_a_box_drawn_from_any_corner_is_the_same_box(env):
    """The widget orders a box's corners; the API does the same, so both give one mask."""
    a = env["image"].predict(box=[40, 30, 10, 5], multimask_output=False)
    b = env["image"].predict(box=[10, 5, 40, 30], multimask_output=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(check_box([40, 30, 10, 5], 56, 40), [10, 5, 40, 30])


# ------------------------------------------------------------------ fuzzing prompt parsing and files

coords = st.floats(allow_nan=True, allow_infinity=True, width=32)
labels = st.one_of(st.integers(-3, 5), st.floats(allow_nan=True), st.booleans())


@settings(max_examples=300, deadline=None)
@given(x=coords, y=coords, label=labels)
def test_fuzz_points_are_accepted_only_when_valid(x, y, label):
    valid = np.isfinite(x) and np.isfinite(y) and 0 <= x <= 56 and 0 <= y <= 40 and float(label) in (0.0, 1.0)
    try:
        xy, lab = check_points([[x, y]], [label], 56, 40)
    except PromptError as e:
        assert not valid, f"refused a valid point ({x}, {y}, {label}): {e}"
        assert str(e)
    else:
        assert valid, f"accepted ({x}, {y}, {label})"
        assert lab[0] in (0, 1) and xy.dtype == np.float32


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans())
)
def test_fuzz_object_ids(value):
    try:
        out = check_obj_id(value)
    except PromptError:
        assert isinstance(value, (bool, str, type(None))) or not float(value).is_integer()
    else:
        assert isinstance(out, int) and out == value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["point", "box", "blob", ""]),
            st.one_of(st.integers(-2, 5), st.just("x"), st.floats(allow_nan=True)),
            st.one_of(st.integers(-1, 70000), st.just("1.5")),
            st.one_of(st.floats(-5, 70), st.just(float("nan")), st.just("")),
            st.one_of(st.floats(-5, 70), st.just("nan")),
            st.one_of(st.integers(-2, 6), st.floats(0, 1.5), st.just("")),
        ),
        max_size=6,
    )
)
def test_fuzz_prompt_csv_files_load_or_name_the_line(tmp_path, rows):
    path = tmp_path / "fuzz.csv"
    lines = ["kind,frame,obj_id,x,y,label,x0,y0,x1,y1"]
    for kind, f, o, x, y, lab in rows:
        lines.append(f"{kind},{f},{o},{x},{y},{lab},{x},{y},{y},{x}")
    path.write_text("\n".join(lines) + "\n")
    try:
        ps, _ = load_prompts(path)
    except PromptError as e:
        assert "fuzz.csv" in str(e)
        return
    for f, o, p in ps.items():  # what loads is valid
        assert f >= 0 and 1 <= o <= 65535
        assert all(lab in (0, 1) for lab in p.labels)
        assert all(np.isfinite(v) for xy in p.points for v in xy)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    masks=st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(0, 2**16 - 1)), min_size=1, max_size=3
    )
)
def test_fuzz_json_round_trip(tmp_path, masks):
    ps = PromptSet()
    for f, o, bits in masks:
        m = np.unpackbits(np.array([bits >> 8, bits & 255], np.uint8)).reshape(4, 4).astype(bool)
        if m.any():
            ps.set_mask(f, o, m)
        ps.add_point(f, o, 1.5, 2.5, bool(bits & 1))
    back, _ = load_prompts(save_prompts(tmp_path / "p.json", ps))
    assert back.fingerprints() == ps.fingerprints()


def test_check_mask_accepts_bool_and_binary_numbers():
    assert check_mask(np.eye(3, dtype=np.uint8), 3, 3).dtype == bool


def _table() -> str:  # pragma: no cover - a helper for the closing note
    import tempfile

    from conftest import make_test_checkpoint  # noqa: F401 - the weights the cases need

    sys.path.insert(0, str(Path(__file__).parent))
    import torch

    from napari_sam2.model import SAM2Model, load_config

    torch.manual_seed(0)
    import dataclasses

    cfg = load_config("sam2.1_hiera_t")
    cfg = dataclasses.replace(
        cfg, image_size=128, memory_attention=dataclasses.replace(cfg.memory_attention, feat_sizes=(8, 8))
    )
    model = SAM2Model(cfg).eval()

    class _F:
        def mktemp(self, name):
            return Path(tempfile.mkdtemp(prefix=name))

    e = env.__wrapped__(model, _F())
    rows = ["| case | message |", "| --- | --- |"]
    for case in CASES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                case.run(e)
            msg = "(no error!)"
        except Exception as ex:  # noqa: BLE001
            msg = f"{type(ex).__name__}: {ex}"
        rows.append(f"| {case.name} | {msg.replace('|', '/')} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).parent))
    print(_table())
    _ = zipfile  # keep the import for the truncated-zip helper's readers
