"""Subnormals flushed to zero inside the training loop (xpnet/ops/fpenv.py): the real MXCSR bits,
checked through real float32 arithmetic, and restored afterwards."""

import platform

import numpy as np
import pytest

from xpnet.ops import fpenv

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="FTZ/DAZ are x86 bits")

TINY = np.array([1e-30], np.float32)
SUBNORMAL = np.array([1e-40], np.float32)


def test_flush_inside_and_restore_outside():
    assert TINY * np.float32(1e-10) != 0 and not fpenv.flushing()  # gradual underflow by default
    with fpenv.flush_denormals() as on:
        assert on and fpenv.flushing()
        assert (TINY * np.float32(1e-10))[0] == 0  # FTZ: a subnormal result is zero
        assert (SUBNORMAL * np.float32(1e10))[0] == 0  # DAZ: a subnormal input reads as zero
        with fpenv.flush_denormals():
            pass
        assert fpenv.flushing()  # an inner block restores the outer one's mode
    assert not fpenv.flushing()
    assert (SUBNORMAL * np.float32(1e10))[0] == pytest.approx(1e-30, rel=1e-3)


def test_the_trainer_flushes_while_it_runs_only():
    from xpnet import MLP
    from xpnet.optim.optimizers import get_optimizer
    from xpnet.training.trainer import Trainer

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 20)).astype(np.float32), rng.integers(0, 3, 64)
    trainer = Trainer(MLP([20, 8, 3], seed=0), get_optimizer("adam", lr=1e-3), X, y, batch_size=16)
    seen = []
    trainer.step_callbacks.append(lambda tr: seen.append(fpenv.flushing()))
    trainer.run(1)
    assert seen == [True] * 4 and not fpenv.flushing()
