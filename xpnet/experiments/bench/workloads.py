"""One timed training run per (implementation, device, shape, batch size), same data and recipe.

Every implementation trains the same MLP (ReLU hidden layers, softmax output, Adam,
float32, He-style init by its own library) on the same normalised Fashion-MNIST arrays
for ``epochs`` epochs (xpnet through ``training.recipe``, the one run path); the first epoch is a warm-up (JIT, cuBLAS handles, allocations)
and is excluded from the median. Each run happens in its own subprocess (see
``runner.py``) so thread pools and GPU memory of one library never slow another.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

IMPLEMENTATIONS = ("xpnet", "xpnet-1thread", "xpnet-eager", "torch", "torch-graph", "jax", "sklearn")


def _median_after_warmup(epoch_s):
    timed = epoch_s[1:] if len(epoch_s) > 1 else epoch_s
    return statistics.median(timed)


def step_flops(sizes, m: int = 1) -> int:
    """FLOPs of one training step on ``m`` samples, GEMMs only: forward and weight gradients of
    every layer, input gradients of every layer but the first (2 FLOPs per multiply-add)."""
    macs = [int(a) * int(b) for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * int(m) * (2 * sum(macs) + sum(macs[1:]))


def bench_split(data: dict, name: str = "bench"):
    """The bench's arrays (normalised once by the parent, the same for every peer) as a recipe
    :class:`~xpnet.training.recipe.Split`: all training rows, no validation part."""
    from xpnet.training.recipe import Split

    n_classes = int(max(data["y_train"].max(), data["y_test"].max())) + 1
    side = int(round(data["X_train"].shape[1] ** 0.5))
    shape = (side, side) if side * side == data["X_train"].shape[1] else (data["X_train"].shape[1],)
    return Split(name, "bench arrays", data["X_train"], data["y_train"], None, None, data["X_test"], data["y_test"],
                 None, tuple(str(c) for c in range(n_classes)), shape)


def run_xpnet(data, device, sizes, batch_size, epochs, lr, seed, graph=True):
    """xpnet through the one run path (``training.recipe``): the ``plain`` recipe (Adam, constant
    lr) at this lr and batch size; on a GPU the CUDA-graph trainer where supported."""
    from xpnet import backend
    from xpnet.training.recipe import RunConfig, make_run_trainer
    from xpnet.training.trainer import evaluate

    cfg = RunConfig(recipe="plain", hidden=tuple(sizes[1:-1]), lr=lr, batch_size=batch_size, epochs=epochs, seed=seed,
                    device=device, graph=graph).resolve()
    trainer = make_run_trainer(cfg, bench_split(data))
    history = trainer.run(cfg.epochs)
    net = trainer.net
    test = evaluate(net, data["X_test"], data["y_test"])
    name = backend.device_name(device)
    if net.device.is_gpu and graph:  # say which loop was timed: a silent eager fallback would mislead
        reason = getattr(trainer, "fallback_reason", None) or getattr(trainer, "graph_reason", "")
        name += f" (eager: {reason})" if reason else " (CUDA graph)"
    # How the CPU run used the machine: its BLAS cores, and the share of steps whose batch the side core gathered.
    steps = len(history) * trainer.n_batches
    threads = {"blas_cores": trainer.blas_cores_in_use(), "gathered_ahead": trainer.gathered_ahead / steps}
    return [r["epoch_s"] for r in history.records], test["accuracy"], name, threads


def _torch_model(torch, sizes, device):
    layers = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-2], sizes[-1]))
    return torch.nn.Sequential(*layers).to(device)


def _torch_device(torch, device):
    if device == "cpu":
        return torch.device("cpu"), f"{torch.get_num_threads()} threads"
    index = int(device.split(":")[1]) if ":" in device else 0
    return torch.device("cuda", index), torch.cuda.get_device_name(index)


def _torch_accuracy(torch, model, X, y, dev):
    with torch.no_grad():
        correct = 0
        for start in range(0, len(X), 4096):
            xb = torch.as_tensor(X[start : start + 4096], device=dev)
            correct += int((model(xb).argmax(1).cpu().numpy() == y[start : start + 4096]).sum())
    return correct / len(X)


def run_torch(data, device, sizes, batch_size, epochs, lr, seed):
    """PyTorch eager: the everyday way to write this loop (Adam with foreach)."""
    import torch

    torch.manual_seed(seed)
    dev, name = _torch_device(torch, device)
    model = _torch_model(torch, sizes, dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    X = torch.as_tensor(data["X_train"], device=dev)
    y = torch.as_tensor(data["y_train"], device=dev)
    n = len(X)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    epoch_s = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        epoch_s.append(time.perf_counter() - start)
    return epoch_s, _torch_accuracy(torch, model, data["X_test"], data["y_test"], dev), name


def run_torch_graph(data, device, sizes, batch_size, epochs, lr, seed):
    """PyTorch's strongest form here: one whole step captured in a CUDA graph and replayed."""
    import torch

    if device == "cpu":
        raise RuntimeError("torch-graph needs a CUDA device")
    torch.manual_seed(seed)
    dev, name = _torch_device(torch, device)
    model = _torch_model(torch, sizes, dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr, capturable=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    X = torch.as_tensor(data["X_train"], device=dev)
    y = torch.as_tensor(data["y_train"], device=dev)
    n = (len(X) // batch_size) * batch_size  # full batches only: a graph has static shapes
    static_x = X[:batch_size].clone()
    static_y = y[:batch_size].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm up on a side stream before capture, as the docs require
            opt.zero_grad(set_to_none=True)
            loss_fn(model(static_x), static_y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = loss_fn(model(static_x), static_y)
        static_loss.backward()
        opt.step()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    epoch_s = []
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen).to(dev)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            torch.index_select(X, 0, idx, out=static_x)
            torch.index_select(y, 0, idx, out=static_y)
            graph.replay()
        torch.cuda.synchronize()
        epoch_s.append(time.perf_counter() - start)
    return epoch_s, _torch_accuracy(torch, model, data["X_test"], data["y_test"], dev), name


def run_sklearn(data, device, sizes, batch_size, epochs, lr, seed):
    """scikit-learn's MLPClassifier, one ``partial_fit`` pass per epoch, no L2 (alpha=0)."""
    import warnings

    from sklearn.neural_network import MLPClassifier

    if device != "cpu":
        raise RuntimeError("scikit-learn runs on the CPU only")
    clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), solver="adam", learning_rate_init=lr,
                        batch_size=batch_size, alpha=0.0, shuffle=True, random_state=seed)
    classes = np.arange(sizes[-1])
    epoch_s = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            start = time.perf_counter()
            clf.partial_fit(data["X_train"], data["y_train"], classes=classes)
            epoch_s.append(time.perf_counter() - start)
    return epoch_s, float((clf.predict(data["X_test"]) == data["y_test"]).mean()), "scikit-learn"


