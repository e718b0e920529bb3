"""``GET /events`` (Server-Sent Events) and ``GET /timeline``.

The event stream is a small ASGI response of its own rather than Starlette's StreamingResponse:
it waits for the reader's disconnect at the same time as for the next event, so that a closed
tab frees its slot at once, not at the next keep-alive. Every stream ends in ``feed.close``,
whichever way it ends (reader gone, reader too slow, daemon stopping).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ingestion.api.parts import DaemonParts
from ingestion.live_events import EventFeed, Listener, TooManyListeners
from ingestion.timeline import DEFAULT_HOURS, MAX_HOURS

KEEP_ALIVE_SECONDS = 15.0
# How long the end of a stream may wait for the reader's socket.
END_SECONDS = 1.0
# Browsers wait this long before reconnecting a broken EventSource (the SSE "retry" field).
RETRY_MS = 1000
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class EventStreamResponse(Response):
    """One reader's stream: a retry hint, then each message of ``listener`` and keep-alive comments."""

    media_type = "text/event-stream"

    def __init__(self, feed: EventFeed, listener: Listener, keep_alive: float | None = None) -> None:
        # Not Response.__init__: it would announce "content-length: 0" for a body that never ends.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            *((name.lower().encode(), value.encode()) for name, value in SSE_HEADERS.items()),
        ]
        self._feed = feed
        self._listener = listener
        self._keep_alive = KEEP_ALIVE_SECONDS if keep_alive is None else keep_alive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send(
                {"type": "http.response.body", "body": f"retry: {RETRY_MS}\n\n".encode(), "more_body": True}
            )
            pump = asyncio.ensure_future(self._pump(send))
            gone = asyncio.ensure_future(_disconnected(receive))
            # A reader that stopped reading leaves the pump waiting for its socket; dropped, it ends here.
            dropped = asyncio.ensure_future(self._listener.ended.wait())
            tasks = (pump, gone, dropped)
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if gone not in done:
                # Our end of the stream. A reader that reads sees it end; for one that does not, uvicorn
                # closes the connection once we return without having finished the response.
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(END_SECONDS):
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the reader went away while we wrote
        finally:
            self._feed.close(self._listener)

    async def _pump(self, send: Send) -> None:
        """Until the listener is dropped: each message, or a comment after a quiet keep-alive period."""
        while True:
            try:
                async with asyncio.timeout(self._keep_alive):
                    message = await self._listener.next()
            except TimeoutError:
                message = b": keep-alive\n\n"
            if message is None:
                return
            await send({"type": "http.response.body", "body": message, "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def add_live_routes(app: FastAPI, daemon: DaemonParts) -> None:
    feed = daemon.feed
    timeline = daemon.timeline

    @app.get(
        "/events",
        summary="Server-Sent Events: every alert and state change, as on the ingestion:events channel",
        response_class=Response,
        responses={
            200: {"content": {"text/event-stream": {}}},
            503: {"description": "Every event stream slot is taken"},
        },
    )
    async def get_events(request: Request) -> Response:
        try:
            listener = feed.listen(request.headers.get("last-event-id"))
        except TooManyListeners as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "5"})
        return EventStreamResponse(feed, listener)

    @app.get("/timeline", summary="Connection states and outages over the last N hours")
    async def get_timeline(
        hours: float = Query(DEFAULT_HOURS, gt=0, le=MAX_HOURS, description="At most 168 (7 days)"),
    ) -> Any:
        return JSONResponse(await timeline.read(hours), headers={"Cache-Control": "no-store"})
