"""The draw-a-digit page of ``xpnet demo``: a tiny local HTTP server around one saved model.

Why the standard library (``http.server.ThreadingHTTPServer``) and not Flask/FastAPI: the page
needs four routes (three static files, one JSON endpoint), is served to one person on
127.0.0.1, and must work from a bare ``pip install xpnet[images]`` without network access. A
framework would add a dependency (and for FastAPI an ASGI server) to every install for what is
about a hundred lines here; what it would give us — routing, JSON errors, body limits — is
written out below and tested (tests/test_demo.py). ``http.server`` is not meant for the open
internet (no TLS, basic request parsing), which is why the default host is 127.0.0.1.

The API: ``GET /api/model`` (classes, layer sizes, data set) and ``POST /api/predict`` with a
JSON body ``{"image": "data:image/png;base64,..."}`` (the canvas, or an uploaded file) or
``{"pixels": [[...], ...]}`` (a grayscale array, 0..255 or 0..1). The image goes through
:func:`xpnet.data.images.mnist_style`, the same conversion as ``xpnet predict``, and the answer
holds the class probabilities, the 28×28 input the model saw and the hidden activations.
Every bad request gets a 4xx with ``{"error": message}``; nothing a client sends reaches a
traceback, and the server keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np

from xpnet.errors import ConfigError, DataError, XpnetError

MAX_BODY = 8 * 1024 * 1024  # bytes of JSON per request: a phone photo as a data URL fits
MAX_PIXELS = 4096 * 4096  # decoded image size (a small PNG can inflate to gigabytes otherwise)
MAX_SIDE = 2048  # rows/columns of a "pixels" array
STATIC = {  # the only files served: no paths from the request reach the file system
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class RequestError(Exception):
    """A client error: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)


class DemoModel:
    """A loaded network and what the page needs from it, safe to call from many threads."""

    def __init__(self, net, name: str = "model"):
        if net.sizes[0] != 28 * 28:
            raise ConfigError(f"{name}: the demo reads 28×28 images, but the model has {net.sizes[0]} inputs")
        self.net = net
        self.name = name
        n_out = net.sizes[-1]
        self.classes = [str(c) for c in (net.class_names or range(n_out))]
        self._lock = threading.Lock()  # forward() reuses the network's buffers

    def info(self) -> dict:
        """What the page shows before the first drawing."""
        net = self.net
        return {"model": self.name, "classes": self.classes, "sizes": list(net.sizes),
                "activation": net.activation_name, "dataset": net.dataset,
                "draw": net.dataset in (None, "mnist"), "max_body": MAX_BODY}

    def classify(self, image: np.ndarray) -> dict:
        """Probabilities, the 28×28 input and the hidden activations for one MNIST-style image.

        The rows are fed as ``xpnet predict`` feeds them: [0, 1] pixels rescaled to the raw
        range the stored normalizer expects, then :meth:`MLP.predict_proba`."""
        from xpnet import backend

        net = self.net
        rows = image.reshape(1, -1).astype(np.float64)
        if net.normalizer is not None:
            rows = rows * (1.0 / net.normalizer.scale)
        with self._lock:
            proba = net.predict_proba(rows)[0]
            # predict_proba's forward pass left the hidden layers' outputs in the cache (eval mode: no dropout)
            hidden = [backend.to_numpy(a)[0].astype(np.float64).copy() for a in net._cache[1][1:]]
        order = np.argsort(-proba)
        return {"probabilities": [float(p) for p in proba], "predicted": int(order[0]),
                "label": self.classes[int(order[0])], "input": np.round(image, 4).tolist(),
                "hidden": [np.round(h, 4).tolist() for h in hidden]}


