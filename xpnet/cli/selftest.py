"""``xpnet selftest``: the GPU path (or the CPU kernels) checks itself; see :mod:`xpnet.selftest`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"show_default": True})
@click.option("--device", default="cpu", help="cpu, gpu or gpu:N.")
@click.option("--quick", is_flag=True, help="Fewer repetitions and smaller runs (e.g. under compute-sanitizer).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every row, the environment and the timings here as JSON (rewritten after each section).")
def selftest(device, quick, json_path):
    """Check this installation's ops, CUDA graph and training against the NumPy reference.

    \b
    Sections: (a) environment, (b) every op of the contract against the NumPy reference
    (float32/float64, odd shapes, NaN-filled outputs, argued tolerances, the GEMM in all four
    transpositions), (c) the captured CUDA-graph step against the eager step, (d) a short
    training run and one float64 epoch against the CPU, (e) timings (reported, never asserted).
    Exits 1 on any correctness failure; speed never fails it. On the CPU it checks the Numba
    kernels, and the graph rows say "not applicable".

    \b
    Examples:
      xpnet selftest --device gpu --json selftest.json
      xpnet selftest --device cpu --quick
    """
    from xpnet import selftest as st
    from xpnet.fileio import check_writable

    if json_path is not None:
        check_writable(json_path)

    def on_section(report, name):
        click.echo(report.format_section(name) + "\n")
        if json_path is not None:
            st.write_json(report, json_path)

    report = st.run(device, quick=quick, on_section=on_section)
    click.echo(report.format().rsplit("\n\n", 1)[-1])
    if json_path is not None:
        click.echo(f"wrote {json_path}", err=True)
    if report.failed:
        names = ", ".join(c.name for c in report.failed[:5]) + (" ..." if len(report.failed) > 5 else "")
        click.echo(f"error: {len(report.failed)} check(s) failed: {names}", err=True)
        click.get_current_context().exit(1)
