"""How many messages per second the simulator sends to one client (run by hand).

    .venv/bin/python bench/bench_simulator.py [--seconds 10] [--src other/src]

The simulator runs unthrottled (rate 0) in its own process (one core); this process is a raw-socket
client that does the handshake, subscribes Level 1 with RTVolume for the 15 ETFs, 3 smart depth books
and 3 tick-by-tick streams, then only counts frames. It prints msgs/s as measured by the reader, and
msgs per CPU second of the simulator process (from /proc): on a machine shared with other work the
second figure moves much less than the first. ``--src`` runs another checkout's simulator (a
before/after comparison with the same client).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ETFS = (
    "SPY",
    "QQQ",
    "IWM",
    "DIA",
    "XLK",
    "XLF",
    "XLE",
    "XLV",
    "XLY",
    "XLI",
    "XLP",
    "XLB",
    "XLRE",
    "XLU",
    "XLC",
)


def frame(*fields: object) -> bytes:
    payload = "".join(f"{f}\0" for f in fields).encode()
    return len(payload).to_bytes(4, "big") + payload


def contract(symbol: str) -> tuple[object, ...]:
    return (0, symbol, "STK", "", "", "", "", "SMART", "", "USD", "", "")


def requests() -> bytes:
    out = [frame(71, 2, 1, "")]
    for i, symbol in enumerate(ETFS):
        out.append(frame(1, 11, 100 + i, *contract(symbol), 0, "233", 0, 0, ""))
    for i, symbol in enumerate(ETFS[:3]):
        out.append(frame(10, 5, 200 + i, *contract(symbol), 10, 1, ""))
    for i, kind in enumerate(("AllLast", "BidAsk", "MidPoint")):
        out.append(frame(97, 300 + i, *contract(ETFS[i]), kind, 0, 0))
    return b"".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def count_frames(sock: socket.socket, seconds: float) -> tuple[int, int, float]:
    """Frames and bytes received during ``seconds`` after the first byte."""
    version = b"v157..178"
    sock.sendall(b"API\0" + len(version).to_bytes(4, "big") + version)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        buf += sock.recv(65536)
    buf = buf[4 + int.from_bytes(buf[:4], "big") :]
    sock.sendall(requests())
    frames = total = 0
    start = time.perf_counter()
    end = start + seconds
    pending = bytearray(buf)
    while True:
        data = sock.recv(1 << 20)
        if not data:
            break
        total += len(data)
        pending += data
        view = memoryview(pending)
        pos, n = 0, len(pending)
        while n - pos >= 4:
            size = int.from_bytes(view[pos : pos + 4], "big")
            if n - pos - 4 < size:
                break
            pos += 4 + size
            frames += 1
        view.release()
        del pending[:pos]
        if time.perf_counter() >= end:
            break
    return frames, total, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent / "src")
    args = parser.parse_args()
    port = free_port()
    src = args.src.resolve()
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "ingestion.simulator", "--port", str(port), "--control-port", "0"]
    server = subprocess.Popen([*command, "--rate", "0"], env=env, stderr=subprocess.DEVNULL)
    try:
        with connect(port) as sock:
            cpu_before = cpu_seconds(server.pid)
            frames, total, elapsed = count_frames(sock, args.seconds)
            cpu = cpu_seconds(server.pid) - cpu_before
            rss = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    print(f"{frames} messages, {total / 1e6:.1f} MB in {elapsed:.2f} s; simulator CPU {cpu:.2f} s")
    print(f"{frames / elapsed:,.0f} msgs/s  ({total / elapsed / 1e6:.1f} MB/s) to one client")
    print(f"{frames / cpu:,.0f} msgs per CPU second of the simulator; its RSS at the end {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
