"""Run ``kernels/*.cu`` unchanged on the CPU: see README.md beside this file."""

from .emulator import (  # noqa: F401
    Emulator,
    EmulatorError,
    FakeStream,
    FreedMemoryError,
    NumpyBlas,
    emulate_colmajor_gemm,
    emulate_matmul_rowmajor,
    install,
    parse_kernels,
)
