"""Keys out of logs: query-string secrets are written as ``[redacted]``.

Devices authenticate with a header or, when they cannot set one, with ``?key=`` on the WebSocket
URL. daphne's access log writes WebSocket lines with the path alone, but HTTP lines with the
query string: a proxy that drops the ``Upgrade`` header turns a handshake into a plain
``GET /ws/?key=…`` (404), and daphne would print the key. So would ``manage.py runserver``,
whose access log goes through the logging module (``django.channels.server``).

:func:`install` wraps daphne's access-log writer (called from ``asgi.py``, which daphne imports
before it builds its server) and puts the filter on uvicorn's own log handlers, which uvicorn
sets up before it imports ``asgi.py`` (its WebSocket lines carry the query string);
:class:`RedactSecrets` is a logging filter on every handler of ``settings.LOGGING``.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from typing import Any
from urllib.parse import unquote_plus

# Query parameters that carry a credential, by their decoded, lower-cased name.
SECRET_NAMES = frozenset({"key", "api_key", "apikey", "token", "access_token", "auth", "password"})
# Any query parameter: its name as written (percent-encoded or not) and its value, up to the
# next separator. ``/ws/?%6Bey=…`` is ``key=`` to the server (parse_qs decodes names).
QUERY_PARAMETER = re.compile(r"([?&;])([^=&;\s\"'?]*)=([^&;\s\"']*)")
REDACTED = "[redacted]"


def _secret_name(name: str) -> bool:
    decoded = name
    for _ in range(3):  # %256Bey is %6Bey once decoded: decode until it stays the same
        decoded, before = unquote_plus(decoded), decoded
        if decoded == before:
            break
    return decoded.strip().lower() in SECRET_NAMES


def redact(text: str) -> str:
    """``text`` with every credential in a query string replaced by ``[redacted]``: the value
    of each parameter whose name, percent-decoded and in any case, names a credential."""
    if "=" not in text:
        return text
    return QUERY_PARAMETER.sub(
        lambda m: f"{m[1]}{m[2]}={REDACTED}" if _secret_name(m[2]) else m[0], text
    )


# Line breaks and other control characters (C0, DEL, C1, Unicode line and paragraph
# separators): a device-supplied value holding one would write a forged line into the log.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` on one line: each control character written as its escape (``\\n``)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def clean(text: str) -> str:
    """What a log line may hold of ``text``: redacted (:func:`redact`) and on one line."""
    return escape_controls(redact(text))


class RedactSecrets(logging.Filter):
    """A logging filter: the formatted message, redacted and on one line (the record is kept;
    a traceback, formatted apart from the message, keeps its lines).

    Redacts inside the record's arguments where that is enough, so that formatters which unpack
    ``record.args`` themselves (uvicorn's access log) still work; otherwise the whole message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            if clean(message) == message:
                return True
            if isinstance(record.args, tuple):
                record.args = tuple(clean(a) if isinstance(a, str) else a for a in record.args)
            if isinstance(record.msg, str):
                record.msg = clean(record.msg)
            message = record.getMessage()
        except Exception:
            return True  # a broken record is logging's own problem to report
        cleaned = clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install() -> None:
    """Make the server's own logs redact query-string secrets (idempotent)."""
    _install_daphne()
    if "uvicorn" in sys.modules:
        _install_uvicorn()


def _install_uvicorn() -> None:
    """The filter on every handler of uvicorn's loggers (by default ``uvicorn`` and
    ``uvicorn.access`` have them; ``uvicorn.error`` may, with a ``--log-config``)."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())


def _install_daphne() -> None:
    """Wrap daphne's access-log writer (no daphne, no-op)."""
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:
        return
    original = AccessLogGenerator.write_entry
    if getattr(original, "redacts", False):
        return

    @functools.wraps(original)
    def write_entry(self: Any, host: Any, date: Any, request: str, *args: Any, **kw: Any) -> Any:
        return original(self, host, date, clean(request), *args, **kw)

    write_entry.redacts = True  # type: ignore[attr-defined]
    AccessLogGenerator.write_entry = write_entry
