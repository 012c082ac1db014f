"""Downloading the official checkpoints (engine/weights/download.py): the failure paths a local
HTTP server cannot easily produce (timeouts, stalls, cut connections, an unwritable
folder, a bad URL), the checks after the transfer, and ensure_checkpoint's refusal to
download over a file that is there. The happy path, 404, truncation, cancelling and the
size refused before the transfer run against a real local server in test_checkpoints.py.

A stand-in for ``urlopen`` plays the server here: no network, no threads, milliseconds."""

from __future__ import annotations

import hashlib
import http.client
import threading
import urllib.error

import pytest

import napari_sam2.engine.weights.checkpoints as ck
import napari_sam2.engine.weights.download as dl
from napari_sam2.engine.weights.checkpoints import CheckpointError, DownloadCancelled, checkpoint_path
from napari_sam2.engine.weights.download import download_checkpoint, ensure_checkpoint

CONFIG = "sam2.1_hiera_t"
PAYLOAD = bytes(range(256)) * 64  # 16 KiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Response:
    """What urlopen returns: headers, read(n), a context manager. ``fail_after`` raises the
    given error once that many bytes were read."""

    def __init__(self, data: bytes, length: str | None, fail_after: int | None = None, error=None):
        self.data, self.pos = data, 0
        self.headers = {} if length is None else {"Content-Length": length}
        self.fail_after, self.error = fail_after, error
        self.closed = False

    def read(self, n: int) -> bytes:
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise self.error
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    monkeypatch.setenv(ck.ENV_CHECKPOINT_DIR, str(folder))
    monkeypatch.setattr(dl, "_CHUNK", 4096)  # several reads per payload
    return folder


def _serve(monkeypatch, answer):
    """urlopen answers ``answer`` (a response, or an exception to raise); the requests are recorded."""
    requests = []

    def urlopen(request, timeout):
        requests.append((request, timeout))
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(dl.urllib.request, "urlopen", urlopen)
    return requests


def _nothing_left(folder):
    return not folder.exists() or list(folder.iterdir()) == []


def _fails(match, **kwargs):
    url = kwargs.setdefault("url", "https://mirror.example/sam2.pt")
    kwargs.setdefault("progress", False)
    with pytest.raises(CheckpointError, match=match) as info:
        download_checkpoint(CONFIG, **kwargs)
    msg = str(info.value)
    # every failure names the config, the URL and where to put the file by hand
    assert msg.startswith(f"Could not download the SAM 2 checkpoint '{CONFIG}' from {url}: ")
    assert f"save it as {checkpoint_path(CONFIG)}" in msg
    return info.value


def test_the_request_names_the_client_and_uses_the_timeout(cache, monkeypatch):
    requests = _serve(monkeypatch, _Response(PAYLOAD, str(len(PAYLOAD))))
    path = download_checkpoint(
        CONFIG, url="https://mirror.example/t.pt", expected_sha256=SHA.upper(), expected_size=len(PAYLOAD),
        progress=False, timeout=7,
    )  # fmt: skip
    assert path.read_bytes() == PAYLOAD  # an upper-case checksum is the same checksum
    ((request, timeout),) = requests
    assert request.full_url == "https://mirror.example/t.pt" and timeout == 7
    assert request.get_header("User-agent") == "napari-sam2"


def test_a_file_of_another_size_without_content_length_is_refused_after_the_transfer(cache, monkeypatch):
    response = _Response(PAYLOAD, None)
    _serve(monkeypatch, response)
    _fails(rf"received {len(PAYLOAD)} bytes but the official file has 999 bytes", expected_size=999,
           expected_sha256=None)  # fmt: skip
    assert _nothing_left(cache) and response.closed


