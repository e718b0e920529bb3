"""Headless Chromium driven over the Chrome DevTools Protocol, with the standard library only.

``--remote-debugging-pipe`` makes Chromium read CDP commands from file descriptor 3 and write
answers and events to descriptor 4, each message a JSON text ended by a NUL byte. That is the
transport Puppeteer and Playwright use for their own browsers; it needs no websocket client (no
new dependency) and no port to discover or leave open.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = "No Chromium found: `apt-get install chromium` (Debian) or run `make test`, which installs it."
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-pipe",
)  # fmt: skip
COMMAND_SECONDS = 15.0


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


class CdpError(RuntimeError):
    """Chromium answered a command with an error."""


class Browser:
    """One Chromium process; :meth:`new_page` opens a tab driven through a flat CDP session."""

    def __init__(
        self, process: asyncio.subprocess.Process, reader: asyncio.StreamReader, write_fd: int
    ) -> None:
        self._process = process
        self._reader = reader
        self._write_fd = write_fd
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pump = asyncio.create_task(self._read_messages(), name="cdp-reader")

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        """One CDP command; returns its ``result`` or raises :class:`CdpError`."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        answer = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = answer
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        async with asyncio.timeout(COMMAND_SECONDS):
            reply = await answer
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def new_page(self, width: int = 1280, height: int = 900) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        return page

    async def _read_messages(self) -> None:
        while True:
            raw = await self._reader.readuntil(b"\0")
            message = json.loads(raw[:-1])
            waiter = self._waiting.pop(message.get("id", -1), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        os.close(self._write_fd)
        if self._process.returncode is None:
            self._process.terminate()
            try:
                async with asyncio.timeout(5):
                    await self._process.wait()
            except TimeoutError:
                self._process.kill()
                await self._process.wait()


class Page:
    """One tab."""

    def __init__(self, browser: Browser, session: str) -> None:
        self._browser = browser
        self._session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self._browser.send(method, params, self._session)

    async def goto(self, url: str) -> None:
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {result['errorText']}")
        # navigate answers when the request starts; the tests want the page's script running.
        loaded = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        for _ in range(int(COMMAND_SECONDS / 0.05)):
            if await self.evaluate(loaded):
                return
            await asyncio.sleep(0.05)
        raise CdpError(f"{url} did not finish loading within {COMMAND_SECONDS} s")

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))  # noqa: ASYNC240 - a test helper, one small file
        return path


@contextlib.asynccontextmanager
async def headless_chromium(binary: str, profile_dir: Path) -> AsyncIterator[Browser]:
    """Start Chromium with a throwaway profile; its CDP pipe becomes descriptors 3 and 4 in the child."""
    commands_read, commands_write = os.pipe()
    events_read, events_write = os.pipe()
    # A tiny Python trampoline moves our pipe ends onto the descriptors Chromium expects, then
    # becomes Chromium (a shell could not: dash only redirects descriptors 0-9).
    trampoline = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
        "os.execv(sys.argv[3], sys.argv[3:])"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", trampoline, str(commands_read), str(events_write),
        binary, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank",
        pass_fds=(commands_read, events_write),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    os.close(commands_read)
    os.close(events_write)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 << 20)  # screenshots arrive as one big message
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(events_read, "rb", buffering=0)
    )
    browser = Browser(process, reader, commands_write)
    try:
        yield browser
    finally:
        await browser.close()
        transport.close()
