"""Official SAM 2 / SAM 2.1 checkpoints: registry, cache, checks, loading, identification.

Checkpoints are cached in ``platformdirs.user_cache_dir("napari-sam2")/checkpoints``
(override with the environment variable ``NAPARI_SAM2_CHECKPOINT_DIR``) under Meta's
own file names (``sam2.1_hiera_tiny.pt``...), so a file downloaded by hand can simply be
dropped there.

The download itself is in :mod:`napari_sam2.engine.weights.download`.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from napari_sam2.errors import NapariSam2Error
from napari_sam2.model.variants import VARIANTS, checkpoint_stem, resolve_variant

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHECKPOINTS",
    "CheckpointError",
    "CheckpointInfo",
    "DownloadCancelled",
    "cache_dir",
    "checkpoint_path",
    "CheckpointStatus",
    "checkpoint_status",
    "offline_guidance",
    "find_checkpoint",
    "guess_variant",
    "load_state_dict_file",
    "resolve_config_name",
    "sha256_file",
]

ENV_CHECKPOINT_DIR = "NAPARI_SAM2_CHECKPOINT_DIR"

ProgressCallback = Callable[[int, int | None], Any]


class CheckpointError(NapariSam2Error, RuntimeError):
    """A checkpoint could not be found, downloaded, verified or read."""


class DownloadCancelled(CheckpointError):
    """The download was cancelled through its ``cancel`` event."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One official checkpoint.

    ``size`` (bytes) and ``sha256`` are those of the file Meta serves at ``url``; None
    where no published value was found (then only the structural check at load time,
    strict key matching, guards against a wrong file).
    """

    config_name: str  # Meta's config name, e.g. "sam2.1_hiera_t"
    filename: str  # Meta's checkpoint file name, e.g. "sam2.1_hiera_tiny.pt"
    url: str
    config_file: str  # path of the config in Meta's repository
    size: int | None
    sha256: str | None

    @property
    def version(self) -> str:
        return "2.1" if self.config_name.startswith("sam2.1") else "2.0"

    @property
    def model_size(self) -> str:
        """ "tiny", "small", "base_plus" or "large"."""
        return self.filename.split("_hiera_")[1].removesuffix(".pt")


_BASE_20 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
_BASE_21 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"

# Published checksums and sizes (none are published by Meta itself; these come from
# public projects that pin the files Meta serves at the URLs above):
# - sha256, all 8: computational-cell-analytics/micro-sam, micro_sam/v2/util.py (HASHES,
#   passed to pooch.retrieve as known_hash for these exact URLs).
# - size, 7 of 8: voxel51/fiftyone, fiftyone/zoo/models/manifest-torch.json
#   ("size_bytes", corrected to the measured download sizes in voxel51/fiftyone PR #5898).
#   FiftyOne lists sam2.1_hiera_tiny with sam2_hiera_tiny's size (155906050), a copy-paste
#   left over by that PR ("Tiny ... negligible differences"), so that one value is not used:
# - size of sam2.1_hiera_tiny.pt, 156008466: recorded next to the same sha256 as micro-sam's
#   (7402e0d8...) in several independent public download scripts and model manifests.
# - sam2_hiera_tiny.pt's 155906050 is also the Content-Length of Meta's server in a
#   published wget log of checkpoints/download_ckpts.sh.
_PUBLISHED = {
    "sam2_hiera_t": (155906050, "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125"),
    "sam2_hiera_s": (184309650, "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3"),
    "sam2_hiera_b+": (323493298, "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071"),
    "sam2_hiera_l": (897952466, "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b"),
    "sam2.1_hiera_t": (156008466, "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    "sam2.1_hiera_s": (184416285, "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    "sam2.1_hiera_b+": (323606802, "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    "sam2.1_hiera_l": (898083611, "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
}


def _build_registry() -> Mapping[str, CheckpointInfo]:
    reg: dict[str, CheckpointInfo] = {}
    for name in VARIANTS:
        family = name.split("_hiera_")[0]
        base = _BASE_21 if family == "sam2.1" else _BASE_20
        filename = checkpoint_stem(name) + ".pt"
        size, sha = _PUBLISHED.get(name, (None, None))
        reg[name] = CheckpointInfo(
            name, filename, base + filename, f"configs/{family}/{name}.yaml", size, sha
        )
    return MappingProxyType(reg)


#: The 8 official checkpoints, by Meta's config name.
CHECKPOINTS: Mapping[str, CheckpointInfo] = _build_registry()


def resolve_config_name(name: str) -> str:
    """Meta's config name for any of Meta's spellings (see :func:`napari_sam2.model.variants.resolve_variant`)."""
    return resolve_variant(name)


def _info(config_name: str) -> CheckpointInfo:
    return CHECKPOINTS[resolve_config_name(config_name)]


def cache_dir() -> Path:
    """Folder of downloaded checkpoints (not created here).

    ``$NAPARI_SAM2_CHECKPOINT_DIR`` if set, else ``user_cache_dir("napari-sam2")/checkpoints``.
    """
    env = os.environ.get(ENV_CHECKPOINT_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    # appauthor=False: no extra "napari-sam2" level on Windows.
    return Path(platformdirs.user_cache_dir("napari-sam2", appauthor=False)) / "checkpoints"


def checkpoint_path(config_name: str) -> Path:
    """Where the official checkpoint of ``config_name`` is (or would be) cached."""
    return cache_dir() / _info(config_name).filename


def find_checkpoint(config_name: str) -> Path | None:
    """The cached checkpoint of ``config_name`` if it is there, else None."""
    path = checkpoint_path(config_name)
    return path if path.is_file() else None


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def offline_guidance(config_name: str) -> str:
    """How to put the official checkpoint in place by hand: URL, size, checksum, folder and file name."""
    info = _info(config_name)
    dest = checkpoint_path(info.config_name)
    facts = []
    if info.size is not None:
        facts.append(f"{info.size:,} bytes")
    if info.sha256 is not None:
        facts.append(f"sha256 {info.sha256}")
    about = f" ({'; '.join(facts)})" if facts else ""
    return (
        f"Without internet: download {info.url}{about} on another machine and save it in the folder "
        f"{dest.parent} as {dest.name} (that is, {dest}); or choose any copy of the file with "
        f"'Choose file…' / --checkpoint. The folder can be changed with ${ENV_CHECKPOINT_DIR}."
    )


@dataclass(frozen=True)
class CheckpointStatus:
    """What :func:`checkpoint_status` found: the one check the widget, the API and the CLI share.

    ``state`` is ``"ok"`` (a file that can be loaded), ``"missing"`` (not downloaded yet),
    ``"wrong_size"`` (a cached file of another size than the official one: an interrupted
    download or another file) or ``"not_a_file"`` (an explicit path that does not exist or
    is a folder). ``message`` says it in a sentence with what to do.
    """

    config_name: str
    path: Path
    state: str
    message: str

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def checkpoint_status(config_name: str, checkpoint: str | os.PathLike | None = None) -> CheckpointStatus:
    """Check, without loading it, the checkpoint that would be used for ``config_name``.

    An explicit ``checkpoint`` must be a file (fine-tuned weights are welcome, so its size
    is not compared). The cached official file must have the official size. The content
    (zip archive, keys, shapes) is checked when it is loaded (:func:`load_state_dict_file`).
    """
    info = _info(config_name)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            return CheckpointStatus(
                info.config_name, path, "not_a_file", f"The checkpoint file {path} does not exist."
            )
        if not path.is_file():
            return CheckpointStatus(
                info.config_name,
                path,
                "not_a_file",
                f"The checkpoint path {path} is a folder, not a .pt file.",
            )
        return CheckpointStatus(info.config_name, path, "ok", f"file: {path}")
    path = checkpoint_path(info.config_name)
    if not path.is_file():
        return CheckpointStatus(
            info.config_name,
            path,
            "missing",
            f"The SAM 2 checkpoint '{info.config_name}' is not downloaded yet. {offline_guidance(info.config_name)}",
        )
    actual = path.stat().st_size
    if info.size is not None and actual != info.size:
        return CheckpointStatus(
            info.config_name,
            path,
            "wrong_size",
            f"The cached checkpoint {path} has {actual:,} bytes but the official '{info.config_name}' file has "
            f"{info.size:,} bytes: it is an interrupted download or another file. Delete it and download it "
            f"again. {offline_guidance(info.config_name)}",
        )
    return CheckpointStatus(info.config_name, path, "ok", f"found: {path}")


def _redownload_hint(path: Path) -> str:
    for info in CHECKPOINTS.values():
        if path.name == info.filename:
            return f" Delete it and download it again. {offline_guidance(info.config_name)}"
    return " Delete it and download or copy it again."


def _zip_is_intact(path: Path) -> bool:
    """Whether every member of a zip archive reads back with its CRC (a truncated download fails)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into ``{name: tensor}`` on the CPU.

    Accepts Meta's layout ``{"model": state_dict}`` and a bare state dict. Loading uses
    ``torch.load(..., weights_only=True)``: a checkpoint cannot run code. A missing,
    empty, truncated, corrupted or non-checkpoint file raises CheckpointError.
    """
    import torch

    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"The checkpoint file {p} does not exist.")
    if not p.is_file():
        raise CheckpointError(f"The checkpoint path {p} is not a file.")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"The checkpoint file {p} is empty (0 bytes), e.g. from a failed download.{_redownload_hint(p)}"
        )
    # torch.save writes a zip archive; the legacy format is a bare pickle (first byte 0x80).
    is_zip = zipfile.is_zipfile(p)
    with open(p, "rb") as fh:
        is_pickle = fh.read(1) == b"\x80"
    if not (is_zip or is_pickle):
        raise CheckpointError(
            f"The checkpoint file {p} ({size:,} bytes) is corrupted or truncated: it is not a PyTorch checkpoint "
            f"(neither the zip archive torch.save writes nor a legacy pickle).{_redownload_hint(p)}"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip/pickle errors take many forms; all mean "unreadable"
        text = str(e).strip()
        detail = f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
        unsafe = "weights only load failed" in text.lower() or "weights_only" in text
        intact = is_pickle or _zip_is_intact(p)
        if unsafe and intact:
            raise CheckpointError(
                f"The file {p} is not a plain weights file: it holds Python objects other than tensors, which "
                "napari-sam2 does not load for safety (weights_only=True), since loading them could run code. "
                "If you trust the file, re-save its weights with torch.save({'model': model.state_dict()}, path)."
            ) from e
        raise CheckpointError(
            f"The checkpoint file {p} ({size:,} bytes) is corrupted or truncated and cannot be read by PyTorch "
            f"({detail}), e.g. an interrupted download.{_redownload_hint(p)}"
        ) from e
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        sd = obj["model"]
    elif isinstance(obj, Mapping):
        sd = obj
    else:
        raise CheckpointError(
            f"The file {p} does not contain a state dict (it holds a {type(obj).__name__})."
        )
    if not sd:
        raise CheckpointError(f"The checkpoint file {p} contains an empty state dict.")
    for key, value in sd.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            top = ", ".join(repr(k) for k in list(obj)[:5]) if isinstance(obj, Mapping) else ""
            raise CheckpointError(
                f"The file {p} is not a SAM 2 checkpoint: expected {{'model': {{name: tensor}}}} or {{name: tensor}}, "
                f"but entry {key!r} is a {type(value).__name__} (top-level keys: {top})."
            )
    return dict(sd)


_TRUNK_SIZES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
_BLOCK_RE = re.compile(r"^image_encoder\.trunk\.blocks\.(\d+)\.")


def guess_variant(state_dict: Mapping[str, Any]) -> str | None:
    """Name of the official config a state dict looks like (e.g. ``"sam2.1_hiera_b+"``), or None.

    Uses the Hiera trunk width (``patch_embed.proj.weight`` rows: 96 tiny/small, 112 base+,
    144 large), its number of blocks (12, 16, 24, 48) and the two SAM 2.1-only tensors
    ``no_obj_embed_spatial`` and ``obj_ptr_tpos_proj.weight``. Only shapes are read, so
    meta-device tensors work. Accepts Meta's ``{"model": sd}`` layout too.
    """
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    w = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is None or not hasattr(w, "shape") or len(w.shape) != 4:
        return None
    blocks = {int(m.group(1)) for k in state_dict if (m := _BLOCK_RE.match(k))}
    if blocks != set(range(len(blocks))):
        return None  # gaps: not a complete trunk
    size = _TRUNK_SIZES.get((int(w.shape[0]), len(blocks)))
    if size is None:
        return None
    has = ("no_obj_embed_spatial" in state_dict, "obj_ptr_tpos_proj.weight" in state_dict)
    if has == (True, True):
        return f"sam2.1_hiera_{size}"
    if has == (False, False):
        return f"sam2_hiera_{size}"
    return None  # one 2.1 tensor without the other: a modified model
