"""Typed exceptions: the CLI prints ``str(err)`` on one line and exits non-zero.

Every error a user can cause (bad names, shapes, files, devices) is one of these, so
callers can catch ``XpnetError`` and never show a traceback.
"""


class XpnetError(Exception):
    """Base class of every error xpnet raises on purpose."""

    exit_code = 1


class ConfigError(XpnetError, ValueError):
    """An unknown name or an out-of-range setting (activation, init, lr, sizes...)."""


class ShapeError(XpnetError, ValueError):
    """Arrays whose shapes do not fit the model or each other."""


class DataError(XpnetError):
    """Input data that is missing, corrupt, or not what the model expects."""


class ChecksumError(DataError):
    """A downloaded or cached file does not match its published checksum."""


class DownloadError(DataError):
    """No mirror delivered a file."""


class DeviceError(XpnetError, RuntimeError):
    """The requested device is unavailable (no CuPy, no CUDA device) or ran out of memory."""


class ModelFileError(XpnetError):
    """A model or checkpoint file that is missing, corrupt, foreign or incompatible."""


class DivergedError(XpnetError):
    """Training produced a non-finite loss."""


class OutputError(XpnetError):
    """A file or folder that cannot be written (missing or read-only folder, disk full...)."""
