"""Download of the official checkpoints into the cache (atomic, verified, cancellable).

Downloads stream to a ``.part`` file next to the destination, are checked (byte count
against ``Content-Length``, then size and SHA-256 of the official file) and only then
renamed into place, so the final path never holds a partial file. Every failure is a
:class:`~napari_sam2.engine.weights.checkpoints.CheckpointError` whose message names the URL and
the exact path where the file can be put by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from napari_sam2.engine.weights.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    DownloadCancelled,
    ProgressCallback,
    _info,
    checkpoint_path,
    checkpoint_status,
)
from napari_sam2.errors import NapariSam2Error

__all__ = ["download_checkpoint", "ensure_checkpoint"]


def _by_hand(info: CheckpointInfo, url: str, dest: Path, size: int | None, sha: str | None) -> str:
    # offline users copy the file by hand: size and SHA-256 let them check their copy first
    facts = []
    if size is not None:
        facts.append(f"{size:,} bytes")
    if sha is not None:
        facts.append(f"sha256 {sha.lower()}")
    about = f" ({'; '.join(facts)})" if facts else ""
    return (
        f"You can download {url}{about} yourself (e.g. with a web browser, on another machine) and save it as "
        f"{dest} — napari-sam2 will then use it without downloading."
    )


class _Failure(NapariSam2Error):
    """Internal: reason of a failed download, turned into one CheckpointError message."""


_CHUNK = 1 << 20  # bytes per read; also how often cancel is checked
_DEFAULT = object()  # "use the registry value"


def download_checkpoint(
    config_name: str,
    *,
    progress: bool | ProgressCallback = True,
    cancel: threading.Event | None = None,
    url: str | None = None,
    expected_sha256: Any = _DEFAULT,
    expected_size: Any = _DEFAULT,
    timeout: float = 60.0,
) -> Path:
    """Download the official checkpoint of ``config_name`` into the cache.

    Args:
        config_name: e.g. ``"sam2.1_hiera_t"`` (see :func:`resolve_config_name`).
        progress: True for a tqdm bar on stderr, False for none, or a callable
            ``progress(done_bytes, total_bytes_or_None)`` (e.g. to drive a GUI bar).
        cancel: set this event (from another thread) to abort; raises
            :class:`DownloadCancelled`.
        url: download from here instead of Meta's URL (a mirror; ``file://`` works).
        expected_sha256, expected_size: default to the official file's values; pass
            None to skip a check (e.g. for a mirror serving another file).
        timeout: seconds without data before giving up.

    Returns:
        The path of the verified checkpoint (:func:`checkpoint_path`).

    Raises:
        CheckpointError: offline, HTTP error, truncated transfer, size or checksum
            mismatch, disk error — one message naming the URL and the path where the
            file can be put by hand. No partial file is ever left at that path.
    """
    info = _info(config_name)
    dest = checkpoint_path(info.config_name)
    url = url or info.url
    sha = info.sha256 if expected_sha256 is _DEFAULT else expected_sha256
    size = info.size if expected_size is _DEFAULT else expected_size
    tmp: Path | None = None
    bar = None
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
            tmp = Path(tmp_name)
        except OSError as e:
            raise _Failure(f"cannot write to the checkpoint folder {dest.parent} ({e.strerror or e})") from e
        h = hashlib.sha256()
        done = 0
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "napari-sam2"})
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as e:
                raise _Failure(f"the server answered HTTP {e.code} {e.reason}") from e
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    raise _Failure(f"no answer within {timeout:g} s (offline, or blocked)") from e
                raise _Failure(f"could not connect ({reason}) — offline, or behind a proxy") from e
            except TimeoutError as e:
                raise _Failure(f"no answer within {timeout:g} s (offline, or blocked)") from e
            except (OSError, ValueError, http.client.HTTPException) as e:
                raise _Failure(f"could not open the URL ({e})") from e
            with response:
                length = response.headers.get("Content-Length")
                announced = int(length) if length and length.strip().isdigit() else None
                if announced is not None and size is not None and announced != size:
                    raise _Failure(
                        f"the server offers {announced} bytes but the official file has {size} bytes "
                        "(a different or changed file)"
                    )
                total = announced if announced is not None else size
                if progress is True:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=info.filename)
                report = progress if callable(progress) else None
                if report is not None:
                    report(0, total)
                while True:
                    if cancel is not None and cancel.is_set():
                        raise DownloadCancelled(
                            f"Download of the SAM 2 checkpoint '{info.config_name}' from {url} was cancelled; "
                            f"nothing was saved at {dest}."
                        )
                    try:
                        chunk = response.read(_CHUNK)
                    except TimeoutError as e:
                        raise _Failure(f"the transfer stalled for {timeout:g} s after {done} bytes") from e
                    except http.client.IncompleteRead as e:
                        raise _Failure(
                            f"the connection was cut after {done + len(e.partial)} of {announced} bytes (truncated download)"
                        ) from e
                    except (OSError, http.client.HTTPException) as e:
                        raise _Failure(f"the transfer failed after {done} bytes ({e})") from e
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise _Failure(f"cannot write {tmp} ({e.strerror or e}; disk full?)") from e
                    h.update(chunk)
                    done += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                    if report is not None:
                        report(done, total)
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as e:
                raise _Failure(f"cannot write {tmp} ({e.strerror or e}; disk full?)") from e
        if announced is not None and done != announced:
            raise _Failure(f"the connection was cut after {done} of {announced} bytes (truncated download)")
        if size is not None and done != size:
            raise _Failure(
                f"received {done} bytes but the official file has {size} bytes (truncated or different file)"
            )
        if sha is not None and h.hexdigest() != sha.lower():
            raise _Failure(
                f"the SHA-256 of the received file is {h.hexdigest()}, expected {sha.lower()} (corrupted download)"
            )
        try:
            os.replace(tmp, dest)  # atomic on the same file system
        except OSError as e:
            raise _Failure(f"cannot move the download into place ({e.strerror or e})") from e
        tmp = None
        return dest
    except _Failure as e:
        raise CheckpointError(
            f"Could not download the SAM 2 checkpoint '{info.config_name}' from {url}: {e}. {_by_hand(info, url, dest, size, sha)}"
        ) from e.__cause__
    finally:
        if bar is not None:
            bar.close()
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def ensure_checkpoint(
    config_name: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool | ProgressCallback = True,
    cancel: threading.Event | None = None,
) -> Path:
    """Path of a checkpoint to load for ``config_name`` (see :func:`checkpoint_status`).

    A missing official file is downloaded, or, with ``download=False``, a CheckpointError
    says where to get it and where to put it.
    """
    status = checkpoint_status(config_name, checkpoint)
    if status.ok:
        return status.path
    if status.state == "missing" and download:
        return download_checkpoint(status.config_name, progress=progress, cancel=cancel)
    raise CheckpointError(status.message)
