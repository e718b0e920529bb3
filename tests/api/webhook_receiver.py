"""A local HTTP endpoint that records webhook POSTs, like a Slack or Discord incoming webhook would.

It runs in the test's event loop on a loopback port, speaks just enough HTTP/1.1 (keep-alive,
Content-Length bodies) for httpx, can answer the next N requests with an error status, and can take
its time before answering (``answer_after``), to hold a delivery in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 500: "Internal Server Error", 503: "Unavailable"}


@dataclass
class WebhookReceiver:
    port: int = 0
    path: str = "/hooks/T0SECRET/B0SECRET/xyzTOKEN"
    received: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    answer_after: float = 0.0
    _failures: list[int] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order, before accepting again."""
        self._failures.extend(statuses)

    def events(self) -> list[str]:
        return [body.get("event", "") for body in self.received]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        # A client closing its keep-alive connection mid-read is how these connections end.
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while await self._one_request(reader, writer):
                pass
        self._writers.discard(writer)
        writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.attempts += 1
        await asyncio.sleep(self.answer_after)
        status = self._failures.pop(0) if self._failures else 200
        if status == 200 and lines[0].split(" ")[1] == self.path:
            self.received.append(json.loads(body))
        elif status == 200:
            status = 404
        writer.write(
            f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Length: 2\r\n\r\nok".encode()
        )
        await writer.drain()
        return True


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
