"""A plain Server-Sent Events reader over a raw socket: what any HTTP client sees of ``GET /events``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SseMessage:
    id: str | None
    data: dict[str, Any] | None
    comment: str | None = None


@dataclass
class SseStream:
    """One open ``GET /events``: status code, headers, then messages as they come."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str] = field(default_factory=dict)

    async def next(self, within: float) -> SseMessage:
        """The next message with data or a comment (the ``retry`` hint is skipped)."""
        async with asyncio.timeout(within):
            while True:
                fields: dict[str, str] = {}
                comment = None
                while True:
                    line = (await self.reader.readline()).decode()
                    if not line:
                        raise EOFError("the stream ended")
                    line = line.rstrip("\r\n")
                    if not line:
                        break
                    if line.startswith(":"):
                        comment = line[1:].strip()
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                if "data" in fields:
                    return SseMessage(fields.get("id"), json.loads(fields["data"]))
                if comment is not None:
                    return SseMessage(None, None, comment)

    async def until(self, event: str, within: float) -> SseMessage:
        """Skip messages until one whose ``event`` is ``event``."""
        async with asyncio.timeout(within):
            while True:
                message = await self.next(within)
                if message.data is not None and message.data["event"] == event:
                    return message

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def open_events(port: int, last_event_id: str | None = None, within: float = 5.0) -> SseStream:
    """Send the request and read the status line and headers (chunked body follows unparsed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
    writer.write(
        f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()
    )
    async with asyncio.timeout(within):
        status_line = (await reader.readline()).decode()
        headers = {}
        while (line := (await reader.readline()).decode().rstrip("\r\n")) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    stream = SseStream(_dechunked(reader, headers), writer, int(status_line.split()[1]), headers)
    return stream


def _dechunked(reader: asyncio.StreamReader, headers: dict[str, str]) -> asyncio.StreamReader:
    """The body as a reader of its own: chunked transfer decoded by a small pump task."""
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return reader
    body = asyncio.StreamReader()

    async def pump() -> None:
        try:
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    break
                body.feed_data(await reader.readexactly(size))
                await reader.readexactly(2)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            body.feed_eof()

    task = asyncio.get_running_loop().create_task(pump())
    body._pump = task  # type: ignore[attr-defined]  # kept alive with the reader
    return body
