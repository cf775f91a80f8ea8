"""``xpnet demo``: the HTTP API against ``xpnet predict`` and NumPy, every bad request refused with a
4xx while the server keeps serving, and the page itself driven in a real headless Chromium.

The browser test draws digits with pointer actions from stroke templates (tests/strokes.py says
why templates and not traced MNIST skeletons) and reads the class the page shows. Its model is
trained inside the test (small, few epochs: MNIST's training files when they are beside the
checkout, else scikit-learn's bundled digits), or taken from ``XPNET_DEMO_MODEL``;
``XPNET_DEMO_DIGITS`` sets how many digits it draws (the figure in README.md was measured so:
``XPNET_DEMO_MODEL=hw.npz XPNET_DEMO_DIGITS=200 python -m pytest tests/test_demo.py -k browser -s``).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SHARED_MNIST, run_cli
from strokes import draw_strokes, render

PIL = pytest.importorskip("PIL.Image")

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


# ---------------------------------------------------------------------------- fixtures
def _save_random_model(path, class_names=None, dataset="mnist", hidden=16, n_in=784):
    from xpnet.data.preprocess import Normalizer
    from xpnet.io.npz import save
    from xpnet.nn.model import MLP

    rng = np.random.default_rng(0)
    net = MLP([n_in, hidden, 10], seed=3)
    net.normalizer = Normalizer().fit(rng.integers(0, 256, (50, n_in)).astype(np.uint8))
    net.class_names = list(class_names) if class_names else [str(i) for i in range(10)]
    net.dataset = dataset
    save(net, path)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """An untrained 784-16-10 model (random weights make every probability informative) whose class
    names are Fashion-MNIST's, so the page provably takes them from the file."""
    return _save_random_model(tmp_path_factory.mktemp("demo") / "fashion.npz", FASHION_NAMES, "fashion-mnist")


@contextlib.contextmanager
def _serving(model_path):
    """The demo server for ``model_path`` on a free port, in a daemon thread, closed afterwards."""
    from xpnet.demo import make_server

    srv = make_server(model_path, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def server(model_path):
    with _serving(model_path) as srv:
        yield srv


def _request(url, method="GET", body=None, headers=None):
    """(status, headers, parsed JSON or bytes) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, hdrs, data = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, data = exc.code, exc.headers, exc.read()
    if (hdrs.get("Content-Type") or "").startswith("application/json"):
        return status, hdrs, json.loads(data)
    return status, hdrs, data


def _predict(server, payload):
    body = json.dumps(payload).encode()
    return _request(server.url + "api/predict", "POST", body, {"Content-Type": "application/json"})


def _png_bytes(gray01) -> bytes:
    buf = io.BytesIO()
    PIL.fromarray(np.round(np.asarray(gray01) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _drawn_digit(digit=3, seed=0):
    return render(draw_strokes(digit, np.random.default_rng(seed)))


# ---------------------------------------------------------------------------- HTTP API
def test_page_assets_and_model_info(server):
    status, hdrs, page = _request(server.url)
    assert status == 200 and hdrs["Content-Type"].startswith("text/html")
    assert b'id="pad"' in page and b'id="clear"' in page and b'type="file"' in page
    assert b"http" not in page.replace(b'name="viewport"', b"")  # no CDN: every asset is local
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, hdrs, body = _request(server.url + name)
        assert status == 200 and hdrs["Content-Type"].startswith(kind) and len(body) > 500
        assert b"https://" not in body and b"http://" not in body
    status, _, info = _request(server.url + "api/model")
    assert status == 200
    assert info["classes"] == FASHION_NAMES  # from the model file
    assert info["sizes"] == [784, 16, 10] and info["dataset"] == "fashion-mnist" and info["draw"] is False


def test_prediction_equals_xpnet_predict(server, model_path, tmp_path, capsys):
    """The same PNG through the page's API and through `xpnet predict --json`: the same numbers."""
    from xpnet.data.images import load_image
    from xpnet.io.npz import load

    path = tmp_path / "digit.png"
    path.write_bytes(_png_bytes(_drawn_digit(3)))
    code, out, err = run_cli(["predict", model_path, path, "--json", "--top-k", "10"], capsys)
    assert code == 0, err
    cli = {p["label"]: p["probability"] for p in json.loads(out)["predictions"]}

    status, _, answer = _predict(server, {"image": _data_url(path.read_bytes())})
    assert status == 200
    np.testing.assert_allclose(answer["probabilities"], [cli[i] for i in range(10)], rtol=1e-6, atol=1e-7)
    assert answer["predicted"] == max(cli, key=cli.get)
    assert answer["label"] == FASHION_NAMES[answer["predicted"]]
    assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-5)

    # ... and to the library's predict_proba on load_image's 28×28 input, which the page shows
    net = load(model_path)
    image = load_image(path)
    np.testing.assert_allclose(answer["input"], image, atol=1e-4)
    proba = net.predict_proba(image.reshape(1, -1) / net.normalizer.scale)[0]
    np.testing.assert_allclose(answer["probabilities"], proba, rtol=1e-6, atol=1e-7)


