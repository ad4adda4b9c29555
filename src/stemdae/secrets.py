"""Credentials out of everything printed, logged, raised or written: the one masking helper.

- :func:`mask_uri` removes ``user:password@`` from a URL (``https://``,
  ``postgresql+psycopg2://``, ``s3://`` ...) and masks the values of secret
  query parameters (``token=``, ``password=`` ...): ``https://u:p@host/x?token=t``
  -> ``https://***@host/x?token=***``.
- :func:`mask_text` does the same to every URL inside free text (an exception
  message, a traceback, a log line) and replaces any literal ``secrets`` too.
- :class:`MaskingFilter` applies :func:`mask_text` to every log record (``cli.py``
  installs it on the root handlers).

Level 1: imports nothing of the project.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"
SECRET_KEYS = ("password", "passwd", "pwd", "token", "access_token", "secret", "api_key", "apikey", "key",
               "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "auth")

# scheme://userinfo@ : userinfo is anything up to the last "@" before the host part ends
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#@'\"<>]*(?:@[^\s/?#@'\"<>]*)*)@")
_QUERY = re.compile(r"(?P<key>[?&;](?:" + "|".join(re.escape(k) for k in SECRET_KEYS) + r")=)(?P<value>[^&;#\s'\"<>]+)",
                    re.IGNORECASE)


def mask_uri(uri: str) -> str:
    """``uri`` without its user and password, and with secret query values masked.

    Strings that are not URLs come back unchanged.

    Examples
    --------
    >>> mask_uri("postgresql+psycopg2://alice:s3cret@db:5432/optuna")
    'postgresql+psycopg2://***@db:5432/optuna'
    >>> mask_uri("http://127.0.0.1:5000")
    'http://127.0.0.1:5000'
    """
    return mask_text(str(uri))


def mask_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every URL's credentials masked and every literal secret replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", str(text))
    text = _QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def uri_secrets(uri: str | None) -> list[str]:
    """The password (raw and percent-decoded) and secret query values of ``uri``, for :func:`mask_text`."""
    if not uri:
        return []
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return []
    found = [password, unquote(password)] if password else []
    if password:  # an HTTP Basic header quoted in a message carries base64("user:password")
        user = unquote(parts.username or "")
        found.append(base64.b64encode(f"{user}:{unquote(password)}".encode()).decode())
    found += [m["value"] for m in _QUERY.finditer(uri)]
    return found


class MaskingFilter(logging.Filter):
    """Masks credentials in every record's message (and its formatted exception) before a handler sees it."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
            return True
        record.msg, record.args = mask_text(message, self.secrets), None
        if record.exc_info:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True
