"""Downloading a data file from a list of mirrors, verified, with nothing left behind on failure."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ChecksumError, DownloadError

CHUNK = 1 << 16


def download_file(filename: str, mirrors, dest_dir, md5: str | None = None, sha256: str | None = None,
                  timeout: float = 30, progress: bool = False) -> Path:
    """Fetch ``filename`` from the first mirror that delivers it intact into ``dest_dir``.

    Streams into a temp file beside the target, checks md5/sha256, then renames. Every
    failure removes the temp file and moves on to the next mirror.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / filename
    failures, bad_checksum = [], False
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                digests = _fetch(url, fh, timeout, progress, filename)
            problem = _verify(digests, md5, sha256)
            if problem:
                bad_checksum = True
                failures.append(f"{url}: {problem}")
                continue
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            failures.append(f"{url}: {reason}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    tried = "; ".join(failures) if failures else "no mirrors configured"
    hint = f"download it by hand and put {filename} in {dest_dir}"
    if bad_checksum:
        raise ChecksumError(f"{filename}: checksum mismatch ({tried}); {hint}")
    raise DownloadError(f"could not download {filename} (tried {tried}); {hint}")


def _fetch(url, fh, timeout, progress, label):
    md5, sha = hashlib.md5(), hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        bar = None
        if progress and total:
            from ..progress import ProgressBar  # noqa: PLC0415

            bar = ProgressBar(total, f"downloading {label}")
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            fh.write(chunk)
            md5.update(chunk)
            sha.update(chunk)
            if bar:
                bar.update(len(chunk))
        if bar:
            bar.close()
    return md5.hexdigest(), sha.hexdigest()


def _verify(digests, md5, sha256) -> str | None:
    got_md5, got_sha = digests
    if md5 and got_md5 != md5.lower():
        return f"md5 {got_md5} != expected {md5}"
    if sha256 and got_sha != sha256.lower():
        return f"sha256 {got_sha} != expected {sha256}"
    return None