def run_jax(data, device, sizes, batch_size, epochs, lr, seed):
    """JAX with the whole step in one ``jax.jit``: gather, forward, softmax-CE, ``jax.grad``, Adam
    (PyTorch's formulation, by hand: optax is not needed for ten lines). Same arrays, lr, batch
    size and batch order as xpnet (``default_rng([seed, epoch]).permutation``); He-normal init."""
    import jax
    import jax.numpy as jnp

    if device != "cpu":
        raise RuntimeError("the jax peer is measured on the CPU")
    cpu = jax.devices("cpu")[0]
    key = jax.random.PRNGKey(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.nn.initializers.he_normal()(sub, (n_in, n_out), jnp.float32), jnp.zeros(n_out, jnp.float32)))
    params = jax.device_put(params, cpu)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, zeros, jnp.zeros((), jnp.int32))
    X, y = jax.device_put(jnp.asarray(data["X_train"]), cpu), jax.device_put(jnp.asarray(data["y_train"], jnp.int32), cpu)
    b1, b2, eps = 0.9, 0.999, 1e-8

    def logits(params, x):
        for W, b in params[:-1]:
            x = jax.nn.relu(x @ W + b)
        W, b = params[-1]
        return x @ W + b

    def loss(params, x, labels):
        z = logits(params, x)
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, labels[:, None], axis=1)[:, 0])

    @jax.jit
    def step(state, idx):
        params, m, v, t = state
        grads = jax.grad(loss)(params, X[idx], y[idx])
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        params = jax.tree_util.tree_map(lambda p, m, v: p - lr / bc1 * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps),
                                        params, m, v)
        return params, m, v, t

    n = len(data["X_train"])
    epoch_s = []
    for epoch in range(epochs):
        order = jax.device_put(np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32), cpu)
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]  # sliced before the clock
        jax.block_until_ready(batches)
        start = time.perf_counter()
        for idx in batches:
            state = step(state, idx)
        jax.block_until_ready(state)
        epoch_s.append(time.perf_counter() - start)
    predict = jax.jit(lambda params, x: jnp.argmax(logits(params, x), axis=1))
    acc = float((np.asarray(predict(state[0], jnp.asarray(data["X_test"]))) == data["y_test"]).mean())
    return epoch_s, acc, f"jax {jax.__version__} CPU, {len(jax.devices('cpu'))} device"


def run_xpnet_eager(data, device, sizes, batch_size, epochs, lr, seed):
    return run_xpnet(data, device, sizes, batch_size, epochs, lr, seed, graph=False)


RUNNERS = {"xpnet": run_xpnet, "xpnet-1thread": run_xpnet, "xpnet-eager": run_xpnet_eager, "torch": run_torch,
           "torch-graph": run_torch_graph, "jax": run_jax, "sklearn": run_sklearn}
# Implementations whose child process gets every library's thread count set to 1 (OpenBLAS, OpenMP, Numba).
SINGLE_THREAD = ("xpnet-1thread",)


def run_case(case: dict, data: dict) -> dict:
    """Run one case and return it with ``epoch_s``, ``median_epoch_s``, ``samples_per_s``, ``test_acc``."""
    epoch_s, acc, device_name, *extra = RUNNERS[case["impl"]](
        data, case["device"], case["sizes"], case["batch_size"], case["epochs"], case["lr"], case["seed"])
    median = _median_after_warmup(epoch_s)
    n = len(data["X_train"])
    flops = step_flops(case["sizes"]) * n  # one epoch: every sample once
    return dict(case, epoch_s=epoch_s, median_epoch_s=median, samples_per_s=n / median, test_acc=acc,
                device_name=device_name, epoch_gflop=flops / 1e9, gflops=flops / median / 1e9, **(extra[0] if extra else {}))