def test_an_unreadable_content_length_falls_back_to_the_official_size_for_progress(cache, monkeypatch):
    _serve(monkeypatch, _Response(PAYLOAD, "lots"))
    seen = []
    download_checkpoint(CONFIG, url="https://m/x.pt", expected_sha256=SHA, expected_size=len(PAYLOAD),
                        progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # never goes back


def test_progress_total_is_none_when_nobody_knows_the_size(cache, monkeypatch):
    _serve(monkeypatch, _Response(PAYLOAD, None))
    seen = []
    download_checkpoint(CONFIG, url="https://m/x.pt", expected_sha256=None, expected_size=None,
                        progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert {t for _, t in seen} == {None} and seen[-1][0] == len(PAYLOAD)


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (urllib.error.URLError(TimeoutError("timed out")), r"no answer within 7 s \(offline, or blocked\)"),
        (TimeoutError(), r"no answer within 7 s"),
        (urllib.error.URLError("[Errno -2] Name or service not known"),
         r"could not connect \(\[Errno -2\] Name or service not known\) — offline, or behind a proxy"),
        (ValueError("unknown url type: 'htp'"), r"could not open the URL \(unknown url type: 'htp'\)"),
        (http.client.BadStatusLine("garbage"), r"could not open the URL"),
    ],
)  # fmt: skip
def test_failures_to_open_say_why(cache, monkeypatch, error, says):
    _serve(monkeypatch, error)
    err = _fails(says, timeout=7)
    assert err.__cause__ is error  # the original stays available for a debugger
    assert _nothing_left(cache)


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (TimeoutError(), r"the transfer stalled for 7 s after 8192 bytes"),
        (
            http.client.IncompleteRead(b"x" * 100, 5000),
            rf"cut after 8292 of {len(PAYLOAD)} bytes \(truncated",
        ),
        (ConnectionResetError("reset by peer"), r"the transfer failed after 8192 bytes \(reset by peer\)"),
    ],
)
def test_failures_during_the_transfer_say_how_far_it_got_and_leave_nothing(cache, monkeypatch, error, says):
    response = _Response(PAYLOAD, str(len(PAYLOAD)), fail_after=8192, error=error)
    _serve(monkeypatch, response)
    _fails(says, timeout=7, expected_sha256=None, expected_size=None)
    assert _nothing_left(cache) and response.closed


def test_an_unwritable_checkpoint_folder_is_named(cache, monkeypatch):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("a file where the folder should be")
    requests = _serve(monkeypatch, _Response(PAYLOAD, None))
    _fails(rf"cannot write to the checkpoint folder {cache}")
    assert requests == []  # nothing fetched for a file that could not be saved
    assert cache.read_text() == "a file where the folder should be"


def test_a_cancel_set_before_the_start_saves_nothing(cache, monkeypatch):
    _serve(monkeypatch, _Response(PAYLOAD, str(len(PAYLOAD))))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DownloadCancelled, match=rf"nothing was saved at {checkpoint_path(CONFIG)}"):
        download_checkpoint(CONFIG, url="https://m/x.pt", cancel=cancel, progress=False,
                            expected_sha256=None, expected_size=None)  # fmt: skip
    assert _nothing_left(cache)


def test_the_registry_checksum_applies_to_a_mirror_unless_turned_off(cache, monkeypatch):
    _serve(monkeypatch, _Response(PAYLOAD, None))
    _fails(rf"the SHA-256 of the received file is {SHA}, expected {ck.CHECKPOINTS[CONFIG].sha256}",
           expected_size=None)  # fmt: skip


def test_an_unknown_config_fails_before_any_request(cache, monkeypatch):
    requests = _serve(monkeypatch, _Response(PAYLOAD, None))
    with pytest.raises(Exception, match="sam2_hiera_huge"):
        download_checkpoint("sam2_hiera_huge", progress=False)
    assert requests == []


def test_ensure_never_downloads_over_a_cached_file_of_the_wrong_size(cache, monkeypatch):
    """A file at the cache path is not "missing": it is reported, never replaced."""
    requests = _serve(monkeypatch, _Response(PAYLOAD, None))
    dest = checkpoint_path(CONFIG)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"half a download")
    with pytest.raises(CheckpointError, match=rf"{dest} has 15 bytes .* Delete it and download it again"):
        ensure_checkpoint(CONFIG, progress=False)
    assert requests == [] and dest.read_bytes() == b"half a download"


def test_ensure_with_an_explicit_missing_file_does_not_download(cache, monkeypatch, tmp_path):
    requests = _serve(monkeypatch, _Response(PAYLOAD, None))
    with pytest.raises(CheckpointError, match=rf"The checkpoint file {tmp_path / 'mine.pt'} does not exist"):
        ensure_checkpoint(CONFIG, tmp_path / "mine.pt", download=True)
    assert requests == [] and _nothing_left(cache)
