"""CSV downloads, streamed: the exports' text (payments.exports) as an HTTP response."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse


async def _in_thread(chunks: Iterator[str]) -> AsyncIterator[str]:
    # Each chunk is made in the request's own thread (thread-sensitive), where the database
    # cursor of the iterator lives; the event loop only passes the text on.
    done = object()
    step = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await step(chunks, done)) is not done:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()


def csv_response(
    request: HttpRequest, chunks: Iterator[str], filename: str
) -> StreamingHttpResponse:
    """A streamed CSV download named ``filename``.

    Under ASGI (daphne) Django buffers a synchronous iterator whole before sending it, so an
    ASGI request gets an asynchronous one; WSGI and the test client stream the plain iterator.
    """
    content: Iterator[str] | AsyncIterator[str] = chunks
    if isinstance(getattr(request, "_request", request), ASGIRequest):  # DRF wraps it
        content = _in_thread(chunks)
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response
