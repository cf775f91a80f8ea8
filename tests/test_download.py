"""The downloader against a real HTTP server on 127.0.0.1: mirrors, checksums, cleanup, end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import os
import shutil
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_datasets import FILES, write_synthetic

from xpnet.data import DATASETS, DatasetSpec, cache_dir, download_file, load_dataset, read_idx
from xpnet.errors import ChecksumError, DataError, DownloadError

LABELS = "t10k-labels-idx1-ubyte.gz"
IMAGES = "t10k-images-idx3-ubyte.gz"
# The published checksums of the canonical MNIST test files.
MD5 = {IMAGES: "9fb629c4189551a2d022fa330f9573f3", LABELS: "ec29112dd5afa0611ce80d1b7f02629c"}
SHA256 = {IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
          LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"}


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        if self.path.startswith("/short/"):  # promises more bytes than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path_factory, shared_mnist_dir):
    """Serves good/ (copies of the MNIST t10k files), bad/ (corrupted copies) and empty/ (404s)."""
    root = tmp_path_factory.mktemp("www")
    good, bad = root / "good", root / "bad"
    good.mkdir()
    bad.mkdir()
    (root / "empty").mkdir()
    for name in (IMAGES, LABELS):
        shutil.copy(shared_mnist_dir / name, good / name)
        raw = bytearray((good / name).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (bad / name).write_bytes(bytes(raw))
    handler = type("Handler", (_Handler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield type("Server", (), {"url": lambda self, sub: f"{base}{sub}/", "root": root, "requests": handler.requests})()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def refused() -> str:
    """A base URL on a port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_success_verifies_md5_and_sha256(server, tmp_path, shared_mnist_dir):
    dest = cache_dir() / "mnist"
    path = download_file(IMAGES, [server.url("good")], dest, md5=MD5[IMAGES], sha256=SHA256[IMAGES])
    assert path == dest / IMAGES
    assert _listing(dest) == [IMAGES]
    assert path.read_bytes() == (shared_mnist_dir / IMAGES).read_bytes()
    assert read_idx(path).shape == (10000, 28, 28)


def test_404_and_refused_mirrors_are_skipped(server, refused, tmp_path):
    mirrors = [server.url("empty"), refused, server.url("good")]
    path = download_file(LABELS, mirrors, tmp_path / "d", md5=MD5[LABELS])
    assert read_idx(path)[:5].tolist() == [7, 2, 1, 0, 4]
    assert _listing(tmp_path / "d") == [LABELS]
    assert server.requests == [f"/empty/{LABELS}", f"/good/{LABELS}"]


def test_corrupt_mirror_is_skipped(server, tmp_path):
    path = download_file(LABELS, [server.url("bad"), server.url("good")], tmp_path, sha256=SHA256[LABELS])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[LABELS]
    assert _listing(tmp_path) == [LABELS]


def test_only_corrupt_mirrors_is_a_checksum_error_and_leaves_nothing(server, refused, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError) as err:
        download_file(IMAGES, [server.url("bad"), refused], dest, md5=MD5[IMAGES])
    msg = str(err.value)
    assert f"{server.url('bad')}{IMAGES} (md5 " in msg and f"expected {MD5[IMAGES]}" in msg
    assert f"{refused}{IMAGES} (" in msg
    assert f"put {IMAGES} in {dest}" in msg and "\n" not in msg
    assert _listing(dest) == []


def test_sha256_alone_is_checked(server, tmp_path):
    with pytest.raises(ChecksumError, match="sha256"):
        download_file(LABELS, [server.url("bad")], tmp_path, sha256=SHA256[LABELS])
    assert _listing(tmp_path) == []


def test_all_failing_is_a_download_error_listing_every_mirror(server, refused, tmp_path):
    mirrors = [server.url("empty"), refused, server.url("short"), "ftp-nonsense://x/"]
    with pytest.raises(DownloadError) as err:
        download_file(LABELS, mirrors, tmp_path, md5=MD5[LABELS], timeout=5)
    assert not isinstance(err.value, ChecksumError)
    msg = str(err.value)
    assert f"{server.url('empty')}{LABELS} (HTTP 404" in msg
    assert f"{refused}{LABELS} (" in msg and "refused" in msg.lower()
    assert f"{server.url('short')}{LABELS} (" in msg
    assert f"ftp-nonsense://x/{LABELS} (" in msg
    assert f"put {LABELS} in {tmp_path}" in msg and "\n" not in msg
    assert _listing(tmp_path) == []


