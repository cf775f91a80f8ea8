"""``xpnet bench``: epoch times of xpnet on CPU/GPU against peers measured in the same run."""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path

import click

from xpnet.cli.options import DATASET_CHOICES, HiddenSizes, comma_list


@click.command(context_settings={"show_default": True})
@click.option("--device", "devices", default="cpu", callback=comma_list, help="Comma list: cpu,gpu.")
@click.option("--hidden", type=HiddenSizes(), multiple=True, default=None, help="One network's hidden layers (120,64); repeat to compare networks [default: --hidden 10 --hidden 1024 --hidden 120,64; with --to-accuracy 1024].")
@click.option("--batch-size", "batch_sizes", default=None, callback=comma_list, help="Comma list of batch sizes [default: 128; with --to-accuracy the recipe's 128].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs per run; the first is warm-up and excluded [default: 4; with --to-accuracy 8, the recipe's length].")
@click.option("--repeats", type=click.IntRange(min=1), default=1, help="Runs per case, taken in turns across the implementations (the median epoch is over all runs).")
@click.option("--peers", default=None, callback=comma_list, help="Peers to measure in the same run: torch, torch-graph, jax (whole step in jax.jit, CPU), sklearn, xpnet-1thread (every library on one thread), xpnet-eager (GPU without graphs); skipped when not installed [default: torch,sklearn; with --to-accuracy torch].")
@click.option("--retake-slow", type=click.IntRange(min=0), default=1, help="Take a CPU run again, up to this many times, when the probe around it says the machine was in a slow phase (a small GEMM's two-thread speed-up under 0.8× the best the bench has seen); the fastest take counts, the others are listed in results.json and under the table. 0: every first take counts.")
@click.option("--busy", "busy_levels", default="0", callback=comma_list, help="Comma list: run every case with this many other busy programs (a pure-Python busy loop each, which ends with the bench) beside it, e.g. 0,1.")
@click.option("--case-timeout", type=click.FloatRange(min=1), default=1800, help="Seconds one case may take; a case past it is killed and reported as timed out (a thread pool that collapses under load).")
@click.option("--lr", type=float, default=None, help="Learning rate [default: 1e-3; with --to-accuracy the recipe's peak 2e-3].")
@click.option("--dataset", type=click.Choice(DATASET_CHOICES), default="fashion-mnist")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder with the four IDX files (instead of looking --dataset up).")
@click.option("--to-accuracy", "target", type=click.FloatRange(0, 100, min_open=True), default=None, help="Time to accuracy instead: train the default recipe (one-cycle Adam, dropout, label smoothing) for --epochs on --seeds seeds, peers with the identical recipe; TARGET in % is met when the mean test accuracy reaches it. Writes OUT/tta.json.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, help="With --to-accuracy: seeds SEED, SEED+1, ... (interleaved across implementations).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="With --to-accuracy: threads of every library in each run (OpenMP/OpenBLAS/MKL/Numba, PyTorch's intra-op) [default: each library's own].")
@click.option("--limit", type=click.IntRange(min=100), default=None, help="Use only the first N training images (quick looks).")
@click.option("--seed", type=int, default=0)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write results.json, results.csv, results.md and plots here.")
def bench(devices, hidden, batch_sizes, epochs, repeats, retake_slow, peers, busy_levels, case_timeout, lr, dataset, data_dir, target, seeds, threads,
          limit, seed, out):
    """Time xpnet (Adam, float32) against PyTorch, JAX and scikit-learn on the same data, in one run.

    Prints a Markdown table of median epoch seconds (warm-up excluded), samples/s, achieved
    GFLOP/s (the step's GEMMs) and their % of the machine's peak — measured with a large float32
    GEMM per thread count before and after the cases (the higher kept), not assumed —, test
    accuracy, then the ratio of xpnet's time
    to each peer's (< 1 means xpnet is faster) and, with cpu and gpu, the GPU speed-up. Around
    each CPU run a small GEMM on one and on two threads says whether two cores ran apart (about
    1.5× on a 2-core VM; a run in a shared VM's slow phase, near 1.0×, is taken again, see
    --retake-slow, and what was set aside or still ran slow is noted under the table).

    \b
    With --to-accuracy TARGET: time to accuracy of one fixed recipe instead, e.g.
      xpnet bench --to-accuracy 98 --dataset mnist --data-dir DIR --peers torch --out DIR
    """
    from xpnet.experiments.bench.report import add_peak, summarise, write_outputs
    from xpnet.experiments.bench.runner import prepare_data, take_outside_slow_phases, unavailable_reason
    from xpnet.experiments.bench.workloads import IMPLEMENTATIONS, SINGLE_THREAD

    if target is not None:
        return _to_accuracy(devices, list(hidden) or [(1024,)], batch_sizes, epochs, peers or ("torch",), lr, dataset, data_dir, target, seeds,
                            threads, limit, seed, out)
    epochs = 4 if epochs is None else epochs
    hidden = list(hidden) or [(10,), (1024,), (120, 64)]
    if epochs < 2:
        raise click.BadParameter("time per epoch needs >= 2 epochs (the first is warm-up)", param_hint="--epochs")
    lr = 1e-3 if lr is None else lr
    peers = peers or ("torch", "sklearn")
    try:
        sizes_list = [int(b) for b in (batch_sizes or ("128",))]
    except ValueError:
        raise click.BadParameter(f"{','.join(batch_sizes)}: batch sizes must be integers", param_hint="--batch-size") from None
    shapes = hidden
    for device in devices:
        if device != "cpu" and not device.startswith("gpu"):
            raise click.BadParameter(f"{device!r}: use cpu, gpu or gpu:N", param_hint="--device")
    impls = ["xpnet", *[p for p in peers if p != "xpnet"]]
    unknown = [p for p in impls if p not in IMPLEMENTATIONS]
    if unknown:
        raise click.BadParameter(f"unknown peer {unknown[0]!r}: choose from {', '.join(IMPLEMENTATIONS[1:])}",
                                 param_hint="--peers")
    try:
        busy_list = [int(b) for b in busy_levels]
    except ValueError:
        busy_list = [-1]
    if any(b < 0 for b in busy_list):
        raise click.BadParameter(f"{','.join(busy_levels)}: numbers of busy programs are integers >= 0", param_hint="--busy")

    with tempfile.TemporaryDirectory(prefix="xpnet-bench-") as tmp:
        info = prepare_data(dataset, Path(tmp), limit, data_dir)
        click.echo(f"{info['dataset']}: {info['n_train']:,} train / {info['n_test']:,} test · Adam lr {lr:g} · "
                   f"float32 · {epochs} epochs (first excluded) × {repeats} · busy programs {busy_list}", err=True)
        peaks = {}
        if "cpu" in devices:
            from xpnet.experiments.bench.peak import measure_peaks
            from xpnet.ops.threads import usable_cores

            peaks = measure_peaks(sorted({1, usable_cores()}))
            click.echo("  float32 GEMM peak (1024³ matmul, best of 25): " + _peaks_text(peaks), err=True)
        results = []
        looks = []  # every look of the two-core probe, for what counts as a slow phase (peak.in_slow_phase)
        for shape in shapes:
            sizes = [info["n_features"], *shape, info["n_classes"]]
            for batch_size in sizes_list:
                for device in devices:
                    for busy in busy_list:
                        # Repeats go round the implementations (A B C A B C, not A A B B C C): this
                        # machine's speed drifts over minutes, and a drift then touches every peer alike.
                        cases = {}
                        for impl in impls:
                            case = {"impl": impl, "device": device, "sizes": sizes, "hidden": list(shape),
                                    "batch_size": batch_size, "epochs": epochs, "lr": lr, "seed": seed, "busy": busy}
                            reason = unavailable_reason(case)
                            if reason:
                                # Rows that can never exist (sklearn on GPU, graphs on CPU) are left out, not "skipped".
                                impossible = (impl in ("sklearn", "jax", "xpnet-1thread") and device != "cpu") or (
                                    impl in ("torch-graph", "xpnet-eager") and device == "cpu")
                                if not impossible:
                                    results.append(dict(case, skipped=reason))
                                continue
                            cases[impl] = case
                        runs = {impl: [] for impl in cases}
                        for r in range(repeats):
                            for impl, case in cases.items():
                                take = functools.partial(_take, dict(case, seed=seed + r), busy, Path(tmp), case_timeout,
                                                         1 if impl in SINGLE_THREAD else None, looks)
                                runs[impl].append(take_outside_slow_phases(
                                    take, retake_slow if device == "cpu" else 0, best=lambda: max(looks, default=None),
                                    say=lambda line: click.echo(f"  {'':<13} {line}", err=True)))
                        results.extend(_merge(impl_runs) for impl_runs in runs.values())
        if peaks:  # again at the end: the VM's speed drifts, and the higher of the two is the fairer denominator
            from xpnet.experiments.bench.peak import best_peaks

            end = measure_peaks(sorted(peaks))
            peaks = best_peaks(peaks, end)
            click.echo("  float32 GEMM peak at the end: " + _peaks_text(end) + "; the higher of the two: " +
                       _peaks_text(peaks), err=True)
        add_peak(results, peaks)
    best_look = max(looks, default=None)
    table = summarise(results, best_look)
    click.echo(table)
    if out:
        written = write_outputs(results, table, out, meta={"dataset": dataset, "epochs": epochs, "repeats": repeats,
                                                           "lr": lr, "limit": limit, "busy": busy_list,
                                                           "peak_gflops": {str(k): v for k, v in peaks.items()},
                                                           "two_cores_best": best_look})
        click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)


