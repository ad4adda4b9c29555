"""Exception hierarchy. Every error a user can cause is a ``StemdaeError``.

``cli.py`` prints a ``StemdaeError`` as one line and exits with code 2; other
exceptions keep their traceback (they are bugs).
"""


class StemdaeError(Exception):
    """Base class of all errors caused by input, configuration or environment."""


class ConfigError(StemdaeError):
    """params.yaml (or an override) is invalid: names the file and dotted key."""


class CorpusError(StemdaeError):
    """Malformed metadata, a missing file, or a path escaping the corpus root."""


class AudioError(StemdaeError):
    """Unreadable, empty, silent, too short or non-finite audio."""


class CacheError(StemdaeError):
    """A derived cache (segments, features) is missing, stale or inconsistent."""


class ModelError(StemdaeError):
    """A model is missing, cannot be loaded, or produced invalid output."""


class TrackingError(StemdaeError):
    """The MLflow tracking store or Optuna storage is unreachable or inconsistent."""