def test_hidden_activations_are_relu_of_the_first_layer(server, model_path):
    from xpnet.data.images import mnist_style
    from xpnet.io.npz import load

    gray = _drawn_digit(7, seed=2)
    status, _, answer = _predict(server, {"image": _data_url(_png_bytes(gray))})
    assert status == 200
    net = load(model_path)
    x = (mnist_style(gray).reshape(1, -1).astype(np.float64) - net.normalizer.mean) / net.normalizer.std  # scale·raw = [0, 1]
    W, b = np.asarray(net.W[0], dtype=np.float64), np.asarray(net.b[0], dtype=np.float64)
    expected = np.maximum(x @ W.T + b, 0.0)[0]
    assert len(answer["hidden"]) == 1 and len(answer["hidden"][0]) == 16
    np.testing.assert_allclose(answer["hidden"][0], expected, atol=2e-4)
    assert (np.asarray(answer["hidden"][0]) > 0).any()


def test_pixel_array_and_png_give_the_same_answer(server):
    gray = _drawn_digit(5, seed=4)
    png = _png_bytes(gray)
    pixels = np.asarray(PIL.open(io.BytesIO(png)))  # exactly the PNG's uint8 pixels
    status_a, _, a = _predict(server, {"image": _data_url(png)})
    status_b, _, b = _predict(server, {"pixels": pixels.tolist()})
    status_c, _, c = _predict(server, {"pixels": (pixels / 255.0).tolist()})  # 0..1 floats work too
    assert status_a == status_b == status_c == 200
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-6)
    np.testing.assert_allclose(a["probabilities"], c["probabilities"], rtol=1e-5)
    # the raw base64 without the data-URL prefix is accepted as well
    status_d, _, d = _predict(server, {"image": base64.b64encode(png).decode()})
    assert status_d == 200 and d["probabilities"] == a["probabilities"]


