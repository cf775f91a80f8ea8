"""The course project's analysis: hidden-size sweeps, the init/activation study, tuning, reports.

``from xpnet.experiments import init_study, run_sweep, run_tune, build_report`` — each module
imports matplotlib/Optuna only inside the functions that need them.
"""

from xpnet.experiments.init_study import init_study
from xpnet.experiments.report import build_report
from xpnet.experiments.sweep import run_sweep
from xpnet.experiments.tune import run_tune

__all__ = ["build_report", "init_study", "run_sweep", "run_tune"]