def _take(case, busy, tmp, case_timeout, threads, looks: list) -> dict:
    """One run of a case in its own process (beside ``busy`` busy programs), the machine's phase probed
    around it on the CPU (both looks added to ``looks``), and its log line."""
    from xpnet.experiments.bench.peak import two_core_speedup
    from xpnet.experiments.bench.runner import busy_processes, run_in_subprocess

    t0 = time.perf_counter()
    cpu = case["device"] == "cpu"
    before = two_core_speedup() if cpu else None
    with busy_processes(busy):
        res = run_in_subprocess(case, tmp, timeout=case_timeout, threads=threads)
    after = two_core_speedup() if cpu else None
    if before and after:  # the machine's phase around the run, the slower look
        res["two_cores"] = min(before, after)
        looks += [before, after]
    label = "-".join(map(str, case["sizes"]))
    status = (f"{res['median_epoch_s']:.3f} s/epoch, acc {res['test_acc'] * 100:.2f}%" if "error" not in res
              else f"error: {res['error']}")
    if res.get("gathered_ahead"):  # the CPU side core's share of the batches
        status += f", {res['gathered_ahead']:.0%} gathered ahead"
    if res.get("two_cores"):
        status += f", two cores {res['two_cores']:.2f}× one"
    click.echo(f"  {case['impl']:<13} {case['device']:<5} {label:<14} batch {case['batch_size']:<5} busy {busy} {status} "
               f"({time.perf_counter() - t0:.0f}s, load {res.get('load_before') or 0:.1f})", err=True)
    return res