def image_from_request(payload) -> np.ndarray:
    """The MNIST-style (28, 28) image of a ``/api/predict`` JSON body (RequestError if unusable)."""
    from xpnet.data.images import decode_image, mnist_style

    if not isinstance(payload, dict):
        raise RequestError(400, 'the body must be a JSON object: {"image": "data:image/png;base64,..."} or {"pixels": [[...]]}')
    if ("image" in payload) == ("pixels" in payload):
        raise RequestError(400, 'give exactly one of "image" (a data URL or base64 PNG/JPEG) and "pixels" (a 2-D array)')
    if "image" in payload:
        text = payload["image"]
        if not isinstance(text, str):
            raise RequestError(400, '"image" must be a string: a data URL or base64 image')
        if text.startswith("data:"):
            head, sep, text = text.partition(",")
            if not sep or not head.endswith(";base64"):
                raise RequestError(400, '"image" data URL must be base64-encoded (data:image/...;base64,...)')
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, '"image" is not valid base64') from None
        try:
            return decode_image(data, "the image", max_pixels=MAX_PIXELS)
        except DataError as exc:  # undecodable, blank, or more than MAX_PIXELS pixels
            raise RequestError(422, str(exc)) from None
    pixels = payload["pixels"]
    if not isinstance(pixels, list) or not pixels or not all(isinstance(r, list) for r in pixels):
        raise RequestError(400, '"pixels" must be a non-empty 2-D array (a list of rows)')
    if len(pixels) > MAX_SIDE or any(len(r) > MAX_SIDE for r in pixels):
        raise RequestError(413, f'"pixels" may have at most {MAX_SIDE} rows and columns')
    if len({len(r) for r in pixels}) != 1 or not pixels[0]:
        raise RequestError(400, '"pixels" rows must all have the same, non-zero length')
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in pixels for v in r):
        raise RequestError(400, '"pixels" must hold numbers only')
    try:
        gray = np.asarray(pixels, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        raise RequestError(400, '"pixels" values must be finite numbers in [0, 255] (or [0, 1])') from None
    if not np.isfinite(gray).all() or gray.min() < 0 or gray.max() > 255:
        raise RequestError(400, '"pixels" values must be finite numbers in [0, 255] (or [0, 1])')
    if gray.max() > 1.0:
        gray = gray / 255.0
    try:
        return mnist_style(gray, "the drawing")
    except DataError as exc:
        raise RequestError(422, str(exc)) from None


def _static(name: str) -> bytes:
    return resources.files("xpnet.demo").joinpath("static", name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    """The routes; ``self.server.model`` is the :class:`DemoModel`."""

    server_version = "xpnet-demo"
    timeout = 15  # seconds a slow client may take per read (a short body never hangs a thread)
    quiet = True

    # --------------------------------------------------------------- responses
    def _send(self, status: int, body: bytes, content_type: str, headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers=None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json; charset=utf-8", headers)

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (bad request line, header too long, unknown method) as JSON
        too; an unknown method is a 405 (the base class says 501, a server error)."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":  # unparsable request line: answer in HTTP/1.0
            self.request_version = "HTTP/1.0"
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command!r} is not allowed"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._json(code, {"error": message or phrase})

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        if not self.quiet:
            super().log_message(format, *args)

    # --------------------------------------------------------------- routes
    def do_GET(self):  # noqa: N802 - http.server's naming
        self._guarded(self._get)

    def do_HEAD(self):  # noqa: N802
        self._guarded(self._get)

    def do_POST(self):  # noqa: N802
        self._guarded(self._post)

    def _refuse_method(self):
        self._guarded(self._wrong_method)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _wrong_method(self):
        path = self._path()
        if path in STATIC or path == "/api/model":
            raise RequestError(405, f"{self.command} is not allowed on {path}: use GET")
        if path == "/api/predict":
            raise RequestError(405, f"{self.command} is not allowed on {path}: use POST")
        raise RequestError(404, f"no such page: {path}")

    def _path(self) -> str:
        return self.path.split("?", 1)[0].split("#", 1)[0]

    def _guarded(self, handler) -> None:
        try:
            handler()
        except RequestError as exc:
            headers = {}
            if exc.status == 405:
                headers["Allow"] = "POST" if self._path() == "/api/predict" else "GET, HEAD"
            self._json(exc.status, {"error": str(exc)}, headers)
        except XpnetError as exc:  # a typed error the checks above did not foresee: still the client's input
            self._json(422, {"error": str(exc)})
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug: say so without a traceback, log it, keep serving
            print(f"xpnet demo: internal error on {self.command} {self.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._json(500, {"error": "internal error (see the server's log)"})

    def _get(self):
        path = self._path()
        if path in STATIC:
            name, content_type = STATIC[path]
            self._send(200, _static(name), content_type)
        elif path == "/api/model":
            self._json(200, self.server.model.info())
        elif path == "/api/predict":
            raise RequestError(405, "GET is not allowed on /api/predict: POST a JSON body")
        else:
            raise RequestError(404, f"no such page: {path}")

    def _post(self):
        path = self._path()
        if path != "/api/predict":
            if path in STATIC or path == "/api/model":
                raise RequestError(405, f"POST is not allowed on {path}: use GET")
            raise RequestError(404, f"no such page: {path}")
        payload = self._read_json()
        image = image_from_request(payload)
        self._json(200, self.server.model.classify(image))

    def _read_json(self):
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self.close_connection = True  # the body, if any, stays unread
            raise RequestError(415, f"send the body as application/json, not {ctype or 'no content type'}")
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(411, "chunked bodies are not accepted: send a Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise RequestError(411, "a Content-Length header is required")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise RequestError(400, f"bad Content-Length {length!r}") from None
        if n < 0:
            self.close_connection = True
            raise RequestError(400, f"bad Content-Length {length!r}")
        if n > MAX_BODY:
            self.close_connection = True
            raise RequestError(413, f"the body is {n:,} bytes; at most {MAX_BODY:,} are accepted")
        body = self.rfile.read(n)
        if len(body) < n:
            self.close_connection = True
            raise RequestError(400, f"the body ended after {len(body):,} of {n:,} bytes")
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise RequestError(400, f"the body is not valid JSON ({exc})") from None
        except RecursionError:
            raise RequestError(400, "the body is not valid JSON (nested too deeply)") from None


class DemoServer(ThreadingHTTPServer):
    """A threading HTTP server holding the :class:`DemoModel`; port 0 picks a free port."""

    daemon_threads = True
    # The listen backlog: socketserver's default of 5 resets connections when a page (or a test)
    # opens a burst of requests at once; the work per request is bounded, so queue them instead.
    request_queue_size = 128

    def __init__(self, model: DemoModel, host: str = "127.0.0.1", port: int = 0, quiet: bool = True):
        handler = type("QuietHandler" if quiet else "LoudHandler", (Handler,), {"quiet": quiet})
        super().__init__((host, int(port)), handler)
        self.model = model

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


def make_server(model_path, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> DemoServer:
    """Load ``model_path`` (typed errors if unusable) and bind a server to it (not yet serving)."""
    from pathlib import Path

    from xpnet.io.npz import load

    path = Path(model_path)
    net = load(path)
    model = DemoModel(net, path.name)
    try:
        return DemoServer(model, host, port, quiet)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
