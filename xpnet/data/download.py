"""Downloading a data file from a list of mirrors, verified, with nothing left behind on failure.

MNIST's original host has been unreliable for years, so every data set lists several
mirrors; each is tried in turn, and only bytes that match the published checksum are
ever renamed into place. Nothing here touches the network at import time.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from xpnet.errors import ChecksumError, DataError, DownloadError
from xpnet.progress import ProgressBar

CHUNK = 1 << 16
USER_AGENT = "xpnet (https://pypi.org/project/xpnet)"


class _Mismatch(Exception):
    """The whole file arrived but its checksum is not the published one."""


def download_file(filename: str, mirrors, dest_dir, md5: str | None = None, sha256: str | None = None,
                  timeout: float = 30, progress: bool = False) -> Path:
    """Fetch ``filename`` from the first of ``mirrors`` (base URLs) that delivers it intact.

    Streams into a temp file in ``dest_dir``, checks whichever of md5/sha256 is given, then
    renames it to ``dest_dir/filename``. A failed or mismatching mirror leaves no temp file
    behind and the next one is tried. Raises ChecksumError if some mirror served wrong bytes,
    else DownloadError; both messages list every mirror tried and how to place the file by hand.
    """
    import http.client  # noqa: PLC0415 - urllib/http/ssl cost ~20 ms; only downloads pay it

    mirrors = (mirrors,) if isinstance(mirrors, str) else tuple(mirrors)
    dest_dir = Path(dest_dir)
    target = dest_dir / filename
    hint = f"download it yourself and put {filename} in {dest_dir}"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest_dir} for {filename}: {exc.strerror or exc}") from None
    failures, bad_bytes = [], False
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
        except OSError as exc:
            raise DataError(f"cannot write {filename} into {dest_dir}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                _fetch(url, fh, md5, sha256, timeout, progress, filename)
            os.replace(tmp, target)
            return target
        except _Mismatch as exc:
            bad_bytes = True
            failures.append(f"{url} ({exc})")
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, timeouts, bad URLs
            failures.append(f"{url} ({_reason(exc)})")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    tried = "; ".join(failures) if failures else "no mirrors configured"
    if bad_bytes:
        raise ChecksumError(f"{filename}: checksum mismatch, no mirror delivered the published file "
                            f"(tried {tried}); {hint}")
    raise DownloadError(f"could not download {filename} (tried {tried}); {hint}")


def _reason(exc: BaseException) -> str:
    """A short why for the one-line message: ``HTTP 404 Not Found``, ``Connection refused``..."""
    import urllib.error  # noqa: PLC0415

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    return str(getattr(exc, "strerror", None) or exc) or type(exc).__name__


def _fetch(url: str, fh, md5: str | None, sha256: str | None, timeout: float, progress: bool, label: str) -> None:
    """Stream ``url`` into ``fh`` while hashing (bar on a terminal only); raise _Mismatch when the bytes are not the file."""
    import urllib.request  # noqa: PLC0415

    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        received = 0
        bar = ProgressBar(total, f"downloading {label}", enabled=progress and total > 0, unit="bytes")
        while chunk := response.read(CHUNK):
            fh.write(chunk)
            for digest in digests.values():
                digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk), len(chunk))
        bar.close()
    if total and received != total:  # http.client's read(n) returns short, it does not raise
        raise ConnectionError(f"connection closed after {received} of {total} bytes")
    for name, expected in (("md5", md5), ("sha256", sha256)):
        got = digests[name].hexdigest()
        if expected and got != expected.lower():
            raise _Mismatch(f"{name} {got}, expected {expected.lower()}")
