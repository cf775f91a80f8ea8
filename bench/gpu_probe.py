"""First look at the GPU path on a device (GPU issue, step 2): one short run, everything printed.

On synthetic 60000×784 data (no files needed): ``make_trainer`` for 784-1024-10, batch 128, Adam,
4 epochs (epoch seconds, which loop ran and why); CUDA-event timing of 1,000 replays of the
captured step (µs per step); per-kernel durations over 20 replays from ``torch.profiler`` (CUPTI;
nsys is not on the device machine). Writes ``probe.json`` into ``--out``.

    python bench/gpu_probe.py --out /tmp/gpu            # on the GPU machine
    python bench/gpu_probe.py --dry-run --out /tmp/x    # CPU, tiny: checks the script itself (tests do)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import xpnet
from xpnet import backend
from xpnet.training.graph import make_trainer


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="CPU and tiny sizes: exercise the script, measure nothing")
    args = ap.parse_args(argv)
    n, hidden, epochs, device = (600, 32, 2, "cpu") if args.dry_run else (60_000, 1024, 4, "gpu")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 784)).astype(np.float32)
    y = rng.integers(0, 10, n)
    net = xpnet.MLP([784, hidden, 10], device=device)
    trainer = make_trainer(net, xpnet.optim.Adam(1e-3), X, y, batch_size=128)
    history = trainer.run(epochs)
    result = {
        "device": backend.device_name(device), "shape": f"784-{hidden}-10", "batch_size": 128, "n": n,
        "trainer": type(trainer).__name__, "graph_reason": getattr(trainer, "graph_reason", ""),
        "fallback_reason": getattr(trainer, "fallback_reason", None),
        "epoch_s": [r["epoch_s"] for r in history.records], "train_acc": history["train_acc"],
    }
    result["median_epoch_s_after_first"] = statistics.median(result["epoch_s"][1:])
    S = getattr(trainer, "_dev", None)
    graph = getattr(S, "graph", None)
    if graph is not None:
        cp = net.xp
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        with S.stream:
            start.record(S.stream)
            for _ in range(1000):
                graph.launch(S.stream)
            stop.record(S.stream)
            stop.synchronize()
        result["graph_step_us"] = cp.cuda.get_elapsed_time(start, stop) * 1000 / 1000
        result["kernels"] = _profile(graph, S.stream)
    if hasattr(trainer, "close"):
        trainer.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "kernels"}, indent=1))
    for row in result.get("kernels", []):
        print(f"{row['us_per_replay']:9.2f} us  {row['calls_per_replay']:4.1f}x  {row['name']}")
    return result


def _profile(graph, stream, replays: int = 20) -> list[dict]:
    """Per-kernel device time per replay, from torch.profiler (CUPTI sees CuPy's launches too)."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError as exc:
        return [{"name": f"torch.profiler unavailable: {exc}", "us_per_replay": 0.0, "calls_per_replay": 0.0}]
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.launch(stream)
        stream.synchronize()
        torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        device_us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
        if device_us:
            rows.append({"name": ev.key, "us_per_replay": device_us / replays, "calls_per_replay": ev.count / replays})
    rows.sort(key=lambda r: -r["us_per_replay"])
    rows.append({"name": f"(profiled wall time {time.perf_counter() - t0:.3f}s)", "us_per_replay": 0.0, "calls_per_replay": 0.0})
    return rows


if __name__ == "__main__":
    main()
