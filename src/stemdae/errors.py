"""Exception hierarchy. Every error a user can cause is a ``StemdaeError``.

``cli.py`` prints a ``StemdaeError`` as one line and exits with code 2; other
exceptions keep their traceback (they are bugs).
"""

import reprlib


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


def shorten(value: object, limit: int = 80) -> str:
    """One line of at most ``limit`` characters: for quoting user data in a message.

    A hostile or huge value (a metadata field, a file name) must not turn one
    error line into megabytes, so messages quote user data through this.
    Strings are cut (control characters escaped); anything else goes through
    :mod:`reprlib`, which bounds nested containers without formatting them whole.

    Examples
    --------
    >>> shorten("x" * 100, 10)
    'xxxxxxxxx…'
    >>> shorten("two\\nlines"), shorten("Été")
    ('two\\\\nlines', 'Été')
    >>> shorten({"instrument": ["a"] * 10**6})
    "{'instrument': ['a', 'a', 'a', 'a', 'a', 'a', ...]}"
    """
    if isinstance(value, str):
        text = value[: limit + 1]
    else:
        bounded = reprlib.Repr()
        bounded.maxstring = bounded.maxother = limit
        bounded.maxlevel = 3  # at most 6 items per level: a few hundred leaves, whatever the nesting
        text = bounded.repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WriteError(StemdaeError):
    """An output cannot be written: names the file and the cause (disk full, read-only, permission)."""