def _peaks_text(peaks: dict) -> str:
    return ", ".join(f"{n} thread{'s' if n > 1 else ''} {g:.0f} GFLOP/s" for n, g in peaks.items())


def _to_accuracy(devices, hidden, batch_sizes, epochs, peers, lr, dataset, data_dir, target, seeds, threads, limit, seed,
                 out):
    """``--to-accuracy``: the default recipe for EPOCHS on every seed, xpnet and peers interleaved."""
    from xpnet.cli.options import RECIPES
    from xpnet.experiments.bench.runner import prepare_data, unavailable_reason
    from xpnet.experiments.bench.tta import TTA_IMPLS, recipe_case, run_tta, tta_table, write_tta

    impls = ["xpnet", *[p for p in peers if p != "xpnet"]]
    unknown = [p for p in impls if p not in TTA_IMPLS]
    if unknown:
        raise click.BadParameter(f"peer {unknown[0]!r} has no time-to-accuracy runner: choose from torch",
                                 param_hint="--peers")
    if len(hidden) != 1:
        raise click.BadParameter("time to accuracy takes one network", param_hint="--hidden")
    for device in devices:
        if device != "cpu" and not device.startswith("gpu"):
            raise click.BadParameter(f"{device!r}: use cpu, gpu or gpu:N", param_hint="--device")
    recipe = dict(RECIPES["default"])
    if batch_sizes:
        if len(batch_sizes) != 1 or not batch_sizes[0].isdigit():
            raise click.BadParameter("time to accuracy takes one integer batch size", param_hint="--batch-size")
        recipe["batch_size"] = int(batch_sizes[0])
    if lr is not None:
        recipe["lr"] = lr
    epochs = 8 if epochs is None else epochs
    case = recipe_case(recipe, hidden=list(hidden[0]), epochs=epochs, target=target / 100, dataset=dataset,
                       threads=threads)
    seed_list = list(range(seed, seed + seeds))
    with tempfile.TemporaryDirectory(prefix="xpnet-tta-") as tmp:
        info = prepare_data(dataset, Path(tmp), limit, data_dir)
        case["dataset"] = info["dataset"]
        click.echo(f"{info['dataset']}: {info['n_train']:,} train / {info['n_test']:,} test · time to {target:g}% · "
                   f"{'-'.join(map(str, [info['n_features'], *hidden[0], info['n_classes']]))} · Adam one-cycle peak "
                   f"{recipe['lr']:g} · batch {recipe['batch_size']} · dropout {recipe['dropout']:g} · label smoothing "
                   f"{recipe['label_smoothing']:g} · {epochs} epochs × seeds {seed_list} · "
                   f"{threads or 'default'} threads · first-call JIT excluded",
                   err=True)
        runnable = []
        for impl in impls:
            for device in devices:
                reason = unavailable_reason({"impl": impl, "device": device})
                if reason:
                    click.echo(f"  {impl} on {device}: skipped ({reason})", err=True)
                else:
                    runnable.append(impl)
        t0 = time.perf_counter()
        rows = run_tta(list(dict.fromkeys(runnable)), devices, seed_list, case, Path(tmp),
                       say=lambda line: click.echo(line, err=True))
    table = tta_table(rows)
    click.echo(table)
    if out:
        meta = {"dataset": info["dataset"], "n_train": info["n_train"], "n_test": info["n_test"], "epochs": epochs,
                "threads": threads,
                "seeds": seed_list, "target": target / 100, "limit": limit, "total_s": time.perf_counter() - t0,
                "timing": "wall time of training only (data in memory, no evaluation); each process first takes a "
                          "few warm-up steps on another model (Numba JIT compilation excluded)"}
        written = write_tta(rows, out, meta)
        click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)


def _merge(runs: list[dict]) -> dict:
    """One row from repeated runs: median over every timed epoch of every run."""
    import statistics

    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    epochs = [e for r in ok for e in (r["epoch_s"][1:] or r["epoch_s"])]
    merged = dict(ok[0])
    merged["median_epoch_s"] = statistics.median(epochs)
    scale = ok[0]["median_epoch_s"] / merged["median_epoch_s"]
    merged["samples_per_s"] = ok[0]["samples_per_s"] * scale
    if "gflops" in ok[0]:
        merged["gflops"] = ok[0]["gflops"] * scale
    merged["test_acc"] = statistics.mean(r["test_acc"] for r in ok)
    if all("gathered_ahead" in r for r in ok):
        merged["gathered_ahead"] = statistics.mean(r["gathered_ahead"] for r in ok)
    if any("two_cores" in r for r in ok):  # the slowest phase any of the runs met
        merged["two_cores"] = min(r["two_cores"] for r in ok if "two_cores" in r)
    aside = [s for r in runs for s in r.get("slow_takes", ())]
    if aside:
        merged["slow_takes"] = aside
    merged["runs"] = len(ok)
    return merged
