"""Stand-ins shared by the tests (one home): a fake video predictor for pure-logic tests.

The acceptance tests use the real engine with test weights; these fakes only stand in
where the model's numbers do not matter.
"""

from __future__ import annotations

import numpy as np


class FakePredictor:
    """A stand-in for the engine's video predictor, for pure-logic tests only.

    Masks are simple and predictable: a disc of radius ``radius`` around the mean of
    an object's positive clicks (negative clicks cut a disc of radius 2), or the
    filled box, or the given mask.  Tracking copies the mask of the nearest earlier
    (later, in reverse) frame that has one, shifted by one column per frame.  Like
    the real engine it refuses new objects once tracking started, and returns
    logits of shape ``(num_objs, 1, H, W)`` (+5 inside, -5 outside).
    """

    api_extensions = frozenset({"refine", "need_output"})  # keywords beyond Meta's API, as ours declares

    def __init__(self, radius: int = 4) -> None:
        self.radius = radius
        self.calls: list[tuple] = []

    # ---- state
    def init_state(self, frames, normalizer=None):
        self.calls.append(("init_state", tuple(frames.shape)))
        shape = tuple(int(s) for s in frames.shape)
        np.asarray(frames[0])  # read one frame, like the engine would lazily
        return {
            "num_frames": shape[0],
            "hw": shape[1:3],
            "frames": frames,
            "inputs": {},
            "cond": {},
            "tracked": {},
            "obj_ids": [],
            "started": False,
        }

    def reset_state(self, state):
        self.calls.append(("reset_state",))
        for k in ("inputs", "cond", "tracked"):
            state[k].clear()
        state["obj_ids"].clear()
        state["started"] = False

    # ---- masks
    def _disc(self, state, cx, cy, r):
        h, w = state["hw"]
        yy, xx = np.mgrid[:h, :w]
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r

    def _render(self, state, inp):
        h, w = state["hw"]
        m = np.zeros((h, w), bool)
        if inp.get("mask") is not None:
            m |= inp["mask"]
        if inp.get("box") is not None:
            x0, y0, x1, y1 = inp["box"]
            m[int(round(y0)) : int(round(y1)) + 1, int(round(x0)) : int(round(x1)) + 1] = True
        pts = inp.get("points")
        if pts is not None and len(pts):
            labels = inp["labels"]
            pos = pts[labels == 1]
            if len(pos):
                cx, cy = pos.mean(axis=0)
                m |= self._disc(state, cx, cy, self.radius)
            for x, y in pts[labels == 0]:
                m &= ~self._disc(state, x, y, 2)
        return m

    def _frame_logits(self, state, f):
        h, w = state["hw"]
        out = np.full((len(state["obj_ids"]), 1, h, w), -5.0, dtype=np.float32)
        for k, o in enumerate(state["obj_ids"]):
            m = state["cond"].get((f, o))
            if m is None:
                m = state["tracked"].get((f, o))
            if m is not None:
                out[k, 0][m] = 5.0
        return out

    def _check_obj(self, state, obj_id):
        if obj_id not in state["obj_ids"]:
            if state["started"]:
                raise RuntimeError(
                    f"Cannot add new object id {obj_id} after tracking starts. "
                    f"All existing object ids: {state['obj_ids']}. Please call 'reset_state' to restart from scratch."
                )
            state["obj_ids"].append(obj_id)

    # ---- prompts
    def add_new_points_or_box(
        self,
        state,
        frame_idx,
        obj_id,
        points=None,
        labels=None,
        clear_old_points=True,
        normalize_coords=True,
        box=None,
        *,
        refine=True,
    ):
        self.calls.append(
            (
                "points",
                frame_idx,
                obj_id,
                None if points is None else np.asarray(points).tolist(),
                None if labels is None else np.asarray(labels).tolist(),
                None if box is None else np.asarray(box).tolist(),
            )
        )
        self._check_obj(state, obj_id)
        inp = state["inputs"].setdefault((frame_idx, obj_id), {})
        if clear_old_points or inp.get("points") is None:
            inp["points"] = None if points is None else np.asarray(points, float).reshape(-1, 2)
            inp["labels"] = None if labels is None else np.asarray(labels).reshape(-1)
        else:
            inp["points"] = np.concatenate([inp["points"], np.asarray(points, float).reshape(-1, 2)])
            inp["labels"] = np.concatenate([inp["labels"], np.asarray(labels).reshape(-1)])
        inp["box"] = None if box is None else np.asarray(box, float)
        state["cond"][(frame_idx, obj_id)] = self._render(state, inp)
        return frame_idx, list(state["obj_ids"]), self._frame_logits(state, frame_idx)

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        self.calls.append(("mask", frame_idx, obj_id, int(np.asarray(mask).sum())))
        self._check_obj(state, obj_id)
        inp = state["inputs"].setdefault((frame_idx, obj_id), {})
        inp.clear()
        inp["mask"] = np.asarray(mask, bool)
        state["cond"][(frame_idx, obj_id)] = self._render(state, inp)
        return frame_idx, list(state["obj_ids"]), self._frame_logits(state, frame_idx)

    def clear_all_prompts_in_frame(self, state, frame_idx, obj_id, need_output=True):
        self.calls.append(("clear", frame_idx, obj_id))
        state["inputs"].pop((frame_idx, obj_id), None)
        state["cond"].pop((frame_idx, obj_id), None)
        if not need_output:
            return None
        return frame_idx, list(state["obj_ids"]), self._frame_logits(state, frame_idx)

    def remove_object(self, state, obj_id):
        self.calls.append(("remove", obj_id))
        if obj_id in state["obj_ids"]:
            state["obj_ids"].remove(obj_id)
        for d in (state["inputs"], state["cond"], state["tracked"]):
            for k in [k for k in d if k[1] == obj_id]:
                del d[k]
        return list(state["obj_ids"]), []

    # ---- tracking
    def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        self.calls.append(("propagate", start_frame_idx, max_frame_num_to_track, reverse))
        cond_frames = sorted({f for f, _ in state["cond"]})
        if not cond_frames:
            raise RuntimeError("No points are provided; please add points first")
        state["started"] = True
        n = state["num_frames"]
        if start_frame_idx is None:
            start_frame_idx = max(cond_frames) if reverse else min(cond_frames)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = n
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            order = range(start_frame_idx, end - 1, -1)
        else:
            end = min(start_frame_idx + max_frame_num_to_track, n - 1)
            order = range(start_frame_idx, end + 1)
        step = -1 if reverse else 1
        for f in order:
            for o in state["obj_ids"]:
                if (f, o) in state["cond"]:
                    continue
                prev = state["cond"].get((f - step, o))
                if prev is None:
                    prev = state["tracked"].get((f - step, o))
                if prev is not None:
                    state["tracked"][(f, o)] = np.roll(prev, step, axis=1)
            yield f, list(state["obj_ids"]), self._frame_logits(state, f)


