"""``xpnet study``: the course notes' study (library: :mod:`xpnet.experiments.study`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from xpnet.cli.options import HiddenSizes, build_config, comma_list, run_options
from xpnet.experiments.study import PARTS


@click.command(context_settings={"show_default": True})
@run_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/study"),
              help="Report folder: README.md, results.json, figures.")
@click.option("--parts", default=",".join(PARTS), callback=comma_list,
              help="Comma list of parts: " + ", ".join(PARTS) + ".")
@click.option("--hidden", type=HiddenSizes(), multiple=True, default=["10", "256", "512", "1024"],
              help="Networks of part 1, repeated (--hidden 10 --hidden 1024); the last is used by part 4 (and part 2 "
              "unless --optimizer-hidden).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, help="Seeds SEED..SEED+N-1 (parts 1 and 4).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of parts 1 and 4 [default: the recipe's 20].")
@click.option("--optimizer-epochs", type=click.IntRange(min=1), default=10, help="Epochs of part 2.")
@click.option("--optimizer-hidden", type=HiddenSizes(), default=None, help="Hidden layers of part 2's network "
              "[default: the last --hidden].")
@click.option("--batch-hidden", type=HiddenSizes(), default="256", help="Hidden layers of part 3's network.")
@click.option("--batch-budget", type=click.FloatRange(min=0, min_open=True), default=60.0,
              help="Training seconds per method in part 3.")
@click.option("--batch-points", type=click.IntRange(min=2), default=120,
              help="About this many validation samples per method in part 3 (at regular step intervals).")
@click.option("--stochastic-rows", type=click.IntRange(min=10), default=None,
              help="Train batch size 1 in part 3 on the first N training rows only [default: all].")
@click.option("--keep", is_flag=True, help="Keep the results of the parts not in --parts from OUT/results.json "
              "(redo one part; part 4 reuses a kept part 1).")
@click.option("--note", default=None, help="A sentence for the report's header (how the study was run).")
@click.option("--limit", type=click.IntRange(min=20), default=None, help="Use only the first N training images (quick runs).")
def study(out, parts, hidden, seeds, epochs, optimizer_epochs, optimizer_hidden, batch_hidden, batch_budget, batch_points,
          stochastic_rows, keep, note, limit, **opts):
    """The course notes' study: hidden sizes, optimizers, batch sizes, plain vs default recipe, init.

    \b
    Writes OUT/README.md (the report: each figure's caption states its numbers), OUT/results.json
    and the figures. --recipe is part 1's recipe (parts 2 and 3 use 'plain'; part 4 compares the two);
    --config gives the data and the network's activation, init and dtype. The measured duration of
    the committed MNIST study is in docs/study/README.md:
      xpnet study --dataset mnist --data-dir DIR --out docs/study
    """
    from xpnet.experiments.study import portable_command, run_study

    base = build_config(opts, limit=limit)
    command = portable_command(sys.argv[sys.argv.index("study"):]) if "study" in sys.argv else "xpnet study"
    t0 = time.perf_counter()
    run_study(base, out, parts=parts, hiddens=hidden, n_seeds=seeds, epochs=epochs, optimizer_epochs=optimizer_epochs,
              optimizer_hidden=optimizer_hidden,
              batch_hidden=batch_hidden, batch_budget_s=batch_budget, batch_points=batch_points,
              stochastic_rows=stochastic_rows, command=command, keep=keep, note=note, say=click.echo)
    click.echo(f"wrote {out / 'README.md'} ({(time.perf_counter() - t0) / 60:.1f} min)")
