"""Bad input: a fake gateway that misbehaves on purpose, and a fuzzer over the config loader.

The fake gateway (loopback, one thread) answers each connection of the daemon with the next
misbehaviour: garbage bytes, a truncated frame, a wrong protocol version, an oversized message;
after those it becomes a plain TCP proxy to the real simulator, so the run ends with the daemon
streaming and with an exactness check (nothing the simulator sent is missing in QuestDB).

The config fuzzer feeds ``ingestion.config.load_settings(path, environ)`` with hypothesis-made
files (random text, random bytes, YAML of random trees over the real section and key names) and
environments (the contract's variables and INGESTION__ names with random values): it must return
Settings or raise ConfigError with non-empty lines, never anything else.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml
from common import Options, Outcome
from harness import LOOPBACK, DaemonProcess, Stack, free_port, missing_rows, wait_settled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.config import ENVIRONMENT_KEYS, ConfigError, Settings, load_settings

BAD_MODES = ("garbage", "truncated", "wrong_version", "oversized")
OVERSIZED_BYTES = 32 * 1024 * 1024
FAST_RECONNECT = {
    "INGESTION__IBKR__RECONNECT__INITIAL_SECONDS": "0.5",
    "INGESTION__IBKR__RECONNECT__MAX_SECONDS": "2",
    "INGESTION__IBKR__CONNECT_TIMEOUT_SECONDS": "5",
}


def _frame(*fields: object) -> bytes:
    payload = "".join(f"{f}\0" for f in fields).encode()
    return len(payload).to_bytes(4, "big") + payload


class FakeGateway:
    """Each accepted connection gets the next mode of ``modes``; the last mode repeats."""

    def __init__(self, modes: tuple[str, ...], upstream_port: int) -> None:
        self.modes = modes
        self.upstream_port = upstream_port
        self.port = free_port()
        self.connections: list[tuple[float, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-gateway", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> FakeGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)

    async def _stop(self) -> None:
        # Close sockets rather than cancel handlers: each handler then ends by itself on EOF.
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0.2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.modes[min(len(self.connections), len(self.modes) - 1)]
        self.connections.append((time.monotonic(), mode))
        self._writers.add(writer)
        try:
            if mode == "proxy":
                await self._proxy(reader, writer)
                return
            await reader.read(64)  # the client's "API\0" + version range
            await self._misbehave(mode, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the daemon hung up: that is one of the acceptable reactions
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _misbehave(mode: str, writer: asyncio.StreamWriter) -> None:
        if mode == "garbage":
            writer.write(os.urandom(8192))
        elif mode == "truncated":
            writer.write(_frame(178, "20250102 09:30:00 EST")[:9])
        elif mode == "wrong_version":
            writer.write(_frame(42, "20250102 09:30:00 EST"))
        elif mode == "oversized":
            writer.write(_frame(178, "20250102 09:30:00 EST"))
            writer.write(OVERSIZED_BYTES.to_bytes(4, "big") + b"4\0" * (OVERSIZED_BYTES // 2))
        await writer.drain()
        await asyncio.sleep(3.0)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(1 << 16):
                dst.write(data)
                await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.close()


def gateway(options: Options, workdir: Path) -> list[Outcome]:
    """One line per misbehaviour, then one for streaming through the proxy with nothing lost."""
    outcomes: list[Outcome] = []
    stack = Stack(workdir, rate=2_000, workload="mix", fast_questdb=True, start_daemon=False)
    with stack, FakeGateway((*BAD_MODES, "proxy"), stack.simulator.port) as fake:
        daemon = DaemonProcess(workdir, fake.port, stack.questdb, stack.valkey.url, "mix", FAST_RECONNECT)
        stack.daemon = daemon
        daemon.start()
        logs = daemon.logs
        assert logs is not None
        for index, mode in enumerate(BAD_MODES):
            deadline = time.monotonic() + 60
            while len(fake.connections) <= index + 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            moved_on = len(fake.connections) > index + 1
            alive = daemon.process is not None and daemon.process.poll() is None
            live = _live(daemon)
            said = _first_problem_line(logs.lines, fake.connections[index][0])
            outcomes.append(
                Outcome(
                    f"bad-gateway-{mode}",
                    f"fake gateway sends {_describe(mode)}",
                    f"daemon alive {alive}, /health/live {live}, reconnected and moved on {moved_on}; "
                    f"log: {said}",
                    alive and live == 200 and moved_on,
                )
            )
        healthy = daemon.wait_healthy(33, 60)
        time.sleep(10)
        stack.simulator.post("/pause")
        time.sleep(1)
        sent = stack.simulator.sent()
        stored = wait_settled(stack.questdb, timeout=60)
    missing = missing_rows(sent, stored)
    outcomes.append(
        Outcome(
            "bad-gateway-then-good",
            "after the bad connections the gateway proxies to the simulator for 10 s",
            f"healthy with 33 active: {healthy is not None}, rows lost {sum(missing.values())} ({missing})",
            healthy is not None and sum(missing.values()) == 0,
        )
    )
    return outcomes


def _describe(mode: str) -> str:
    return {
        "garbage": "8 KiB of random bytes instead of the handshake answer",
        "truncated": "9 bytes of a 27-byte handshake frame, then closes",
        "wrong_version": "server version 42 (ib_async needs >= 157)",
        "oversized": f"a valid handshake, then a {OVERSIZED_BYTES >> 20} MiB message",
    }[mode]


def _live(daemon: DaemonProcess) -> int:
    try:
        return httpx.get(f"http://{LOOPBACK}:{daemon.api_port}/health/live", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _first_problem_line(lines: list[tuple[float, str]], since: float) -> str:
    for moment, line in list(lines):
        if moment >= since and any(w in line for w in ('"error"', '"warning"', '"alert"', "Traceback")):
            return line[:160]
    return "(no error line)"


# --- config fuzzing --------------------------------------------------------------------------------

SECTIONS = tuple(Settings.model_fields)
KEYS = tuple(
    {
        name
        for model in Settings.model_fields.values()
        for name in getattr(model.annotation, "model_fields", {})
    }
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
    st.sampled_from(["", "0", "-1", "1e309", "redis://", "http://x", "yes", "null", "~", "[", "{a: 1}"]),
)  # fmt: skip
names = st.one_of(st.sampled_from(SECTIONS + KEYS), st.text(max_size=12))
trees = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(names, children, max_size=5)),
    max_leaves=20,
)
documents = st.one_of(
    st.dictionaries(st.sampled_from(SECTIONS), trees, max_size=6).map(lambda d: yaml.safe_dump(d).encode()),
    st.text(max_size=200).map(str.encode),
    st.binary(max_size=200),
    st.sampled_from([b"", b"---", b"- a\n- b", b"ibkr: [", b"\xff\xfe", b"universe: 5", b"a: &x [*x]"]),
)
env_names = st.one_of(
    st.sampled_from(tuple(ENVIRONMENT_KEYS)),
    st.lists(st.sampled_from(SECTIONS + KEYS + ("",)), min_size=1, max_size=3).map(
        lambda parts: "INGESTION__" + "__".join(p.upper() for p in parts)
    ),
)
environments = st.dictionaries(
    env_names, st.one_of(st.text(max_size=20), st.sampled_from(["[1, 2", "{", "[]"]))
)


def config_fuzz(options: Options, workdir: Path) -> Outcome:
    examples = 300 if options.quick else 3000
    tally = {"ok": 0, "config_error": 0}
    failures: list[str] = []
    path = workdir / "fuzzed.yaml"

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(documents, environments)
    def check(document: bytes, environ: dict[str, str]) -> None:
        path.write_bytes(document)
        try:
            load_settings(path, environ)
        except ConfigError as exc:
            tally["config_error"] += 1
            if not exc.problems or not all(isinstance(p, str) and p.strip() for p in exc.problems):
                failures.append(f"ConfigError without lines for {document[:60]!r}")
            return
        except Exception as exc:  # noqa: BLE001  (the fuzzer exists to catch whatever escapes)
            failures.append(f"{type(exc).__name__}: {exc} for {document[:60]!r} env {environ}")
            return
        tally["ok"] += 1

    check()
    cli = _check_config_cli(workdir)
    first = failures[0][:200] if failures else "none"
    return Outcome(
        "config-fuzz",
        f"{examples} hypothesis examples of config file + environment into load_settings; "
        "3 bad files through `ingestion check-config`",
        f"valid {tally['ok']}, ConfigError {tally['config_error']}, anything else {len(failures)} "
        f"(first: {first}); check-config: {cli}",
        not failures and cli.startswith("exit 2 x3"),
    )


def _check_config_cli(workdir: Path) -> str:
    """`ingestion check-config` on three bad files: exit 2, one line per problem, no traceback."""
    bad = {
        "bad-yaml.yaml": b"ibkr: [\n",
        "bad-port.yaml": b"ibkr:\n  port: 99999\n",
        "binary.yaml": b"\xff\xfe\x00",
    }
    codes: list[int] = []
    tracebacks = 0
    for name, content in bad.items():
        path = workdir / name
        path.write_bytes(content)
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ingestion"), "check-config", "--config", str(path)],
            capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", "")},
        )  # fmt: skip
        codes.append(done.returncode)
        tracebacks += "Traceback" in done.stdout + done.stderr
    same = all(c == 2 for c in codes)
    return (
        f"exit 2 x3, tracebacks {tracebacks}"
        if same and not tracebacks
        else f"exits {codes}, tracebacks {tracebacks}"
    )


def bad_input(options: Options, workdir: Path) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="chaos-fuzz-") as fuzzdir:
        fuzz = config_fuzz(options, Path(fuzzdir))
    return [*gateway(options, workdir), fuzz]