class FakePointPredictor:
    """A stand-in for ``SAM2ImagePredictor``'s batched point API, for the automatic mask generator.

    The image given to ``set_image`` is a label image ((H, W), or (H, W, C) read from channel 0):
    a point prompt on label L > 0 returns, for each of its outputs, logits +5 on every pixel of
    label L in the current image (the crop the generator set) and -5 elsewhere; a point on label 0
    returns -5 everywhere. Output k of label L has predicted IoU ``iou_fn(L, k)``. With a mask
    prompt (use_m2m) it returns the single output ``refine_iou_fn(L)``. Every call is recorded.
    """

    image_size = 1024

    def __init__(self, iou_fn=None, refine_iou_fn=None, num_outputs: int = 3) -> None:
        import torch

        self.device = torch.device("cpu")
        self.iou_fn = iou_fn or (lambda label, k: 0.9 + 0.001 * label - 0.01 * k)
        self.refine_iou_fn = refine_iou_fn or (lambda label: 0.99)
        self.num_outputs = num_outputs
        self.calls: list[tuple] = []
        self.labels = None

    def set_image(self, image, normalizer=None):
        arr = np.asarray(image)
        self.labels = arr[..., 0] if arr.ndim == 3 else arr
        self.calls.append(("set_image", self.labels.shape, normalizer))

    def reset_predictor(self):
        self.labels = None
        self.calls.append(("reset_predictor",))

    def transform_coords(self, coords, normalize=True, orig_hw=None):
        h, w = orig_hw
        scale = coords.new_tensor([self.image_size / w, self.image_size / h])
        return coords.float() * scale

    def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                      return_logits=False, img_idx=0):  # fmt: skip
        import torch

        h, w = self.labels.shape
        xy = point_coords[:, 0, :] * point_coords.new_tensor([w / self.image_size, h / self.image_size])
        labels = [int(self.labels[min(int(y), h - 1), min(int(x), w - 1)]) for x, y in xy.tolist()]
        n_out = self.num_outputs if multimask_output else 1
        lab = torch.from_numpy(np.asarray(self.labels))
        masks = torch.stack([(lab == L) & (L > 0) for L in labels]).float() * 10 - 5  # (B, H, W)
        masks = masks[:, None].expand(-1, n_out, -1, -1).clone()
        if mask_input is None:
            ious = torch.tensor([[self.iou_fn(L, k) for k in range(n_out)] for L in labels])
        else:
            ious = torch.tensor([[self.refine_iou_fn(L)] for L in labels])
        low_res = torch.arange(len(labels), dtype=torch.float32)[:, None, None, None].expand(-1, n_out, 4, 4)
        low_res = low_res + 100 * len(self.calls) + torch.arange(n_out)[None, :, None, None]
        self.calls.append(("predict_torch", point_coords.clone(), None if mask_input is None else mask_input.clone(),
                           multimask_output, low_res.clone()))  # fmt: skip
        return (masks if return_logits else masks > 0), ious.float(), low_res


