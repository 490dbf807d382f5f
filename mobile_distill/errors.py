"""One error family. The CLI turns an ``MdistillError`` into a one-line message and exit code 1."""


class MdistillError(Exception):
    """A user-facing error: the message names the bad thing and what to do about it."""


class ConfigError(MdistillError):
    """An unknown config key, a bad value, or an inconsistent combination."""


class RegistryError(MdistillError):
    """An unknown or duplicate name in a registry (models, losses, data sets)."""


class DataError(MdistillError):
    """A missing, corrupt or badly laid-out data set, image or archive."""


class CheckpointError(MdistillError):
    """A missing, unsafe or incompatible checkpoint."""


class DownloadError(MdistillError):
    """A failed, interrupted or corrupted download."""


class MissingDependencyError(MdistillError):
    """An optional package (or external tool such as npm) is not installed."""


class ExportError(MdistillError):
    """An export that cannot start or finish (bad options, degenerate model, missing converter), or,
    from ``export()`` by default, one whose files failed the parity gate (``report`` holds its rows)."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class BenchError(MdistillError):
    """A benchmark that cannot start (no export folder, bad options, no device)."""


class UnsupportedOpError(MdistillError):
    """A converted program holds an op that the CoreML reference interpreter does not implement."""


class StorageError(MdistillError):
    """A file that cannot be written: no space left, a read-only or forbidden folder."""