def _raw(server, data: bytes, half_close=False) -> tuple[int, bytes]:
    """Send raw bytes on a fresh connection; the status code and body of the answer."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _post_headers(server, headers: dict, body: bytes = b"") -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", "/api/predict")
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    if body:
        conn.send(body)
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    PIL.new("L", (5000, 5000), 255).save(buf, format="PNG")  # 25 megapixels in about 25 kB
    return buf.getvalue()


def _json_body(obj) -> bytes:
    return json.dumps(obj).encode()


JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = {
    # name: (method, path, headers, body, expected status)
    "bad JSON": ("POST", "api/predict", JSON, b"{not json", 400),
    "not UTF-8": ("POST", "api/predict", JSON, b"\xff\xfe{}", 400),
    "deeply nested JSON": ("POST", "api/predict", JSON, b"[" * 100000 + b"]" * 100000, 400),
    "JSON array": ("POST", "api/predict", JSON, b"[1, 2]", 400),
    "empty object": ("POST", "api/predict", JSON, b"{}", 400),
    "both keys": ("POST", "api/predict", JSON, _json_body({"image": "", "pixels": [[0]]}), 400),
    "image not a string": ("POST", "api/predict", JSON, _json_body({"image": 5}), 400),
    "bad base64": ("POST", "api/predict", JSON, _json_body({"image": "data:image/png;base64,@@@@"}), 400),
    "data URL not base64": ("POST", "api/predict", JSON, _json_body({"image": "data:image/png,abc"}), 400),
    "not an image": ("POST", "api/predict", JSON, _json_body({"image": base64.b64encode(b"hello world").decode()}), 422),
    "truncated PNG": ("POST", "api/predict", JSON, _json_body({"image": _data_url(_png_bytes(_drawn_digit())[:200])}), 422),
    "blank drawing": ("POST", "api/predict", JSON, _json_body({"image": _data_url(_png_bytes(np.ones((280, 280))))}), 422),
    "decompression bomb": ("POST", "api/predict", JSON, _json_body({"image": _data_url(_bomb_png())}), 422),
    "ragged pixels": ("POST", "api/predict", JSON, _json_body({"pixels": [[1, 2], [3]]}), 400),
    "1-D pixels": ("POST", "api/predict", JSON, _json_body({"pixels": [1, 2, 3]}), 400),
    "text pixels": ("POST", "api/predict", JSON, _json_body({"pixels": [["a", "b"]]}), 400),
    "negative pixels": ("POST", "api/predict", JSON, _json_body({"pixels": [[-1, 0], [0, 0]]}), 400),
    "NaN pixels": ("POST", "api/predict", JSON, b'{"pixels": [[NaN, 1], [0, 0]]}', 400),
    "huge integer pixel": ("POST", "api/predict", JSON, b'{"pixels": [[1' + b"0" * 400 + b', 1], [0, 0]]}', 400),
    "too many pixel rows": ("POST", "api/predict", JSON, _json_body({"pixels": [[0]] * 2049}), 413),
    "blank pixels": ("POST", "api/predict", JSON, _json_body({"pixels": [[0, 0], [0, 0]]}), 422),
    "form body": ("POST", "api/predict", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1", 415),
    "GET on the API": ("GET", "api/predict", {}, None, 405),
    "PUT": ("PUT", "api/predict", JSON, b"{}", 405),
    "DELETE": ("DELETE", "", {}, None, 405),
    "POST on the page": ("POST", "", JSON, b"{}", 405),
    "unknown page": ("GET", "nope", {}, None, 404),
    "unknown API": ("POST", "api/train", JSON, b"{}", 404),
    "path traversal": ("GET", "../../../etc/passwd", {}, None, 404),
    "static traversal": ("GET", "static/../server.py", {}, None, 404),
}


def _assert_still_serving(server):
    status, _, info = _request(server.url + "api/model")
    assert status == 200 and info["classes"] == FASHION_NAMES
    status, _, answer = _predict(server, {"image": _data_url(_png_bytes(_drawn_digit(1)))})
    assert status == 200 and len(answer["probabilities"]) == 10


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_json_message_and_the_server_keeps_serving(server, case):
    method, path, headers, body, expected = BAD_REQUESTS[case]
    status, hdrs, answer = _request(server.url + path, method, body, headers)
    assert status == expected, answer
    assert isinstance(answer, dict) and answer["error"] and "Traceback" not in answer["error"]
    if status == 405:
        assert hdrs["Allow"]
    _assert_still_serving(server)


def test_protocol_level_abuse_is_refused_with_4xx(server):
    from xpnet.demo.server import MAX_BODY

    # a declared body over the cap is refused before it is read
    status, body = _post_headers(server, {"Content-Type": "application/json", "Content-Length": str(MAX_BODY + 1)})
    assert status == 413 and b"at most" in body
    status, _ = _post_headers(server, {"Content-Type": "application/json"})  # no Content-Length
    assert status == 411
    status, _ = _post_headers(server, {"Content-Type": "application/json", "Content-Length": "ten"})
    assert status == 400
    status, _ = _post_headers(server, {"Content-Type": "application/json", "Content-Length": "-5"})
    assert status == 400
    status, _ = _post_headers(server, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert status == 411
    # a body shorter than announced (the client hung up)
    status, body = _raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                b"Content-Length: 100\r\n\r\n{\"pix", half_close=True)
    assert status == 400 and json.loads(body)["error"]
    # a garbage request line, an unknown method, an over-long header: http.server's refusals, as JSON
    status, body = _raw(server, b"GARBAGE\r\n\r\n")
    assert status == 400 and json.loads(body)["error"]
    status, body = _raw(server, b"BREW /api/predict HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 405 and json.loads(body)["error"]
    status, body = _raw(server, b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n")
    assert 400 <= status < 500
    _assert_still_serving(server)


def test_concurrent_requests_all_get_their_own_answer(server):
    """The network's buffers are shared: a lock keeps parallel requests from mixing answers."""
    images = [_data_url(_png_bytes(_drawn_digit(d, seed=d))) for d in range(8)]
    expected = [_predict(server, {"image": im})[2]["probabilities"] for im in images]
    results = [None] * 32

    def work(i):
        results[i] = _predict(server, {"image": images[i % 8]})[2]["probabilities"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, got in enumerate(results):
        assert got == expected[i % 8]


# ---------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("kind", ["missing", "folder", "corrupt", "wrong input size"])
def test_cli_refuses_a_bad_model_with_one_error_line(kind, tmp_path, capsys):
    path = tmp_path / "model.npz"
    if kind == "folder":
        path.mkdir()
    elif kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 not a zip")
    elif kind == "wrong input size":
        _save_random_model(path, n_in=64)
    code, out, err = run_cli(["demo", path, "--no-browser", "--port", "0"], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err


def test_cli_serves_and_opens_the_browser(model_path, monkeypatch, capsys):
    import webbrowser

    from xpnet.demo.server import DemoServer

    opened, served = [], []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url))
    real_serve_forever = DemoServer.serve_forever

    def serve_forever(self, poll_interval=0.5):
        """Serve in a thread for one request, then stop the way Ctrl+C does."""
        thread = threading.Thread(target=real_serve_forever, args=(self, 0.05), daemon=True)
        thread.start()
        status, _, info = _request(self.url + "api/model")
        served.append((status, info["classes"]))
        self.shutdown()
        thread.join()
        raise KeyboardInterrupt

    monkeypatch.setattr(DemoServer, "serve_forever", serve_forever)
    code, out, err = run_cli(["demo", model_path, "--port", "0"], capsys)
    assert code == 0, err
    assert served == [(200, FASHION_NAMES)]
    assert len(opened) == 1 and opened[0].startswith("http://127.0.0.1:") and opened[0] in out
    code, out, err = run_cli(["demo", model_path, "--port", "0", "--no-browser"], capsys)
    assert code == 0 and len(opened) == 1