class FakeTileGenerator:
    """A stand-in for the automatic mask generator that "segments" a label image exactly.

    ``generate(tile)`` returns one record per label value present in the tile (channel 0 of
    an (H, W, C) tile), its mask being that label's pixels *in the tile*: an object cut by the
    tile comes back cut, as from a real generator. Predicted IoU is ``0.5 + label / 1000``.
    Records each call's tile shape and normaliser.
    """

    def __init__(self, output_mode: str = "binary_mask") -> None:
        self.output_mode = output_mode
        self.calls: list[tuple] = []

    def generate(self, image, normalizer=None):
        from napari_sam2.engine.segment.mask_utils import mask_to_rle_pytorch

        arr = np.asarray(image)
        labels = arr[..., 0] if arr.ndim == 3 else arr
        self.calls.append((labels.shape, normalizer))
        h, w = labels.shape
        records = []
        for lab in np.unique(labels[labels > 0]):
            mask = labels == lab
            ys, xs = np.nonzero(mask)
            seg = mask
            if self.output_mode == "uncompressed_rle":
                import torch

                seg = mask_to_rle_pytorch(torch.from_numpy(mask)[None])[0]
            records.append(
                {
                    "segmentation": seg,
                    "area": int(mask.sum()),
                    "bbox": [
                        float(xs.min()),
                        float(ys.min()),
                        float(xs.max() - xs.min()),
                        float(ys.max() - ys.min()),
                    ],
                    "predicted_iou": 0.5 + int(lab) / 1000,
                    "point_coords": [[float(xs[0]), float(ys[0])]],
                    "stability_score": 1.0,
                    "crop_box": [0.0, 0.0, float(w), float(h)],
                }
            )
        return records


# ---------------------------------------------------------------------------------------------
# Ground-truth stand-ins for "track all" (tests and benchmarks/bench_tracking_ctc.py)


def _snap_to_truth(truth: np.ndarray, mask: np.ndarray, coverage: float) -> np.ndarray:
    """The union of the ground-truth labels that ``mask`` covers (see GroundTruthPredictor)."""
    mask = np.asarray(mask, dtype=bool)
    size = int(mask.sum())
    if size == 0:
        return np.zeros_like(mask)
    ids, overlap = np.unique(truth[mask], return_counts=True)
    out = np.zeros_like(mask)
    for i, c in zip(ids.tolist(), overlap.tolist()):
        if i == 0:
            continue
        label = truth == i
        if c >= coverage * min(int(label.sum()), size):
            out |= label
    return out


