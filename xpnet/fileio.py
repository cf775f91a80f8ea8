"""Writing files atomically: a leaf module (it imports only ``errors`` of xpnet).

Every file xpnet writes goes to a temporary file in the target folder, is flushed and
fsynced, and is renamed over the target: a reader (or a crash) sees the old complete file
or the new complete file, never half of one. A failure is an :class:`~xpnet.errors.OutputError`
naming the path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from xpnet.errors import OutputError

def check_writable(path) -> Path:
    """Fail with one clear line when ``path`` cannot be written; returns its folder.

    The CLI calls it before training, not after an hour of it; ``atomic_write`` again.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write {path}: folder {folder} is not writable")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    return folder


def atomic_write(path, write, mode: str = "wb") -> Path:
    """Call ``write(fh)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    folder = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    _fsync_folder(folder)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every system can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