def test_a_busy_port_is_one_error_line(model_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        code, _, err = run_cli(["demo", model_path, "--port", port, "--no-browser"], capsys)
    assert code != 0 and err.startswith("error: cannot listen on") and len(err.strip().splitlines()) == 1


def test_the_page_ships_in_the_wheel(tmp_path):
    """Built as a wheel and unpacked elsewhere, the package still serves its page (package-data
    in pyproject.toml): nothing is read from the checkout, nothing from the network."""
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("xpnet", "kernels"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w"), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "w").glob("xpnet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"xpnet/demo/static/{n}" for n in ("index.html", "app.js", "style.css")} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import pathlib, xpnet.demo.server as s\n"
            f"assert pathlib.Path(s.__file__).is_relative_to({str(site)!r})\n"
            "for name, _ in s.STATIC.values(): assert len(s._static(name)) > 500\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------- real browser
def _find_browser():
    """(chromium, chromedriver) paths, or a reason why the browser test cannot run."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, "selenium is not installed (pip install selenium; it is in the [dev] extra)"
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return None, "no Chromium and chromedriver found (apt-get install chromium chromium-driver)"
    return (browser, driver), ""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    found, reason = _find_browser()
    if found is None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,720",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _digits_dataset():
    """scikit-learn's 1,797 scanned digits converted like predict's inputs, as an xpnet Dataset."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    from xpnet.data.datasets import Dataset
    from xpnet.data.images import mnist_style

    digits = load_digits()
    images = np.stack([mnist_style(np.kron(im / 16.0, np.ones((4, 4)))) for im in digits.images])
    X = np.round(images * 255).astype(np.uint8)
    return Dataset("sklearn-digits", X, digits.target.astype(np.int64), X[:100], digits.target[:100].astype(np.int64),
                   tuple(str(i) for i in range(10)), "sklearn.datasets.load_digits")


@pytest.fixture(scope="module")
def drawn_model(tmp_path_factory):
    """(model path, what it is, the accuracy it must reach on drawn digits): ``XPNET_DEMO_MODEL``
    (held to the issue's goal of 95 %), else a small handwriting-recipe model trained here —
    on MNIST's training files when they are beside the checkout (it reads about 90 % of the
    drawings), else, offline in a fresh clone, on scikit-learn's 1,797 scanned digits (about 80 %)."""
    if os.environ.get("XPNET_DEMO_MODEL"):
        return Path(os.environ["XPNET_DEMO_MODEL"]), "XPNET_DEMO_MODEL", 0.95
    from xpnet.io.npz import save
    from xpnet.training.recipe import RunConfig, prepare_split, run

    if (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        config = RunConfig(dataset="mnist", data_dir=str(SHARED_MNIST), recipe="handwriting", hidden=(64,),
                           epochs=3, limit=12000, val_split=0.05)
        result, what, bound = run(config, evaluate_test=False), "784-64-10, 3 epochs on 12k MNIST digits", 0.75
    else:
        config = RunConfig(dataset=None, data_dir="sklearn", recipe="handwriting", hidden=(128,), epochs=40)
        split = prepare_split(config, dataset=_digits_dataset())
        result, what, bound = run(config, split=split, evaluate_test=False), "784-128-10, 40 epochs on sklearn's digits", 0.6
    path = tmp_path_factory.mktemp("drawn-model") / "model.npz"
    save(result.net, path)
    return path, what, bound


def _draw(driver, pad, strokes):
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    actions = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_MOUSE, "pen-as-mouse"), duration=0)
    pointer = actions.pointer_action
    half = 140  # offsets are from the pad's centre; the pad is 280×280 CSS pixels
    for stroke in strokes:
        x, y = stroke[0]
        pointer.move_to(pad, int(round(x - half)), int(round(y - half)))
        pointer.pointer_down()
        for x, y in stroke[1:]:
            pointer.move_to(pad, int(round(x - half)), int(round(y - half)))
        pointer.pointer_up()
    actions.perform()


