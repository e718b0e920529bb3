"""A raw TWS wire client for tests that need to see exact bytes and frames."""

from __future__ import annotations

import asyncio
import contextlib


def frame(*fields: object) -> bytes:
    """A client frame: length prefix, NUL-terminated fields."""
    payload = "".join(f"{f}\0" for f in fields).encode()
    return len(payload).to_bytes(4, "big") + payload


def handshake(versions: str = "v157..178") -> bytes:
    """``API\\0`` and the length-prefixed version range."""
    raw = versions.encode()
    return b"API\0" + len(raw).to_bytes(4, "big") + raw


def contract(symbol: str) -> tuple[object, ...]:
    """The contract12 block for a SMART US stock."""
    return (0, symbol, "STK", "", "", "", "", "SMART", "", "USD", "", "")


def start_api(client_id: int) -> bytes:
    return frame(71, 2, client_id, "")


def req_mkt_data(req_id: int, symbol: str, generic: str = "233", snapshot: bool = False) -> bytes:
    return frame(1, 11, req_id, *contract(symbol), 0, generic, int(snapshot), 0, "")


def req_mkt_depth(req_id: int, symbol: str, rows: int = 10, smart: bool = True) -> bytes:
    return frame(10, 5, req_id, *contract(symbol), rows, int(smart), "")


def req_tick_by_tick(req_id: int, symbol: str, kind: str) -> bytes:
    return frame(97, req_id, *contract(symbol), kind, 0, 0)


def req_contract_details(req_id: int, symbol: str) -> bytes:
    return frame(9, 8, req_id, *contract(symbol), 0, "", "", "")


def split_frames(data: bytes) -> tuple[list[list[str]], bytes]:
    """Complete frames as field lists, and the incomplete rest."""
    frames = []
    pos = 0
    while len(data) - pos >= 4:
        size = int.from_bytes(data[pos : pos + 4], "big")
        if len(data) - pos - 4 < size:
            break
        frames.append(data[pos + 4 : pos + 4 + size].decode().split("\0")[:-1])
        pos += 4 + size
    return frames, data[pos:]


class WireClient:
    """An asyncio stream connection that records every byte received."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = bytearray()

    @classmethod
    async def connect(cls, port: int) -> WireClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_for(self, seconds: float) -> bytes:
        """Everything that arrives within ``seconds`` (less if the server closes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20), left)
            except TimeoutError:
                break
            if not chunk:
                break
            self.received += chunk
        return bytes(self.received)

    async def read_frames(self, count: int, within: float = 5.0) -> list[list[str]]:
        """Wait for at least ``count`` complete frames; returns all complete frames so far."""
        async with asyncio.timeout(within):
            while True:
                frames, _ = split_frames(bytes(self.received))
                if len(frames) >= count:
                    return frames
                chunk = await self.reader.read(1 << 20)
                if not chunk:
                    return frames
                self.received += chunk

    async def closed_by_server(self, within: float = 5.0) -> bool:
        """True once the server closed the socket (EOF or reset) within ``within``; then closes ours."""
        try:
            async with asyncio.timeout(within):
                while chunk := await self.reader.read(1 << 20):
                    self.received += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            return False
        await self.close()
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
