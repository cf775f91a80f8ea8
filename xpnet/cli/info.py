"""``xpnet info`` and ``xpnet gradcheck``."""

from __future__ import annotations

import os

import click

from xpnet import choices


@click.command()
def info():
    """Versions of xpnet, Python, NumPy (and its BLAS), the GPU stack (CuPy, CUDA, NVRTC, cuBLAS, nvmath), the GPUs, and the data cache."""
    import platform

    import numpy as np

    from xpnet import __version__, backend
    from xpnet.data import cache_dir, cached_datasets

    click.echo(f"xpnet   {__version__}")
    click.echo(f"python  {platform.python_version()} ({platform.platform()})")
    click.echo(f"numpy   {np.__version__} (BLAS: {_blas_name(np)})")
    click.echo(f"cpu     {backend.device_name('cpu')}")
    from xpnet.ops.threads import IDLE_SLEEP_ENV, idle_workers_sleep, policy_mode, usable_cores

    click.echo(f"threads {usable_cores()} usable cores; BLAS threads per GEMM, mode {policy_mode()} "
               "(XPNET_BLAS_THREADS=run|shape|adaptive|N)")
    spin = ", ".join(f"{key}={os.environ.get(key, 'unset')}" for key in IDLE_SLEEP_ENV)
    click.echo(f"        idle BLAS/OpenMP workers {'sleep: Adam and the split step run on the BLAS cores' if idle_workers_sleep() else 'spin: Adam on one thread, no split step'} "
               f"({spin})")
    try:
        import numba

        from xpnet.ops import cblas

        split = ("one-hidden-layer steps split by units over the BLAS cores" if cblas.gemm_address("float32")
                 else "no split step: NumPy's BLAS is not an OpenBLAS xpnet can call")
        click.echo(f"numba   {numba.__version__} (fused CPU step and optimizer kernels on; {split})")
    except ImportError:
        click.echo("numba   not installed (pip install 'xpnet[fast]' for the fused CPU Adam)")
    _gpu_stack()
    click.echo(f"data    cache {cache_dir()} (set XPNET_DATA to move it)")
    found = cached_datasets()
    if not found:
        click.echo("        no data sets found yet")
    for name, path in found.items():
        click.echo(f"        {name}: {path}")


def _gpu_stack() -> None:
    """CuPy, CUDA runtime and driver, NVRTC, cuBLAS and nvmath versions, the GPUs, and whether
    the CUDA-graph step can run, with the full reason when not."""
    from importlib import metadata

    from xpnet import backend
    from xpnet.ops import cublas
    from xpnet.training.graph import capture_supported

    gpu = backend.gpu_info()
    if gpu is None:
        click.echo("cupy    not installed (pip install 'xpnet[gpu-cuda12]' or 'xpnet[gpu-cuda13]', "
                   "matching your driver's CUDA major, for --device gpu)")
    else:
        click.echo(f"cupy    {gpu.get('cupy')} (CUDA runtime {gpu.get('cuda_runtime')}, driver {gpu.get('cuda_driver')})")
        click.echo(f"nvrtc   {gpu.get('nvrtc')}")
        for i, name in enumerate(gpu.get("devices", [])):
            click.echo(f"gpu:{i}   {name}")
        if "error" in gpu:
            click.echo(f"gpu     error: {gpu['error']}")
    try:
        nvmath = metadata.version("nvmath-python")
    except metadata.PackageNotFoundError:
        click.echo("nvmath  not installed (the CUDA-graph step calls cuBLAS through it)")
    else:
        try:
            click.echo(f"nvmath  {nvmath} (cuBLAS {cublas.library_version()})")
        except Exception as exc:
            click.echo(f"nvmath  {nvmath} (cuBLAS: {exc})")
    ok, reason = capture_supported()
    click.echo("graph   CUDA-graph training step available" if ok else f"graph   CUDA-graph training step unavailable: {reason}")


def _blas_name(np) -> str:
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:
        return "unknown"


@click.command(context_settings={"show_default": True})
@click.option("--sizes", default="20,16,12,5", help="Layer sizes of the random network.")
@click.option("--activation", type=click.Choice(choices.ACTIVATIONS), default="tanh")
@click.option("--samples", type=click.IntRange(min=1), default=8)
@click.option("--l2", type=click.FloatRange(min=0), default=0.1)
@click.option("--seed", type=int, default=0)
def gradcheck(sizes, activation, samples, l2, seed):
    """Compare backprop with central finite differences (float64) and print the max relative error."""
    import numpy as np

    from xpnet.training.gradcheck import gradcheck as check
    from xpnet.nn.model import MLP

    try:
        layer_sizes = [int(s) for s in sizes.split(",")]
    except ValueError:
        raise click.BadParameter(f"{sizes!r} is not a comma-separated list of integers", param_hint="--sizes") from None
    rng = np.random.default_rng(seed)
    net = MLP(layer_sizes, activation=activation, dtype="float64", seed=seed)
    for b in net.b:
        b[...] = rng.uniform(0.05, 0.3, b.shape)
    X = rng.standard_normal((samples, layer_sizes[0]))
    y = rng.integers(0, layer_sizes[-1], samples)
    error = check(net, X, y, l2=l2)
    verdict = "OK" if error < 1e-6 else "MISMATCH"
    click.echo(f"{verdict}: max relative error {error:.3e} over {net.n_params} parameters "
               f"({'-'.join(map(str, layer_sizes))}, {activation}, l2={l2})")
    if error >= 1e-6:
        raise SystemExit(1)