def _open_page(driver, srv):
    """Load the demo page and wait until its script says it is ready."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(srv.url)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")


def _read_prediction(driver, n_strokes: int) -> int:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.ID, "prediction")

    def answered(_):
        done = (box.get_attribute("data-busy") == "false" and box.get_attribute("data-strokes") == str(n_strokes)
                and box.get_attribute("data-class") != "")
        return box.get_attribute("data-class") if done else False

    return int(WebDriverWait(driver, 30).until(answered))


def test_browser_draws_digits_and_reads_the_page(browser, drawn_model, tmp_path):
    from selenium.webdriver.common.by import By

    path, what, bound = drawn_model
    with _serving(path) as srv:
        _open_page(browser, srv)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#bars li")) == 10
        pad = browser.find_element(By.ID, "pad")
        clear = browser.find_element(By.ID, "clear")
        n = int(os.environ.get("XPNET_DEMO_DIGITS", "20"))
        rng = np.random.default_rng(2024)
        truth, read = [], []
        for i in range(n):
            digit = i % 10
            strokes = draw_strokes(digit, rng)
            clear.click()
            _draw(browser, pad, strokes)
            truth.append(digit)
            read.append(_read_prediction(browser, len(strokes)))
        # the page's answer is the API's answer for the canvas it holds (read the canvas back)
        canvas_png = base64.b64decode(browser.execute_script("return document.getElementById('pad').toDataURL('image/png')").split(",")[1])
        status, _, answer = _predict(srv, {"image": _data_url(canvas_png)})
        assert status == 200 and answer["predicted"] == read[-1]
        shown = browser.find_element(By.ID, "prediction").text
        assert shown == answer["label"]
        # the 28×28 preview and the hidden strip were drawn
        assert browser.execute_script("const c = document.getElementById('seen').getContext('2d');"
                                      "return Array.from(c.getImageData(0, 0, 28, 28).data).some((v, i) => i % 4 < 3 && v > 0);")
        assert browser.find_elements(By.CSS_SELECTOR, "#hidden canvas")
        # Clear empties the page
        clear.click()
        assert browser.find_element(By.ID, "prediction").get_attribute("data-class") == ""
    truth, read = np.array(truth), np.array(read)
    accuracy = float((truth == read).mean())
    per_digit = " ".join(f"{d}:{(read[truth == d] == d).mean() * 100:.0f}%" for d in range(10))
    print(f"\n[demo browser test] {what}: {accuracy * 100:.1f}% of {n} drawn digits read correctly ({per_digit})")
    assert accuracy >= bound, f"only {accuracy:.0%} of {n} drawn digits read correctly ({per_digit}); {what}"


def test_browser_uploads_an_image_for_a_fashion_model(browser, model_path, tmp_path):
    """A Fashion-MNIST model: the page asks for an upload, and the file input gets an answer
    with the model's own class names."""
    from selenium.webdriver.common.by import By

    image = tmp_path / "upload.png"
    image.write_bytes(_png_bytes(_drawn_digit(0, seed=9)))
    with _serving(model_path) as srv:
        _open_page(browser, srv)
        assert "Upload" in browser.find_element(By.ID, "draw-title").text
        browser.find_element(By.ID, "upload").send_keys(str(image))
        predicted = _read_prediction(browser, 1)
        status, _, answer = _predict(srv, {"image": _data_url(image.read_bytes())})
        assert predicted == answer["predicted"]
        assert browser.find_element(By.ID, "prediction").text == FASHION_NAMES[predicted]
        names = [li.text.split("\n")[0] for li in browser.find_elements(By.CSS_SELECTOR, "#bars li .name")]
        assert names == FASHION_NAMES


