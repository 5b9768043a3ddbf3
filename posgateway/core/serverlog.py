"""uvicorn's own log: a client's invalid frame is the client's error, not a server traceback.

uvicorn's WebSocket protocol (websockets-sansio) answers a text frame that isn't valid UTF-8 by
closing with 1007, as RFC 6455 asks and as daphne does, but logs it with ``logger.exception``:
an ERROR with a traceback for every such frame, which an operator would take for a server fault.
:func:`install` (called from ``asgi.py``) makes that one record a WARNING without the traceback.
"""

from __future__ import annotations

import logging
import sys

INVALID_UTF8 = "Invalid UTF-8 sequence received from client."


class ClientFrameErrors(logging.Filter):
    """On ``uvicorn.error``: the invalid-UTF-8 record as a one-line WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == INVALID_UTF8 and record.exc_info:
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{INVALID_UTF8} Closed with 1007."
        return True


def install() -> None:
    """Idempotent; a no-op unless uvicorn is the server."""
    if "uvicorn" not in sys.modules:
        return
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ClientFrameErrors) for f in logger.filters):
        logger.addFilter(ClientFrameErrors())
