"""One timed training run per (implementation, device, shape, batch size), same data and recipe.

Every implementation trains the same MLP (ReLU hidden layers, softmax output, Adam,
float32, He-style init by its own library) on the same normalised Fashion-MNIST arrays
for ``epochs`` epochs; the first epoch is a warm-up (JIT, cuBLAS handles, allocations)
and is excluded from the median. Each run happens in its own subprocess (see
``runner.py``) so thread pools and GPU memory of one library never slow another.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

IMPLEMENTATIONS = ("xpnet", "xpnet-eager", "torch", "torch-graph", "sklearn")


def _median_after_warmup(epoch_s):
    timed = epoch_s[1:] if len(epoch_s) > 1 else epoch_s
    return statistics.median(timed)


def run_xpnet(data, device, sizes, batch_size, epochs, lr, seed, graph=True):
    """xpnet; on a GPU the CUDA-graph trainer where supported (``graph=False``: the eager loop)."""
    import xpnet
    from xpnet import backend

    net = xpnet.MLP(sizes, device=device, seed=seed)
    trainer_cls = xpnet.Trainer
    if net.device.is_gpu and graph:
        from xpnet.training.graph import make_trainer as trainer_cls
    trainer = trainer_cls(net, xpnet.optim.optimizers.Adam(lr), data["X_train"], data["y_train"], batch_size=batch_size, seed=seed)
    history = trainer.run(epochs)
    test = xpnet.evaluate(net, data["X_test"], data["y_test"])
    name = backend.device_name(device)
    if net.device.is_gpu and graph:  # say which loop was timed: a silent eager fallback would mislead
        reason = getattr(trainer, "fallback_reason", None) or getattr(trainer, "graph_reason", "")
        name += f" (eager: {reason})" if reason else " (CUDA graph)"
    return [r["epoch_s"] for r in history.records], test["accuracy"], name


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


def run_xpnet_eager(data, device, sizes, batch_size, epochs, lr, seed):
    return run_xpnet(data, device, sizes, batch_size, epochs, lr, seed, graph=False)


RUNNERS = {"xpnet": run_xpnet, "xpnet-eager": run_xpnet_eager, "torch": run_torch, "torch-graph": run_torch_graph, "sklearn": run_sklearn}


def run_case(case: dict, data: dict) -> dict:
    """Run one case and return it with ``epoch_s``, ``median_epoch_s``, ``samples_per_s``, ``test_acc``."""
    epoch_s, acc, device_name = RUNNERS[case["impl"]](
        data, case["device"], case["sizes"], case["batch_size"], case["epochs"], case["lr"], case["seed"])
    median = _median_after_warmup(epoch_s)
    return dict(case, epoch_s=epoch_s, median_epoch_s=median, samples_per_s=len(data["X_train"]) / median,
                test_acc=acc, device_name=device_name)
