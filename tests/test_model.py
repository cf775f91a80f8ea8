"""Model construction, layout conventions, typed errors and save/load."""

import json

import numpy as np
import pytest

import xpnet
from xpnet.errors import ConfigError, DataError, DeviceError, ModelFileError, OutputError, ShapeError


def test_layout_follows_the_course_notes_and_torch():
    net = xpnet.MLP([784, 120, 64, 10])
    assert [p.shape for p in net.params] == [(120, 784), (120,), (64, 120), (64,), (10, 64), (10,)]
    assert net.n_params == 784 * 120 + 120 + 120 * 64 + 64 + 64 * 10 + 10
    # params are views into the one flat buffer the optimizer updates
    net.flat_params[:] = 0
    assert all(float(abs(p).sum()) == 0 for p in net.params)


@pytest.mark.parametrize("init,expected", [("normal", 0.01), ("xavier", (1 / 400) ** 0.5), ("he", (2 / 400) ** 0.5)])
def test_init_scales(init, expected):
    net = xpnet.MLP([400, 300, 10], init=init, dtype="float64")
    assert net.W[0].std() == pytest.approx(expected, rel=0.02)
    assert not net.b[0].any()


def test_forward_matches_the_formula():
    rng = np.random.default_rng(0)
    net = xpnet.MLP([5, 4, 3], dtype="float64", activation="tanh")
    X = rng.standard_normal((6, 5))
    A1 = np.tanh(X @ net.W[0].T + net.b[0])
    Z2 = A1 @ net.W[1].T + net.b[1]
    P = np.exp(Z2) / np.exp(Z2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(net.predict_proba(X), P, rtol=1e-12)
    np.testing.assert_array_equal(net.predict(X), P.argmax(axis=1))


def test_same_seed_same_network():
    a, b = xpnet.MLP([10, 8, 3], seed=5), xpnet.MLP([10, 8, 3], seed=5)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not np.array_equal(a.flat_params, xpnet.MLP([10, 8, 3], seed=6).flat_params)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    net = xpnet.MLP([12, 7, 4], activation="leaky_relu", leaky_slope=0.05)
    net.normalizer = xpnet.Normalizer().fit(rng.integers(0, 256, (20, 12)).astype(np.uint8))
    net.class_names = ["a", "b", "c", "d"]
    path = tmp_path / "m.npz"
    net.save(path)
    loaded = xpnet.load(path)
    X = rng.integers(0, 256, (9, 12)).astype(np.uint8)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    assert loaded.class_names == net.class_names and loaded.config() == net.config()
    with np.load(path, allow_pickle=False) as npz:
        assert {"W0", "b0", "W1", "b1", "meta"} <= set(npz.files)
        meta = json.loads(str(npz["meta"]))
    assert meta["config"]["sizes"] == [12, 7, 4] and meta["xpnet_version"] == xpnet.__version__
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind


def test_load_errors(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found: .*nope.npz"):
        xpnet.load(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip")
    with pytest.raises(ModelFileError, match="junk.npz is not a readable .npz file"):
        xpnet.load(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    with pytest.raises(ModelFileError, match="not an xpnet file"):
        xpnet.load(foreign)
    net = xpnet.MLP([4, 3, 2])
    net.save(tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["W1"] = np.ones((5, 5), dtype=np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match="incompatible model.*parameter 2 has shape \\(5, 5\\)"):
        xpnet.load(tmp_path / "bad.npz")


def test_save_to_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(OutputError, match="folder .*missing does not exist"):
        xpnet.MLP([3, 2]).save(tmp_path / "missing" / "m.npz")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"sizes": [784, 0, 10]}, r"layer sizes must be positive, got \[784, 0, 10\]"),
        ({"sizes": [784]}, "at least an input and an output size"),
        ({"sizes": [4, 3], "activation": "swish"}, "unknown activation 'swish': choose one of relu, leaky_relu, sigmoid, tanh"),
        ({"sizes": [4, 3], "init": "glorot"}, "unknown init 'glorot': choose one of he, xavier, normal"),
        ({"sizes": [4, 3], "output": "softmax", "loss": "binary_cross_entropy"}, "binary_cross_entropy needs the sigmoid output"),
        ({"sizes": [4, 3], "dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"sizes": [4, 3], "dtype": "float16"}, "unsupported dtype 'float16': use 'float32' or 'float64'"),
        ({"sizes": [4, 3], "device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        xpnet.MLP(**kwargs)


def test_data_errors():
    net = xpnet.MLP([4, 3, 3])
    with pytest.raises(ShapeError, match="X has 5 features but the network expects 4"):
        net.loss_and_grad(np.zeros((2, 5)), np.zeros(2, dtype=int))
    with pytest.raises(ShapeError, match="X has 2 samples but y has 3"):
        net.loss_and_grad(np.zeros((2, 4)), np.zeros(3, dtype=int))
    with pytest.raises(DataError, match=r"labels must be in \[0, 2\], found values from 0 to 7"):
        net.loss_and_grad(np.zeros((2, 4)), np.array([0, 7]))
    bad = np.zeros((2, 4))
    bad[1, 2] = np.nan
    with pytest.raises(DataError, match="X contains NaN or infinite values"):
        net.predict(bad)
    with pytest.raises(DataError, match="NaN or infinite"):
        net.loss_and_grad(np.full((2, 4), np.inf), np.zeros(2, dtype=int))


def test_gpu_without_cupy_is_a_device_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    with pytest.raises(DeviceError, match=r"--device gpu needs CuPy, which is not installed: install CuPy .*xpnet\[gpu\]"):
        xpnet.MLP([4, 3], device="gpu")
