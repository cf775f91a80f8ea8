"""The ``xpnet`` command line.

Subcommands live in their own modules and are imported only when run, so ``xpnet --help``
never pays for NumPy, CuPy or matplotlib. Every :class:`~xpnet.errors.XpnetError` becomes
one line on stderr and a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import importlib
import sys

import click

# name -> (module, function, one-line help shown by `xpnet --help` without importing it)
COMMANDS = {
    "train": ("xpnet.cli.train", "train", "Train an MLP on MNIST / Fashion-MNIST / an IDX folder."),
    "evaluate": ("xpnet.cli.evaluate", "evaluate", "Loss, accuracy, per-class accuracy and confusion matrix of a model."),
    "predict": ("xpnet.cli.evaluate", "predict", "Classify PNG/JPEG images or an IDX file with a saved model."),
    "info": ("xpnet.cli.info", "info", "Versions, BLAS, GPU and data cache of this installation."),
    "selftest": ("xpnet.cli.selftest", "selftest", "Check the ops, the CUDA graph and training against the NumPy reference."),
    "gradcheck": ("xpnet.cli.info", "gradcheck", "Finite-difference check of backprop on a small random network."),
    "bench": ("xpnet.cli.bench", "bench", "Time xpnet on CPU/GPU against PyTorch, JAX and scikit-learn."),
    "sweep": ("xpnet.cli.experiments", "sweep", "Train a grid of configurations (hidden sizes, optimizers...)."),
    "analyze": ("xpnet.cli.experiments", "analyze", "Studies of a network's internals (init/activation histograms)."),
    "tune": ("xpnet.cli.experiments", "tune", "Hyperparameter search: grid, random or Bayesian (Optuna)."),
    "report": ("xpnet.cli.experiments", "report", "Assemble sweep/bench/analyze/tune results or a training run into report.md/.html with plots."),
    "lr-find": ("xpnet.cli.lr_find", "lr_find", "The learning-rate range test: loss against an exponentially rising lr."),
    "study": ("xpnet.cli.study", "study", "The course notes' study: hidden sizes, optimizers, batch sizes, recipes."),
    "export": ("xpnet.cli.export", "export", "Export a model to ONNX or a PyTorch state_dict (normalizer inside)."),
    "demo": ("xpnet.cli.demo", "demo", "A local web page: draw a digit and watch a model read it."),
    "import": ("xpnet.cli.export", "import_", "Import a PyTorch state_dict written by `xpnet export --format torch`."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        from xpnet.errors import XpnetError  # cheap: no numpy

        try:
            return super().invoke(ctx)
        except XpnetError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except MemoryError:
            click.echo("error: out of host memory; try a smaller --batch-size or model", err=True)
            ctx.exit(1)
        except Exception as exc:
            if type(exc).__name__ == "OutOfMemoryError":  # cupy.cuda.memory.OutOfMemoryError
                click.echo(f"error: GPU out of memory ({exc}); try a smaller --batch-size", err=True)
                ctx.exit(1)
            raise


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="xpnet", prog_name="xpnet")
def cli():
    """xpnet: a from-scratch multilayer perceptron on CPU (NumPy) or GPU (CuPy).

    \b
    Quick start:
      xpnet train --dataset fashion-mnist --hidden 1024 --epochs 20
      xpnet train --device gpu --hidden 120,64 --optimizer momentum --lr 0.05
      xpnet bench --device cpu,gpu --hidden 10 --hidden 256 --hidden 1024
    """


def _degrade_console() -> None:
    """On a console that cannot encode everything we print (a cp1252 Windows console, LC_ALL=C),
    replace what it cannot show instead of dying with a UnicodeEncodeError: "→", "µ", "·" and
    class names like "T-shirt/top" must never cost a traceback."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", "strict") == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):  # a detached or closed stream: leave it
                pass


def main(args=None) -> int:
    """Console entry point: usage errors become one ``error:`` line too (exit 2)."""
    _degrade_console()
    from xpnet.ops.threads import let_idle_workers_sleep  # NumPy-free: must run before NumPy loads OpenBLAS

    let_idle_workers_sleep()
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        result = cli.main(args=args, prog_name="xpnet", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
