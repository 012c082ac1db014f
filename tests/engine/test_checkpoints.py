"""Checkpoint registry, cache, download (against a local HTTP server), loading and identification."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

import napari_sam2.engine.weights.checkpoints as ck
import napari_sam2.engine.weights.download as dl
from napari_sam2.engine.weights.checkpoints import (
    CHECKPOINTS,
    CheckpointError,
    DownloadCancelled,
    cache_dir,
    checkpoint_path,
    find_checkpoint,
    guess_variant,
    load_state_dict_file,
    resolve_config_name,
)
from napari_sam2.engine.weights.download import download_checkpoint, ensure_checkpoint

CONFIG = "sam2.1_hiera_t"
PAYLOAD = bytes(range(256)) * 1024  # 256 KiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


# -- local HTTP server ----------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path == "/good.pt":
            self._send(PAYLOAD)
        elif self.path == "/nolength.pt":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.close_connection = True
        elif self.path == "/truncated.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/slow.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            try:
                for i in range(0, len(PAYLOAD), 4096):
                    self.wfile.write(PAYLOAD[i : i + 4096])
                    self.wfile.flush()
                    time.sleep(0.01)
            except OSError:
                pass  # the client went away (cancel)
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")

    def _send(self, data: bytes):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "ckpts"
    monkeypatch.setenv(ck.ENV_CHECKPOINT_DIR, str(d))
    monkeypatch.setattr(dl, "_CHUNK", 16 * 1024)  # several reads per test payload
    return d


def _assert_clean(cache_dir_: Path, dest: Path) -> None:
    assert not dest.exists()
    leftovers = list(cache_dir_.glob("*")) if cache_dir_.exists() else []
    assert leftovers == [], leftovers


def _assert_message(err: CheckpointError, url: str, dest: Path) -> None:
    msg = str(err)
    assert url in msg
    assert str(dest) in msg


# -- registry ---------------------------------------------------------------------------------------


def test_registry_has_the_eight_official_checkpoints():
    assert set(CHECKPOINTS) == {f"{v}_hiera_{s}" for v in ("sam2", "sam2.1") for s in ("t", "s", "b+", "l")}
    for name, info in CHECKPOINTS.items():
        date = "092824" if name.startswith("sam2.1") else "072824"
        assert info.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/{date}/{info.filename}"
        assert info.config_file == f"configs/{name.split('_')[0]}/{name}.yaml"
        if info.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
        if info.size is not None:
            assert 100_000_000 < info.size < 1_000_000_000
    assert CHECKPOINTS["sam2.1_hiera_b+"].filename == "sam2.1_hiera_base_plus.pt"
    assert CHECKPOINTS["sam2_hiera_l"].filename == "sam2_hiera_large.pt"
    sizes = [CHECKPOINTS[f"sam2.1_hiera_{s}"].size for s in ("t", "s", "b+", "l")]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize(
    "alias, name",
    [
        ("sam2.1_hiera_t", "sam2.1_hiera_t"),
        ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_b+"),
        ("sam2_hiera_large.pt", "sam2_hiera_l"),
        ("facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_b+"),
        ("sam2_hiera_small", "sam2_hiera_s"),
    ],
)
def test_resolve_config_name(alias, name):
    assert resolve_config_name(alias) == name


def test_unknown_config():
    with pytest.raises(ValueError, match="unknown SAM 2 model variant 'sam3'.*sam2.1_hiera_t"):
        checkpoint_path("sam3")


# -- cache ------------------------------------------------------------------------------------------


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(ck.ENV_CHECKPOINT_DIR, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert checkpoint_path("sam2.1_hiera_l") == tmp_path / "mine" / "sam2.1_hiera_large.pt"
    assert find_checkpoint("sam2.1_hiera_l") is None
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "sam2.1_hiera_large.pt").write_bytes(b"x")
    assert find_checkpoint("sam2.1_hiera_l") == tmp_path / "mine" / "sam2.1_hiera_large.pt"


def test_cache_dir_default_uses_platformdirs(monkeypatch):
    import platformdirs

    monkeypatch.delenv(ck.ENV_CHECKPOINT_DIR, raising=False)
    expected = Path(platformdirs.user_cache_dir("napari-sam2", appauthor=False)) / "checkpoints"
    assert cache_dir() == expected


# -- download ---------------------------------------------------------------------------------------


def test_download_good_file(server, cache):
    calls = []
    path = download_checkpoint(
        CONFIG,
        url=f"{server}/good.pt",
        expected_sha256=PAYLOAD_SHA,
        expected_size=len(PAYLOAD),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert path == checkpoint_path(CONFIG) == cache / "sam2.1_hiera_tiny.pt"
    assert path.read_bytes() == PAYLOAD
    assert calls[0] == (0, len(PAYLOAD)) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert len(calls) > 3
    assert sorted(p.name for p in cache.iterdir()) == ["sam2.1_hiera_tiny.pt"]  # no .part left


def test_download_with_tqdm_and_no_length(server, cache):
    path = download_checkpoint(
        CONFIG, url=f"{server}/nolength.pt", expected_sha256=PAYLOAD_SHA, expected_size=None, progress=True
    )
    assert path.read_bytes() == PAYLOAD


def test_download_from_file_url(tmp_path, cache):
    src = tmp_path / "mirror.pt"
    src.write_bytes(PAYLOAD)
    path = download_checkpoint(
        CONFIG, url=src.as_uri(), expected_sha256=PAYLOAD_SHA, expected_size=len(PAYLOAD), progress=False
    )
    assert path.read_bytes() == PAYLOAD


def test_download_truncated(server, cache):
    url = f"{server}/truncated.pt"
    with pytest.raises(CheckpointError, match="truncated") as info:
        download_checkpoint(CONFIG, url=url, expected_sha256=None, expected_size=None, progress=False)
    _assert_message(info.value, url, checkpoint_path(CONFIG))
    _assert_clean(cache, checkpoint_path(CONFIG))


def test_download_wrong_checksum(server, cache):
    url = f"{server}/good.pt"
    with pytest.raises(CheckpointError, match="SHA-256") as info:
        download_checkpoint(
            CONFIG, url=url, expected_sha256="0" * 64, expected_size=len(PAYLOAD), progress=False
        )
    _assert_message(info.value, url, checkpoint_path(CONFIG))
    _assert_clean(cache, checkpoint_path(CONFIG))


def test_download_wrong_size_is_refused_before_transfer(server, cache):
    url = f"{server}/good.pt"
    # Registry values apply to a mirror too: the official tiny file is ~156 MB, not 256 KiB.
    with pytest.raises(CheckpointError, match="official file has 156008466 bytes") as info:
        download_checkpoint(CONFIG, url=url, progress=False)
    _assert_message(info.value, url, checkpoint_path(CONFIG))
    _assert_clean(cache, checkpoint_path(CONFIG))


def test_download_404(server, cache):
    url = f"{server}/missing.pt"
    with pytest.raises(CheckpointError, match="HTTP 404") as info:
        download_checkpoint(CONFIG, url=url, progress=False)
    _assert_message(info.value, url, checkpoint_path(CONFIG))
    _assert_clean(cache, checkpoint_path(CONFIG))


def test_download_connection_refused(cache):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/sam2.1_hiera_tiny.pt"
    with pytest.raises(CheckpointError, match="could not connect") as info:
        download_checkpoint(CONFIG, url=url, progress=False, timeout=5)
    msg = str(info.value)
    _assert_message(info.value, url, checkpoint_path(CONFIG))
    assert "save it as" in msg and msg.count("\n") == 0
    _assert_clean(cache, checkpoint_path(CONFIG))


def test_download_cancel(server, cache):
    cancel = threading.Event()

    def progress(done, total):
        if done >= 32 * 1024:
            cancel.set()

    url = f"{server}/slow.pt"
    with pytest.raises(DownloadCancelled, match="cancelled") as info:
        download_checkpoint(
            CONFIG, url=url, cancel=cancel, progress=progress, expected_sha256=None, expected_size=None
        )
    assert isinstance(info.value, CheckpointError)
    _assert_message(info.value, url, checkpoint_path(CONFIG))
    _assert_clean(cache, checkpoint_path(CONFIG))


def test_download_cancel_from_another_thread(server, cache):
    cancel = threading.Event()
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    try:
        with pytest.raises(DownloadCancelled):
            download_checkpoint(
                CONFIG,
                url=f"{server}/slow.pt",
                cancel=cancel,
                progress=False,
                expected_sha256=None,
                expected_size=None,
            )
    finally:
        timer.cancel()
    _assert_clean(cache, checkpoint_path(CONFIG))


def test_failed_download_keeps_existing_good_file(server, cache):
    good = download_checkpoint(
        CONFIG, url=f"{server}/good.pt", expected_sha256=PAYLOAD_SHA, expected_size=None, progress=False
    )
    with pytest.raises(CheckpointError):
        download_checkpoint(
            CONFIG, url=f"{server}/truncated.pt", expected_sha256=None, expected_size=None, progress=False
        )
    assert good.read_bytes() == PAYLOAD
    assert sorted(p.name for p in cache.iterdir()) == [good.name]


# -- ensure -----------------------------------------------------------------------------------------


def test_ensure_explicit_path(tmp_path, cache):
    f = tmp_path / "finetuned.pt"
    f.write_bytes(b"weights")
    assert ensure_checkpoint(CONFIG, f) == f
    with pytest.raises(CheckpointError, match="does not exist"):
        ensure_checkpoint(CONFIG, tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        ensure_checkpoint(CONFIG, tmp_path)


def test_ensure_without_download_names_url_and_path(cache):
    with pytest.raises(CheckpointError) as info:
        ensure_checkpoint(CONFIG, download=False)
    _assert_message(info.value, CHECKPOINTS[CONFIG].url, checkpoint_path(CONFIG))


def test_ensure_uses_cache_and_checks_size(cache, monkeypatch):
    dest = checkpoint_path(CONFIG)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)
    with pytest.raises(CheckpointError, match="interrupted download or another file"):
        ensure_checkpoint(CONFIG, download=False)
    info = CHECKPOINTS[CONFIG]
    patched = dict(CHECKPOINTS)
    patched[CONFIG] = ck.CheckpointInfo(
        info.config_name, info.filename, info.url, info.config_file, len(PAYLOAD), None
    )
    monkeypatch.setattr(ck, "CHECKPOINTS", patched)
    assert ensure_checkpoint(CONFIG, download=False) == dest


def test_ensure_downloads_when_missing(server, cache, monkeypatch):
    info = CHECKPOINTS[CONFIG]
    patched = dict(CHECKPOINTS)
    patched[CONFIG] = ck.CheckpointInfo(
        info.config_name, info.filename, f"{server}/good.pt", info.config_file, len(PAYLOAD), PAYLOAD_SHA
    )
    monkeypatch.setattr(ck, "CHECKPOINTS", patched)
    path = ensure_checkpoint(CONFIG, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert ensure_checkpoint(CONFIG, download=False) == path


# -- loading ----------------------------------------------------------------------------------------


def test_load_meta_layout_and_bare(tmp_path):
    sd = {"a.weight": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(1)}
    torch.save({"model": sd}, tmp_path / "meta.pt")
    torch.save(sd, tmp_path / "bare.pt")
    for name in ("meta.pt", "bare.pt"):
        out = load_state_dict_file(tmp_path / name)
        assert set(out) == set(sd) and torch.equal(out["a.weight"], sd["a.weight"])


def test_load_generated_test_checkpoint(tiny_checkpoint):
    sd = load_state_dict_file(tiny_checkpoint)
    assert guess_variant(sd) == "sam2.1_hiera_t"


def test_load_truncated(tmp_path):
    p = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"w": torch.randn(64, 64)}}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_state_dict_file(p)
    msg = str(info.value)
    assert str(p) in msg and "corrupted" in msg and CHECKPOINTS["sam2.1_hiera_t"].url in msg


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10, b"<html>404 Not Found</html>"])
def test_load_garbage(tmp_path, content):
    p = tmp_path / "x.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(str(p))):
        load_state_dict_file(p)


class _Custom:
    """An arbitrary Python object: weights_only loading must refuse it."""


def test_load_refuses_pickled_objects(tmp_path):
    p = tmp_path / "obj.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": _Custom()}, p)
    with pytest.raises(CheckpointError, match="not a plain weights file"):
        load_state_dict_file(p)


def test_load_wrong_structure(tmp_path):
    p = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], p)
    with pytest.raises(CheckpointError, match="does not contain a state dict"):
        load_state_dict_file(p)
    p2 = tmp_path / "mixed.pt"
    torch.save({"epoch": 3, "w": torch.zeros(1)}, p2)
    with pytest.raises(CheckpointError, match="not a SAM 2 checkpoint.*'epoch'"):
        load_state_dict_file(p2)


def test_load_missing_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_file(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_state_dict_file(tmp_path)


# -- guess_variant ------------------------------------------------------------------------------------


def _manifest_state_dict(path: Path) -> dict[str, torch.Tensor]:
    manifest = json.loads(path.read_text())
    return {t["key"]: torch.empty(t["shape"], device="meta") for t in manifest["tensors"]}


def test_guess_variant_on_all_official_manifests(golden_dir):
    manifests = sorted((golden_dir / "manifests").glob("*.json"))
    assert len(manifests) == 8
    for path in manifests:
        config = path.stem
        sd = _manifest_state_dict(path)
        assert guess_variant(sd) == config, config
        assert guess_variant({"model": sd}) == config
        assert config in CHECKPOINTS


def test_guess_variant_unknown(golden_dir):
    sd = _manifest_state_dict(golden_dir / "manifests" / "sam2.1_hiera_t.json")
    assert guess_variant({}) is None
    assert guess_variant({"x": torch.zeros(1)}) is None
    partial = dict(sd)
    del partial["no_obj_embed_spatial"]  # one 2.1 tensor without the other
    assert guess_variant(partial) is None
    fewer = {k: v for k, v in sd.items() if not k.startswith("image_encoder.trunk.blocks.11.")}
    assert guess_variant(fewer) is None  # 11 blocks: no official model
