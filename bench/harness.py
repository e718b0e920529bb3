"""Shared harness for bench/ and chaos/: processes on loopback ports and what we read from them.

Not a script. ``Stack`` starts, each as a separate process so that each can have a core:

- a real Valkey/Redis server (``redis-server --port P --save "" --appendonly no``),
- the QuestDB double (bench/questdb_server.py), or a real QuestDB when ``QUESTDB_HOST`` is set
  (then ``QUESTDB_HTTP_PORT``, default 9000),
- the gateway simulator (``ingestion simulate-gateway``),
- the daemon exactly as ``ingestion run`` with compose's environment variables.

Readings: CPU seconds (utime + stime of /proc/<pid>/stat), RSS (VmRSS of /proc/<pid>/status),
threads, the daemon's /health and /metrics (Prometheus text; histogram percentiles are read from
cumulative bucket counts and reported as the bucket's upper bound), the simulator's /stats, and
the double's /bench/stats (rows per table and symbol, duplicates, outside latency histogram).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ETFS = ("SPY", "QQQ", "IWM", "DIA", "XLK", "XLF", "XLE", "XLV",
        "XLY", "XLI", "XLP", "XLB", "XLRE", "XLU", "XLC")  # fmt: skip
TBT_SYMBOLS = ETFS[:3]  # tick-by-tick and depth go to the first three under IB's default limits
DEPTH_SYMBOLS = ETFS[:3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    msg = f"nothing listens on {LOOPBACK}:{port} after {timeout} s"
    raise TimeoutError(msg)


# --- /proc readings ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (not its children)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the daemon's ILP writer, for one)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live children: what the daemon costs, its ILP writer included."""
    total = cpu_seconds(pid)
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(child)
    return total


def rss_mb(pid: int) -> float:
    return memory_mb(pid)["VmRSS"]


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and its parts from /proc/<pid>/status: RssAnon (heap, arenas, stacks) and RssFile
    (mapped files: the interpreter, shared libraries), in MB. Only RssAnon growth can be a leak."""
    wanted = ("VmRSS:", "RssAnon:", "RssFile:")
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in lines if line.startswith(wanted)}


def pss_mb(pid: int) -> float:
    """Proportional set size (/proc/<pid>/smaps_rollup), in MB: RSS with each shared page split among
    the processes that map it, so the daemon and its ILP writer add up without counting libraries twice."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def machine() -> dict[str, str]:
    """What the figures came from."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram_gib": f"{mem_kb / 1024 / 1024:.1f}",
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_1m": f"{os.getloadavg()[0]:.2f}",
    }


# --- Prometheus text --------------------------------------------------------------------------------

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_prometheus(text: str) -> Samples:
    """``{metric name: [(labels, value), ...]}`` of a Prometheus text exposition."""
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels: dict[str, str] = {}
        for part in rest.rstrip("}").split('",'):
            if "=" in part:
                key, _, raw = part.partition("=")
                labels[key.strip()] = raw.strip('"')
        out.setdefault(name, []).append((labels, float(value)))
    return out


def total(samples: Samples, name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def buckets(samples: Samples, histogram: str, **match: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs, +Inf last, summed over the series whose labels
    include ``match`` (all series when it is empty)."""
    sums: dict[float, float] = {}
    for labels, value in samples.get(f"{histogram}_bucket", []):
        if any(labels.get(key) != wanted for key, wanted in match.items()):
            continue
        bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        sums[bound] = sums.get(bound, 0.0) + value
    return sorted(sums.items())