def test_no_mirrors(tmp_path):
    with pytest.raises(DownloadError, match="no mirrors configured"):
        download_file(LABELS, [], tmp_path)


def test_unwritable_destination_is_a_data_error(tmp_path):
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    with pytest.raises(DataError, match="cannot create"):
        download_file(LABELS, ["http://127.0.0.1:9/"], tmp_path / "file" / "sub")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_only(server, tmp_path, capsys, monkeypatch):
    download_file(LABELS, [server.url("good")], tmp_path / "a", md5=MD5[LABELS], progress=True)
    assert capsys.readouterr() == ("", "")  # not a terminal: nothing, so logs stay clean
    monkeypatch.setattr(sys, "stderr", _Terminal())
    download_file(LABELS, [server.url("good")], tmp_path / "b", md5=MD5[LABELS], progress=True)
    assert f"downloading {LABELS}" in sys.stderr.getvalue() and "100%" in sys.stderr.getvalue()
    assert capsys.readouterr().out == ""


# ---- load_dataset end to end ----------------------------------------------------------------------


@pytest.fixture
def synth_spec(server, refused, monkeypatch):
    """A registered 'synth' data set whose four files live only on the local server."""
    monkeypatch.delenv("XPNET_MIRRORS", raising=False)
    folder = write_synthetic(server.root / "synth", n_train=30, n_test=10, n_classes=3)
    md5 = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in FILES}
    spec = DatasetSpec(name="synth", md5=md5, mirrors=(refused, server.url("bad"), server.url("synth")),
                       class_names=("a", "b", "c"), system_dirs=())
    monkeypatch.setitem(DATASETS, "synth", spec)
    return spec


def test_load_dataset_downloads_all_four_files_into_the_cache(synth_spec, server):
    ds = load_dataset("synth")
    folder = cache_dir() / "synth"
    assert ds.source == str(folder) and _listing(folder) == sorted(FILES)
    assert ds.X_train.shape == (30, 28, 28) and ds.y_test.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert ds.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(ds.X_train, read_idx(server.root / "synth" / FILES[0]))

    served = len(server.requests)
    again = load_dataset("synth", download=True)  # the cache answers; no request goes out
    assert len(server.requests) == served
    np.testing.assert_array_equal(again.X_test, ds.X_test)


def test_load_dataset_fetches_only_missing_files(synth_spec, server):
    folder = write_synthetic(cache_dir() / "synth", n_train=30, n_test=10, n_classes=3)
    (folder / FILES[3]).unlink()
    load_dataset("synth")
    assert [p for p in server.requests if p.startswith("/synth/")] == [f"/synth/{FILES[3]}"]


def test_mirrors_argument_overrides_the_spec(synth_spec, server, refused, monkeypatch):
    monkeypatch.setitem(DATASETS, "synth", dataclasses.replace(synth_spec, mirrors=(refused,)))
    with pytest.raises(DownloadError, match=refused):
        load_dataset("synth")
    assert load_dataset("synth", mirrors=[server.url("synth")]).X_train.shape == (30, 28, 28)


def test_own_mirrors_from_the_environment_come_first(synth_spec, server, refused, monkeypatch):
    monkeypatch.setitem(DATASETS, "synth", dataclasses.replace(synth_spec, mirrors=(refused,)))
    monkeypatch.setenv("XPNET_MIRRORS", f"{server.url('empty')}, {server.root.as_uri()}/nowhere/ "
                                        f"{server.url('{name}')}")
    assert load_dataset("synth").X_test.shape == (10, 28, 28)
    assert server.requests[:3] == [f"/empty/{FILES[0]}", f"/synth/{FILES[0]}", f"/empty/{FILES[1]}"]


def test_failed_dataset_download_leaves_cache_clean(synth_spec, server, monkeypatch):
    bad_md5 = {**synth_spec.md5, FILES[2]: "0" * 32}
    monkeypatch.setitem(DATASETS, "synth", dataclasses.replace(synth_spec, md5=bad_md5))
    with pytest.raises(ChecksumError, match=FILES[2]):
        load_dataset("synth")
    assert _listing(cache_dir() / "synth") == sorted(FILES[:2])  # verified files kept, no temp files


def test_real_mnist_test_files_via_the_registered_checksums(server, tmp_path):
    spec = DATASETS["mnist"]
    for name in (IMAGES, LABELS):
        download_file(name, [server.url("bad"), server.url("good")], tmp_path,
                      md5=spec.md5[name], sha256=spec.sha256[name])
    assert read_idx(tmp_path / LABELS).shape == (10000,)
    assert _listing(tmp_path) == sorted([IMAGES, LABELS])