class GroundTruthPredictor:
    """A video predictor that answers with the ground truth: SAM 2 with a perfect eye.

    For each object and frame it returns the union of the ground-truth labels that the
    object's last non-empty mask (its prompt on a prompted frame) covers: a label belongs
    to the object when at least ``coverage`` of the smaller of the two lies in the other.
    So a cell is followed while it moves (its label overlaps its last mask), a cell that
    divides is followed as one object in two parts (both daughters lie where the mother
    was), as SAM 2 would see it, an object whose cell left the field gets an empty mask,
    and one whose cell comes back where it was is found again (SAM 2's memory reaches back
    several frames too). Logits are +10 / -10. It has the methods of ``SAM2VideoPredictor`` that ``track_all`` uses,
    with Meta's signatures, and records its calls in ``calls``.
    """

    api_extensions = frozenset({"need_output"})  # keywords beyond Meta's API, as ours declares

    def __init__(self, truth: np.ndarray, coverage: float = 0.5) -> None:
        self.truth = np.asarray(truth)
        self.coverage = coverage
        self.calls: list[tuple] = []

    def init_state(self, frames, **kwargs):
        self.calls.append(("init_state", tuple(frames.shape)))
        if tuple(frames.shape[:3]) != self.truth.shape:
            raise ValueError(f"frames {tuple(frames.shape)} do not match the truth {self.truth.shape}")
        return {"objects": {}, "num_frames": len(self.truth)}

    def reset_state(self, state):
        state["objects"].clear()

    def _logits(self, state, frame_idx):
        h, w = self.truth.shape[1:]
        out = np.full((len(state["objects"]), 1, h, w), -10.0, dtype=np.float32)
        for k, obj in enumerate(state["objects"].values()):
            mask = obj["masks"].get(frame_idx)
            if mask is not None:
                out[k, 0][mask] = 10.0
        return out

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        self.calls.append(("mask", frame_idx, obj_id, int(np.asarray(mask).sum())))
        obj = state["objects"].setdefault(obj_id, {"cond": {}, "masks": {}, "last": None})
        snapped = _snap_to_truth(self.truth[frame_idx], mask, self.coverage)
        obj["cond"][frame_idx] = obj["masks"][frame_idx] = snapped
        if snapped.any():
            obj["last"] = snapped
        return frame_idx, list(state["objects"]), self._logits(state, frame_idx)

    def add_new_points_or_box(self, state, frame_idx, obj_id, points=None, labels=None, box=None, **kwargs):
        self.calls.append(("points", frame_idx, obj_id))
        truth = self.truth[frame_idx]
        mask = np.zeros(truth.shape, dtype=bool)
        if points is not None:
            for (x, y), lab in zip(np.asarray(points).reshape(-1, 2), np.asarray(labels).reshape(-1)):
                i = truth[int(round(y)), int(round(x))]
                if lab == 1 and i:
                    mask |= truth == i
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in np.asarray(box).reshape(-1))
            inside = np.zeros_like(mask)
            inside[y0 : y1 + 1, x0 : x1 + 1] = True
            mask |= _snap_to_truth(truth, inside, self.coverage)
        return self.add_new_mask(state, frame_idx, obj_id, mask)

    def clear_all_prompts_in_frame(self, state, frame_idx, obj_id, need_output=True):
        self.calls.append(("clear", frame_idx, obj_id))
        obj = state["objects"].get(obj_id)
        if obj is not None:
            obj["cond"].pop(frame_idx, None)
            obj["masks"].pop(frame_idx, None)
        return (frame_idx, list(state["objects"]), self._logits(state, frame_idx)) if need_output else None

    def remove_object(self, state, obj_id, strict=False, need_output=True):
        self.calls.append(("remove", obj_id))
        if obj_id not in state["objects"] and strict:
            raise KeyError(obj_id)
        state["objects"].pop(obj_id, None)
        return list(state["objects"]), []

    def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        self.calls.append(("propagate", start_frame_idx, max_frame_num_to_track, reverse))
        if not state["objects"]:
            raise RuntimeError("no object has prompts yet")
        n = state["num_frames"]
        if start_frame_idx is None:
            start_frame_idx = min(min(o["cond"]) for o in state["objects"].values())
        if max_frame_num_to_track is None:
            max_frame_num_to_track = n
        step = -1 if reverse else 1
        last = (
            max(start_frame_idx - max_frame_num_to_track, 0)
            if reverse
            else min(start_frame_idx + max_frame_num_to_track, n - 1)
        )
        for f in range(start_frame_idx, last + step, step):
            for obj in state["objects"].values():
                if f in obj["cond"]:
                    continue
                prev = obj["last"]
                mask = (
                    np.zeros(self.truth.shape[1:], bool)
                    if prev is None
                    else _snap_to_truth(self.truth[f], prev, self.coverage)
                )
                obj["masks"][f] = mask
                if mask.any():
                    obj["last"] = mask
            yield f, list(state["objects"]), self._logits(state, f)


class GroundTruthMaskGenerator:
    """ "Segment everything" that returns the ground-truth masks of the frame it is given.

    The protocol passes only the frame, so the frame is recognised by its content (the
    stack's frames are all different). ``score`` is the ``predicted_iou`` of every mask.
    """

    def __init__(self, image: np.ndarray, truth: np.ndarray, score: float = 0.95) -> None:
        self.truth = np.asarray(truth)
        self.score = score
        self._index = {np.ascontiguousarray(image[t]).tobytes(): t for t in range(len(image))}
        self.calls: list[int] = []

    def __call__(self, frame: np.ndarray) -> list[dict]:
        t = self._index.get(np.ascontiguousarray(frame).tobytes())
        if t is None:
            raise KeyError("GroundTruthMaskGenerator was given a frame that is not in its stack")
        self.calls.append(t)
        truth = self.truth[t]
        out = []
        for i in np.unique(truth)[1:].tolist():
            mask = truth == i
            ys, xs = np.nonzero(mask)
            out.append(
                {
                    "segmentation": mask,
                    "area": int(mask.sum()),
                    "bbox": [
                        int(xs.min()),
                        int(ys.min()),
                        int(xs.max() - xs.min() + 1),
                        int(ys.max() - ys.min() + 1),
                    ],
                    "predicted_iou": self.score,
                    "point_coords": [[float(xs.mean()), float(ys.mean())]],
                    "stability_score": 1.0,
                    "crop_box": [0, 0, truth.shape[1], truth.shape[0]],
                }
            )
        return out


class CountingInitState:
    """Wraps a video predictor and counts its ``init_state`` calls (each one is a video
    session), for the tests that pin one session per run."""

    def __init__(self, inner) -> None:
        self.inner, self.init_states = inner, 0

    def init_state(self, *args, **kwargs):
        self.init_states += 1
        return self.inner.init_state(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)