def test_every_hidden_layer_is_returned_for_deeper_models():
    from xpnet.data.images import mnist_style
    from xpnet.demo import DemoModel
    from xpnet.nn.model import MLP

    net = MLP([784, 8, 6, 10], activation="tanh", seed=1)
    image = mnist_style(_drawn_digit(4, seed=3))
    answer = DemoModel(net).classify(image)
    assert [len(h) for h in answer["hidden"]] == [8, 6]
    x = image.reshape(1, -1).astype(np.float64)  # no normalizer: [0, 1] pixels go in as they are
    h1 = np.tanh(x @ np.asarray(net.W[0], np.float64).T + np.asarray(net.b[0], np.float64))
    h2 = np.tanh(h1 @ np.asarray(net.W[1], np.float64).T + np.asarray(net.b[1], np.float64))
    np.testing.assert_allclose(answer["hidden"][0], h1[0], atol=2e-4)
    np.testing.assert_allclose(answer["hidden"][1], h2[0], atol=2e-4)
    assert answer["label"] == str(answer["predicted"])  # no class names in the model: the indices


def test_browser_updates_while_a_stroke_is_drawn(browser, model_path):
    """Live: a stroke that lasts a second sends requests before the pen lifts (throttled, not one
    per pointer event), and the last answer shown is the finished stroke's."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    with _serving(model_path) as srv:
        _open_page(browser, srv)
        pad = browser.find_element(By.ID, "pad")
        actions = ActionBuilder(browser, mouse=PointerInput(interaction.POINTER_MOUSE, "slow"), duration=25)
        pointer = actions.pointer_action
        points = [(int(60 * np.cos(t)), int(80 * np.sin(t))) for t in np.linspace(0, 2 * np.pi, 41)]
        pointer.move_to(pad, *points[0])
        pointer.pointer_down()
        for x, y in points[1:]:
            pointer.move_to(pad, x, y)  # 40 moves of 25 ms each: a one-second stroke
        pointer.pointer_up()
        actions.perform()
        predicted = _read_prediction(browser, 1)
        sent = browser.execute_script(
            "return performance.getEntriesByType('resource').filter(e => e.name.endsWith('/api/predict')).length")
        assert 3 <= sent <= 20, sent  # during the stroke (throttled to one per 150 ms) and at its end
        canvas_png = base64.b64decode(browser.execute_script("return document.getElementById('pad').toDataURL('image/png')").split(",")[1])
        assert _predict(srv, {"image": _data_url(canvas_png)})[2]["predicted"] == predicted
