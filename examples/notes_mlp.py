"""The course notes' network in plain NumPy: samples are COLUMNS, Z = W·A + b, plain gradient descent.

    python examples/notes_mlp.py                                   # Fashion-MNIST (Debian's package)
    python examples/notes_mlp.py --data-dir DIR   # MNIST
Forward:  Z[l] = W[l]·A[l-1] + b[l],  A[l] = ReLU(Z[l]),  last layer softmax.
Backward: dZ = A − Y,  dW = dZ·A[l-1]ᵀ/m,  db = Σ dZ/m,  dZ[l-1] = W[l]ᵀ·dZ ⊙ (Z[l-1] > 0).
xpnet.MLP computes exactly these gradients with samples as rows (tests/test_notes_example.py).
"""

import argparse
import gzip
import os
import time
from pathlib import Path

if __name__ == "__main__":  # before NumPy loads its BLAS: these GEMMs are small, threads cost more than they give
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402


def load_idx(path):
    """An IDX file (gzipped or not) as a NumPy array."""
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as fh:
        data = fh.read()
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]  # byte 3: ndim
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(shape)).reshape(shape)


def load(data_dir, split):
    """X (784, m) float32 in [0, 1] with one sample per column, y (m,) labels."""
    files = [sorted(Path(data_dir).glob(f"{split}-{kind}-idx*-ubyte*")) for kind in ("images", "labels")]
    if not all(files):
        raise SystemExit(f"{data_dir} has no {split}-images/labels IDX files (MNIST: --data-dir FOLDER)")
    images, labels = (load_idx(f[0]) for f in files)
    return np.divide(images.reshape(len(images), -1).T, 255, dtype=np.float32), labels.astype(np.int64)


def init(sizes, rng):
    """He initialisation: W[l] (n_l, n_{l-1}) ~ N(0, 2/n_{l-1}), b[l] = 0 (n_l, 1)."""
    return [(rng.normal(0, np.sqrt(2 / n_in), (n_out, n_in)), np.zeros((n_out, 1)))
            for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def forward(params, X):
    """All Z[l] and A[l] (A[0] = X); the last A is the softmax of the last Z."""
    Zs, As = [], [X]
    for l, (W, b) in enumerate(params):
        Z = W @ As[-1] + b
        if l < len(params) - 1:
            A = np.maximum(Z, 0)
        else:
            E = np.exp(Z - Z.max(axis=0, keepdims=True))  # softmax down each column
            A = E / E.sum(axis=0, keepdims=True)
        Zs, As = Zs + [Z], As + [A]
    return Zs, As


def backward(params, Zs, As, Y):
    """[(dW[l], db[l]), ...] of the mean cross-entropy, Y one-hot (k, m)."""
    m, dZ, grads = Y.shape[1], As[-1] - Y, [None] * len(params)
    for l in range(len(params) - 1, -1, -1):
        grads[l] = (dZ @ As[l].T / m, dZ.sum(axis=1, keepdims=True) / m)
        if l > 0:
            dZ = (params[l][0].T @ dZ) * (Zs[l - 1] > 0)
    return grads


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-limit", type=int, default=None, help="Use the first N training images.")
    args = p.parse_args(argv)
    start = time.perf_counter()
    (X, y), (Xt, yt) = load(args.data_dir, "train"), load(args.data_dir, "t10k")
    X, y = X[:, : args.train_limit], y[: args.train_limit]
    Y, m = np.eye(10, dtype=np.float32)[:, y], len(y)  # one-hot, one column per sample
    rng = np.random.default_rng(0)
    params = [(W.astype(np.float32), b.astype(np.float32)) for W, b in init([784, args.hidden, 10], rng)]
    bs = args.batch_size or m  # mini-batch gradient descent; 0 = the notes' full batch
    for epoch in range(args.epochs):
        order = rng.permutation(m)
        for s in range(0, m, bs):
            Zs, As = forward(params, X[:, (cols := order[s : s + bs])])
            grads = backward(params, Zs, As, Y[:, cols])
            params = [(W - args.lr * dW, b - args.lr * db) for (W, b), (dW, db) in zip(params, grads)]
        loss = -np.mean(np.log(forward(params, X)[1][-1][y, np.arange(m)] + 1e-12))
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {loss:.4f}")
    accuracy = np.mean(forward(params, Xt)[1][-1].argmax(axis=0) == yt)
    print(f"test accuracy {accuracy * 100:.2f}% (784-{args.hidden}-10, {time.perf_counter() - start:.1f}s)")
    return accuracy


if __name__ == "__main__":
    main()
