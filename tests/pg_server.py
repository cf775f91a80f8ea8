"""A throw-away PostgreSQL server for the tests: Debian's ``postgresql`` package, started here.

``initdb`` into a temporary folder, listening on 127.0.0.1 only at a free port, trust
authentication, run as the ``postgres`` user when the tests run as root (PostgreSQL refuses
to run as root). ``PgServer.url`` is a plain ``postgresql://`` URL; ``stop()`` shuts it down
and removes its files. ``find_bin_dir()`` is None where the server binary is absent.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN_GLOBS = ["/usr/lib/postgresql/*/bin"]


def find_bin_dir() -> Path | None:
    """The newest folder holding ``initdb`` and ``postgres`` (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = []
    for pattern in BIN_GLOBS:
        for d in glob.glob(pattern):
            if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "postgres"), os.X_OK):
                try:
                    major = int(Path(d).parent.name)
                except ValueError:
                    major = 0
                found.append((major, Path(d)))
    if not found:
        for name in ("initdb", "postgres"):
            if shutil.which(name) is None:
                return None
        return Path(shutil.which("initdb")).parent
    return max(found)[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, bin_dir: Path):
        self.bin_dir = Path(bin_dir)
        self.root = Path(tempfile.mkdtemp(prefix="xpnet-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "xpnet"
        self.proc = None
        self._as_postgres = getattr(os, "geteuid", lambda: 1)() == 0
        if self._as_postgres:
            import pwd  # POSIX only, and only needed as root: not at import (Windows runs the skip)

            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._uid, self._gid = pw.pw_uid, pw.pw_gid

    def _demote(self):
        if self._as_postgres:
            os.setgid(self._gid)
            os.setuid(self._uid)

    def _run(self, *args, **kw):
        return subprocess.run([str(self.bin_dir / args[0]), *args[1:]], preexec_fn=self._demote, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.root, **kw)

    def start(self, max_connections: int = 100) -> "PgServer":
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        log = self.root / "server.log"
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
             "-k", str(self.root), "-c", f"max_connections={max_connections}", "-c", "fsync=off",
             "-c", "shared_buffers=32MB"],
            preexec_fn=self._demote, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {log.read_text(encoding='utf-8')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                ready = subprocess.run([str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if ready.returncode == 0:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("postgres did not start within 30 s")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # "immediate" shutdown: the data is thrown away anyway
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