def bucket_quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` (None when empty): a conservative estimate."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    target = q * cumulative[-1][1]
    for bound, count in cumulative:
        if count >= target:
            return bound
    return cumulative[-1][0]


def share_within(cumulative: list[tuple[float, float]], bound: float) -> float | None:
    """Percent of the samples at or under ``bound``, which must be one of the bucket bounds; the exact
    test of a "p99 under ``bound``" target, where a bucket quantile only names the bucket."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    at = dict(cumulative)
    if bound not in at:
        raise ValueError(f"{bound} is not a bucket bound: {sorted(at)}")
    return 100 * at[bound] / cumulative[-1][1]


def bucket_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def histogram_quantile_us(bounds: list[float], counts: list[int], q: float) -> float | None:
    """Quantile of a non-cumulative histogram (bucket upper bounds in us; last bucket open)."""
    n = sum(counts)
    if n == 0:
        return None
    running = 0
    for i, count in enumerate(counts):
        running += count
        if running >= q * n:
            return bounds[i] if i < len(bounds) else float("inf")
    return float("inf")


def quantiles(values: list[float], qs: tuple[float, ...] = (0.5, 0.99)) -> list[float]:
    if not values:
        return [float("nan")] * len(qs)
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs]


# --- processes --------------------------------------------------------------------------------------


class LogTail:
    """Keeps a process's stdout lines (bounded) with their arrival time; waits for text in them."""

    def __init__(self, process: subprocess.Popen[str], keep: int = 200_000) -> None:
        self.lines: list[tuple[float, str]] = []
        self._keep = keep
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                if len(self.lines) > self._keep:
                    del self.lines[: self._keep // 10]

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def find(self, text: str, start: int = 0) -> tuple[float, str] | None:
        with self._lock:
            for moment, line in self.lines[start:]:
                if text in line:
                    return moment, line
        return None

    def wait_for(self, text: str, timeout: float, start: int = 0) -> tuple[float, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(text, start)
            if found is not None:
                return found
            time.sleep(0.02)
        return None

    def count(self, text: str, start: int = 0) -> int:
        with self._lock:
            return sum(1 for _, line in self.lines[start:] if text in line)

    def tail(self, n: int = 20) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines[-n:])


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Signal a process we started, by its pid; kill it if it outlives ``timeout``."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


class ValkeyProcess:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("valkey-server") or shutil.which("redis-server")
        if binary is None:
            msg = "no valkey-server or redis-server binary on PATH"
            raise RuntimeError(msg)
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


class _ControlledProcess:
    """A child process with an HTTP client to it; ``stop`` closes both."""

    http: httpx.Client
    process: subprocess.Popen[Any] | None

    def stop(self) -> None:
        self.http.close()
        if self.process is not None:
            stop_process(self.process)
            self.process = None


class QuestDBProcess(_ControlledProcess):
    """The double in its own process, or a real QuestDB named by QUESTDB_HOST."""

    def __init__(self, *, fast: bool = False) -> None:
        self.external = os.environ.get("QUESTDB_HOST")
        self.host = self.external or LOOPBACK
        self.port = int(os.environ.get("QUESTDB_HTTP_PORT", "9000")) if self.external else free_port()
        self.fast = fast
        self.process: subprocess.Popen[str] | None = None
        self.http = httpx.Client(base_url=f"http://{self.host}:{self.port}", timeout=30)

    @property
    def kind(self) -> str:
        if self.external:
            return f"real QuestDB at {self.host}:{self.port}"
        return "QuestDB double (counting /write)" if self.fast else "QuestDB double (full)"

    def start(self) -> None:
        if self.external:
            return
        command = [sys.executable, str(REPO / "bench" / "questdb_server.py"), "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, *(["--fast"] if self.fast else [])], stdout=subprocess.PIPE, text=True
        )
        wait_port(self.port)

    def stats(self) -> dict[str, Any]:
        """Rows per table and symbol, duplicates and the outside latency histogram."""
        if self.external:
            return self._stats_from_sql()
        return self.http.get("/bench/stats").json()

    def _stats_from_sql(self) -> dict[str, Any]:
        tables: dict[str, Any] = {}
        for table in ("market_data_l1", "market_data_l2", "time_and_sales"):
            sql = f"SELECT symbol, count() FROM {table} GROUP BY symbol"
            answer = self.http.get("/exec", params={"query": sql}).json()
            by_symbol = {row[0]: int(row[1]) for row in answer.get("dataset", [])}
            tables[table] = {"rows": sum(by_symbol.values()), "by_symbol": by_symbol, "duplicates": None}
        return {"tables": tables, "latency_counts": [], "latency_bounds_us": [], "latency_max_us": None}

    def control(self, action: str) -> None:
        """outage, heal, latency-reset (the double only)."""
        if not self.external:
            self.http.post(f"/bench/{action}").raise_for_status()


class SimulatorProcess(_ControlledProcess):
    def __init__(self, rate: float, *, seed: int = 1) -> None:
        self.port = free_port()
        self.control_port = free_port()
        self.rate = rate
        self.seed = seed
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://{LOOPBACK}:{self.control_port}", timeout=30)

    def start(self) -> None:
        command = [str(BIN / "ingestion"), "simulate-gateway", "--host", LOOPBACK, "--port", str(self.port),
                   "--control-port", str(self.control_port), "--rate", f"{self.rate:g}",
                   "--seed", str(self.seed)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.control_port)

    def stats(self) -> dict[str, Any]:
        return self.http.get("/stats").json()

    def sent(self) -> dict[str, Any]:
        """Exact counts sent: ``{"by_kind", "by_symbol", "trades", "total"}``."""
        return self.stats()["sent"]

    def post(self, path: str, **params: float | int) -> dict[str, Any]:
        response = self.http.post(path, params=params)
        response.raise_for_status()
        return response.json()


def universe_yaml(workload: str) -> str:
    """A config file: the default universe, Level 1 only for ``l1``; API on loopback."""
    data = "[l1]" if workload == "l1" else "[l1, l2, time_and_sales]"
    symbols = "\n".join(f"  - {{symbol: {s}, data: {data}}}" for s in ETFS)
    return f"universe:\n{symbols}\napi:\n  host: {LOOPBACK}\n"


@dataclass
class DaemonProcess:
    """``ingestion run`` with compose's environment, stdout (JSON lines) kept in ``logs``."""

    workdir: Path
    gateway_port: int
    questdb: QuestDBProcess
    valkey_url: str
    workload: str = "mix"
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    logs: LogTail | None = None

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=f"http://{LOOPBACK}:{self.api_port}", timeout=10)
        self.config_path = self.workdir / f"config-{self.workload}.yaml"
        self.config_path.write_text(universe_yaml(self.workload))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def environment(self) -> dict[str, str]:
        # INGESTION__SECTION__KEY=... in the bench's own environment reaches the daemon, so any
        # setting can be measured (e.g. INGESTION__VALKEY__CONFLATION_MS=5).
        # MALLOC_* (glibc's tunables, e.g. MALLOC_ARENA_MAX=2) and PYTHONMALLOC pass too, for memory runs.
        passed = {"PATH", "HOME", "LANG", "PYTHONPATH", "PYTHONMALLOC", "GLIBC_TUNABLES"}
        prefixes = ("INGESTION__", "MALLOC_")
        base = {k: v for k, v in os.environ.items() if k in passed or k.startswith(prefixes)}
        return (
            base
            | {
                "IBKR_HOST": LOOPBACK,
                "IBKR_PORT": str(self.gateway_port),
                "QUESTDB_HOST": self.questdb.host,
                "QUESTDB_HTTP_PORT": str(self.questdb.port),
                "VALKEY_URL": self.valkey_url,
                "API_PORT": str(self.api_port),
                "SPOOL_DIR": str(self.workdir / "spool"),
                "INGESTION_CONFIG": str(self.config_path),
                "LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
            }
            | self.extra_env
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "ingestion"), "run"],
            env=self.environment(),
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.logs = LogTail(self.process)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.http.close()
        self.http = httpx.Client(base_url=f"http://{LOOPBACK}:{self.api_port}", timeout=10)
        if self.process is None:
            return 0
        return stop_process(self.process, sig, timeout)

    def health(self) -> tuple[int, dict[str, Any]]:
        response = self.http.get("/health")
        return response.status_code, response.json()

    def metrics(self) -> Samples:
        return parse_prometheus(self.http.get("/metrics").text)

    def wait_healthy(self, active: int, timeout: float = 30.0) -> float | None:
        """Seconds until /health is 200 with ``active`` subscriptions; None on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                status, body = self.health()
                if status == 200 and body["subscriptions"]["active"] >= active:
                    return time.monotonic() - started
            time.sleep(0.05)
        return None


def active_subscriptions(workload: str) -> int:
    return 15 if workload == "l1" else 33


class Stack:
    """Valkey, QuestDB, the simulator and the daemon, started in that order, stopped in reverse."""

    def __init__(
        self,
        workdir: Path,
        *,
        rate: float,
        workload: str = "mix",
        fast_questdb: bool = False,
        daemon_env: dict[str, str] | None = None,
        start_daemon: bool = True,
    ) -> None:
        self.workdir = workdir
        self.workload = workload
        self.valkey = ValkeyProcess(workdir)
        self.questdb = QuestDBProcess(fast=fast_questdb)
        self.simulator = SimulatorProcess(rate)
        self.daemon = DaemonProcess(
            workdir, self.simulator.port, self.questdb, self.valkey.url, workload, daemon_env or {}
        )
        self._start_daemon = start_daemon

    def __enter__(self) -> Stack:
        try:
            self.valkey.start()
            self.questdb.start()
            self.simulator.start()
            if self._start_daemon:
                self.daemon.start()
                self._await_healthy()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _await_healthy(self) -> None:
        if self.daemon.wait_healthy(active_subscriptions(self.workload), 60) is None:
            assert self.daemon.logs is not None
            msg = f"daemon not healthy within 60 s; last lines:\n{self.daemon.logs.tail()}"
            raise RuntimeError(msg)

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()
        self.simulator.stop()
        self.questdb.stop()
        self.valkey.stop()


@contextlib.contextmanager
def health_prober(daemon: DaemonProcess) -> Iterator[list[float]]:
    """Sequential GET /health from a thread while the block runs; yields the latencies (ms)."""
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=f"http://{LOOPBACK}:{daemon.api_port}", timeout=5) as client:
            while not stop.is_set():
                started = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    client.get("/health")
                    latencies.append((time.perf_counter() - started) * 1000)
                stop.wait(0.02)

    thread = threading.Thread(target=probe, name="health-prober", daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join(10)


def expected_rows(
    sent: dict[str, Any], tbt_symbols: tuple[str, ...] = TBT_SYMBOLS
) -> dict[str, dict[str, int]]:
    """What the simulator sent that must become rows: trades and depth per symbol.

    Tick-by-tick symbols store their AllLast trades (RTVolume is ignored for them); the others
    store RTVolume trades; every depth message is one market_data_l2 row.
    """
    by_symbol = sent["by_symbol"]
    trades = {
        s: c["tick_by_tick_all_last"] if s in tbt_symbols else c["rtvolume"] for s, c in by_symbol.items()
    }
    depth = {s: c["depth"] for s, c in by_symbol.items() if c["depth"]}
    return {"time_and_sales": trades, "market_data_l2": depth}


def missing_rows(sent: dict[str, Any], stored: dict[str, Any]) -> dict[str, int]:
    """Per table: rows the simulator sent that QuestDB does not hold (negative = extra rows)."""
    out: dict[str, int] = {}
    for table, per_symbol in expected_rows(sent).items():
        have = stored["tables"].get(table, {}).get("by_symbol", {})
        out[table] = sum(n - have.get(s, 0) for s, n in per_symbol.items())
    return out


def wait_settled(questdb: QuestDBProcess, timeout: float = 60.0, quiet: float = 2.0) -> dict[str, Any]:
    """Poll the double until its row counts stop changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = questdb.stats()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = questdb.stats()
        if {t: v["rows"] for t, v in now["tables"].items()} != {
            t: v["rows"] for t, v in last["tables"].items()
        }:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    return last


def print_json(label: str, value: Any) -> None:
    print(f"{label}: {json.dumps(value, default=str)}", flush=True)
