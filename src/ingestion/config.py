"""Configuration: frozen pydantic models, loaded from YAML with environment overrides.

Precedence, lowest first: model defaults < the YAML file < environment variables. The plain
variables of the contract (``IBKR_HOST``, ``QUESTDB_HTTP_PORT``, ...) map to one key each; any
key can also be set with a nested name such as ``INGESTION__IBKR__PORT=4001``.

Every problem is reported as one line naming the key path, the bad value and what is expected,
by :class:`ConfigError`; nothing here exits or logs, so the CLI decides what to do with it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path("config/config.yaml")
CONFIG_PATH_VARIABLE = "INGESTION_CONFIG"
NESTED_PREFIX = "INGESTION__"

DataType = Literal["l1", "l2", "time_and_sales"]
ALL_DATA_TYPES: tuple[DataType, ...] = ("l1", "l2", "time_and_sales")

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]

DEFAULT_UNIVERSE = (
    "SPY", "QQQ", "IWM", "DIA", "XLK", "XLF", "XLE", "XLV",
    "XLY", "XLI", "XLP", "XLB", "XLRE", "XLU", "XLC",
)  # fmt: skip
DEFAULT_FRED_SERIES = ("VIXCLS", "DGS10", "DGS2", "T10Y2Y", "BAMLH0A0HYM2", "DFF", "CPIAUCSL", "UNRATE")

# The plain environment variables of CONTRACTS.md and the key path each one sets.
ENVIRONMENT_KEYS: Mapping[str, tuple[str, ...]] = {
    "IBKR_HOST": ("ibkr", "host"),
    "IBKR_PORT": ("ibkr", "port"),
    "IBKR_CLIENT_ID": ("ibkr", "client_id"),
    "QUESTDB_HOST": ("questdb", "host"),
    "QUESTDB_HTTP_PORT": ("questdb", "http_port"),
    "VALKEY_URL": ("valkey", "url"),
    "FRED_API_KEY": ("fred", "api_key"),
    "API_PORT": ("api", "port"),
    "LOG_LEVEL": ("logging", "level"),
    "LOG_FORMAT": ("logging", "format"),
    "SPOOL_DIR": ("questdb", "spool", "dir"),
}


class _Section(BaseModel):
    """Base of every config model: immutable, and unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )


class BackoffConfig(_Section):
    """Capped exponential backoff with jitter, for reconnecting to the gateway."""

    initial_seconds: PositiveSeconds = 1.0
    """First delay after a failed attempt."""
    max_seconds: PositiveSeconds = 10.0
    """Cap of the delay: the daemon retries forever at most this far apart."""
    multiplier: Annotated[float, Field(ge=1.0)] = 2.0
    """Growth of the delay per failed attempt."""
    jitter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    """Random spread of each delay as a fraction (0.2 = +/- 20 %), drawn fresh every attempt."""

    @model_validator(mode="after")
    def _initial_not_above_max(self) -> BackoffConfig:
        if self.initial_seconds > self.max_seconds:
            msg = f"initial_seconds ({self.initial_seconds}) must not exceed max_seconds ({self.max_seconds})"
            raise ValueError(msg)
        return self


class IbkrConfig(_Section):
    host: Annotated[str, Field(min_length=1)] = "host.docker.internal"
    """Where IB Gateway or TWS listens."""
    port: Port = 4002
    """API port: Gateway live 4001, paper 4002; TWS live 7496, paper 7497."""
    client_id: Annotated[int, Field(ge=0, le=2_147_483_647)] = 10
    """Unique among the API clients of one gateway (else error 326)."""
    readonly: bool = True
    """Connect read-only, as the gateway's "Read-Only API" setting expects."""
    account: str = ""
    """Account to use when the login manages several; empty for the only one."""
    connect_timeout_seconds: PositiveSeconds = 10.0
    """TCP connect plus API handshake; a handshake that never completes usually means an untrusted IP."""
    reconnect: BackoffConfig = BackoffConfig()
    """Delays between connection attempts."""
    heartbeat_interval_seconds: PositiveSeconds = 5.0
    """How often reqCurrentTime probes the connection."""
    heartbeat_timeout_seconds: PositiveSeconds = 5.0
    """A probe unanswered this long declares the connection dead (silent stall) and reconnects."""
    market_data_type: Literal["live", "frozen", "delayed", "delayed_frozen"] = "live"
    """reqMarketDataType: live, or IB's frozen/delayed fallbacks."""
    retry_not_entitled_seconds: PositiveSeconds = 60.0
    """Streams IB refused for want of market data permission (354) are asked for again this often, so a
    subscription bought meanwhile streams without waiting for a reconnect."""


class SymbolConfig(_Section):
    """One instrument of the universe. In YAML a bare string ``SPY`` means STK/SMART/USD, all data."""

    symbol: Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9 .\-]{0,19}$")]
    """IB symbol, upper case."""
    sec_type: Literal["STK"] = "STK"
    """Security type (stocks and ETFs)."""
    exchange: Annotated[str, Field(min_length=1)] = "SMART"
    """Routing exchange; SMART aggregates every venue."""
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    """ISO currency code."""
    primary_exchange: str | None = None
    """Listing exchange, to disambiguate a symbol listed in several places."""
    data: Annotated[tuple[DataType, ...], Field(min_length=1)] = ALL_DATA_TYPES
    """Data types to collect: l1 (quotes), l2 (market depth), time_and_sales."""

    @model_validator(mode="before")
    @classmethod
    def _from_bare_symbol(cls, value: Any) -> Any:
        return {"symbol": value} if isinstance(value, str) else value

    @field_validator("symbol", mode="before")
    @classmethod
    def _upper_case(cls, value: Any) -> Any:
        # IB symbols are upper case; "spy" in a hand-edited file means SPY, not a typo to reject.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("data")
    @classmethod
    def _no_repeated_types(cls, value: tuple[DataType, ...]) -> tuple[DataType, ...]:
        if len(set(value)) != len(value):
            msg = f"data types repeat: {list(value)}"
            raise ValueError(msg)
        return value


class LimitsConfig(_Section):
    """IB's scarce lines, handed out in universe priority order (see ibkr/subscriptions.py)."""

    max_depth_books: Annotated[int, Field(ge=0, le=100)] = 3
    """Depth books IB allows this account (3 by default); handed out in universe order."""
    max_tick_by_tick: Annotated[int, Field(ge=0, le=100)] = 3
    """Tick-by-tick streams IB allows; other symbols get time & sales from RTVolume."""
    max_market_data_lines: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Level 1 lines of the account (error 101 beyond)."""
    depth_rows: Annotated[int, Field(ge=1, le=50)] = 10
    """Rows per side of each depth book."""
    smart_depth: bool = True
    """Aggregate depth across exchanges (SMART depth)."""


class SpoolConfig(_Section):
    dir: Path = Path("/var/lib/ingestion/spool")
    """Where rows wait on disk while QuestDB cannot take them (FRED keeps its state here too)."""
    max_bytes: Annotated[int, Field(ge=1 << 20)] = 2 << 30
    """Spool size cap; only beyond it are the oldest rows dropped, counted and alerted."""
    segment_bytes: Annotated[int, Field(ge=1 << 16)] = 64 << 20
    """Size of one append-only segment file."""
    fsync: Literal["always", "interval", "never"] = "interval"
    """When spooled rows are forced to disk: every write, every interval, or left to the OS."""
    fsync_interval_seconds: PositiveSeconds = 1.0
    """The interval of fsync: interval."""


class QuestDBConfig(_Section):
    host: Annotated[str, Field(min_length=1)] = "questdb"
    """QuestDB host."""
    http_port: Port = 9000
    """ILP over HTTP (/write) and SQL (/exec)."""
    protocol: Literal["http", "tcp"] = "http"
    """ILP transport: http (acknowledged, transactional) or tcp."""
    ilp_tcp_port: Port = 9009
    """ILP/TCP port, with protocol: tcp."""
    username: str | None = None
    """HTTP basic auth user (QuestDB Enterprise or a proxy)."""
    password: SecretStr | None = None
    """HTTP basic auth password (secret)."""
    token: SecretStr | None = None
    """Bearer token (secret)."""
    flush_interval_ms: Annotated[int, Field(ge=1, le=60_000)] = 100
    """Flush at least this often."""
    flush_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    """Flush as soon as this many rows are pending."""
    request_timeout_seconds: PositiveSeconds = 10.0
    """A write or query slower than this counts as failed (its rows are spooled)."""
    retry_interval_seconds: PositiveSeconds = 2.0
    """While QuestDB is down: how often to probe it again."""
    spool: SpoolConfig = SpoolConfig()
    """The on-disk spool."""


class ValkeyConfig(_Section):
    url: SecretStr = SecretStr("redis://valkey:6379/0")
    """Valkey (or Redis) URL; a password goes in it and is masked in output."""
    ttl_seconds: Annotated[int, Field(ge=1)] = 300
    """market:l1:* and market:l2:* expire when no update comes for this long."""
    conflation_ms: Annotated[int, Field(ge=1, le=60_000)] = 50
    """At most one cache write per symbol per interval, carrying the latest state."""
    trades_stream_maxlen: Annotated[int, Field(ge=1)] = 1000
    """market:trades:<SYMBOL> keeps about this many recent trades."""
    status_interval_seconds: PositiveSeconds = 5.0
    """How often ingestion:status is refreshed."""
    min_write_interval_ms: Annotated[int, Field(ge=0, le=1_000)] = 0
    """At most one Valkey round trip per interval (0: at once when a trade waits); more saves CPU."""
    status_ttl_seconds: Annotated[int, Field(ge=1)] = 15
    """Expiry of ingestion:status, so a dead daemon's status disappears."""
    socket_timeout_seconds: PositiveSeconds = 2.0
    """A cache round trip (one write cycle) or connection attempt slower than this counts as an outage."""

    @model_validator(mode="after")
    def _status_outlives_its_refresh(self) -> ValkeyConfig:
        if self.status_ttl_seconds <= self.status_interval_seconds:
            msg = "status_ttl_seconds must be longer than status_interval_seconds, or the status key flickers"
            raise ValueError(msg)
        return self


class FredConfig(_Section):
    api_key: SecretStr | None = None
    """FRED API key (secret); without one FRED is disabled with one warning."""
    series: tuple[Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,40}$")], ...] = DEFAULT_FRED_SERIES
    """FRED series ids to collect."""
    interval_seconds: Annotated[float, Field(ge=60)] = 3600.0
    """Poll interval."""
    lookback_days: Annotated[int, Field(ge=0, le=3650)] = 30
    """Days before the newest stored observation to read again, for revised values."""
    base_url: Annotated[str, Field(pattern=r"^https?://")] = "https://api.stlouisfed.org/fred"
    """FRED API root; point it at a mirror for air-gapped use."""
    requests_per_minute: Annotated[int, Field(ge=1, le=120)] = 120
    """Request budget per key (FRED allows 120/min)."""

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_no_key(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class ApiConfig(_Section):
    host: str = "0.0.0.0"
    """Interface of the HTTP API (inside the container; compose publishes it on 127.0.0.1)."""
    port: Port = 8500
    """/health, /health/live, /subscriptions, /metrics and the status page at /."""


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Lowest level written; alerts are always written."""
    format: Literal["auto", "json", "console"] = "auto"
    """auto: JSON unless stdout is a terminal."""
    summary_interval_seconds: PositiveSeconds = 60.0
    """A `Market data:` INFO line this often while data flows or a market session is open."""

    @field_validator("level", "format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return (
            value.upper()
            if value.lower() in {"debug", "info", "warning", "error", "critical"}
            else value.lower()
        )


class AlertsConfig(_Section):
    # Webhook URLs carry their token in the path (Slack, Discord), so they are secrets.
    webhooks: tuple[SecretStr, ...] = ()
    """URLs that get a JSON POST per alert (Slack and Discord incoming webhooks work); secrets."""
    webhook_timeout_seconds: PositiveSeconds = 5.0
    """Timeout of one webhook POST."""
    webhook_retries: Annotated[int, Field(ge=0, le=20)] = 5
    """Retries of a failed webhook POST, with backoff."""
    stale_after_seconds: PositiveSeconds = 60.0
    """No tick this long during the regular session while connected raises a stale-data alert."""


class PipelineConfig(_Section):
    queue_size: Annotated[int, Field(ge=100, le=10_000_000)] = 200_000
    """Events between the IB client and the sinks; when full, events are dropped and alerted."""
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """The daemon's event loop. auto: uvloop where it is installed (not on Windows), else asyncio's."""

    @field_validator("event_loop")
    @classmethod
    def _uvloop_installed(cls, value: str) -> str:
        if value == "uvloop" and not uvloop_installed():
            msg = "uvloop is not installed (it has no Windows build); use auto or asyncio"
            raise ValueError(msg)
        return value


# IB's spellings of the bar sizes from 1 min to 1 day, with their length in seconds.
BAR_SIZES: Mapping[str, int] = {
    "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600, "15 mins": 900,
    "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "2 hours": 7200, "3 hours": 10800,
    "4 hours": 14400, "8 hours": 28800, "1 day": 86400,
}  # fmt: skip
LOOKBACK_PATTERN = r"^[1-9][0-9]{0,3} [DWMY]$"


class BarSeriesConfig(_Section):
    """One bar size kept in market_data_historical, and how far back."""

    bar_size: str
    """IB's spelling of the bar size: 1 min, 2 mins, ..., 30 mins, 1 hour, ..., 8 hours, 1 day."""
    lookback: Annotated[str, Field(pattern=LOOKBACK_PATTERN)]
    """How far back: N D (trading days), N W, N M or N Y, as IB writes durations."""

    @field_validator("bar_size")
    @classmethod
    def _known_bar_size(cls, value: str) -> str:
        if value not in BAR_SIZES:
            msg = f"unknown bar size {value!r}; IB's spellings are: {', '.join(BAR_SIZES)}"
            raise ValueError(msg)
        return value


DEFAULT_BARS = (
    BarSeriesConfig(bar_size="1 day", lookback="2 Y"),
    BarSeriesConfig(bar_size="1 min", lookback="5 D"),
)


class BackfillConfig(_Section):
    """Filling the gaps of time_and_sales from IB's historical trades."""

    enabled: bool = True
    """Find and fill every gap in the live trades while the market is open."""
    lookback_days: Annotated[int, Field(ge=1, le=180)] = 5
    """The daemon's own downtime is filled back at most this many days (from the newest stored trade)."""
    stall_seconds: PositiveSeconds = 3.0
    """No market data at all this long while connected in the regular session counts as a stall (a gap)."""
    settle_seconds: PositiveSeconds = 5.0
    """After a gap's cause clears, live trades count as complete from this many seconds on."""
    bid_ask: bool = False
    """Level 1 gaps from BID_ASK ticks (double pacing cost): not available yet, so only false is accepted."""
    give_up_hours: PositiveSeconds = 6.0
    """A gap still unfilled after this long (HMDS down) is reported as unfillable and dropped."""

    @field_validator("bid_ask")
    @classmethod
    def _bid_ask_not_yet(cls, value: bool) -> bool:
        if value:
            msg = "Level 1 backfill from BID_ASK ticks is not available yet; leave it false"
            raise ValueError(msg)
        return value


class PacingConfig(_Section):
    """IB's historical data pacing, kept by construction (with a margin)."""

    requests_per_10_minutes: Annotated[int, Field(ge=1, le=60)] = 60
    """Requests in any 10 minutes (BID_ASK counts twice); IB answers 162 beyond 60."""
    per_contract_in_2_seconds: Annotated[int, Field(ge=1, le=5)] = 5
    """Requests for one contract, exchange and tick type within 2 s; IB answers 162 at six."""
    identical_seconds: Annotated[float, Field(ge=15.0)] = 16.0
    """An identical request is sent again only after this long (IB: 15 s)."""
    max_open: Annotated[int, Field(ge=1, le=50)] = 50
    """Requests open at once (IB: 50)."""
    request_timeout_seconds: PositiveSeconds = 60.0
    """A request without an answer this long counts as failed and is retried later."""
    retry_seconds: PositiveSeconds = 30.0
    """First wait before retrying after a pacing violation (162) or a failure; doubles, at most 3 retries."""


class HistoryConfig(_Section):
    """IB history: bars into market_data_historical, and gaps of time_and_sales filled back."""

    enabled: bool = True
    """Request history from IB at all."""
    bars: tuple[BarSeriesConfig, ...] = DEFAULT_BARS
    """Bar sizes and look-backs, for every symbol; at start and after each session close."""
    what_to_show: Literal["TRADES", "MIDPOINT", "BID_ASK"] = "TRADES"
    """What the bars are built from."""
    use_rth: bool = False
    """Bars of the regular session only (true) or with extended hours (false)."""
    market_hours: Literal["nyse", "always"] = "nyse"
    """When history may ask for data: nyse (its calendar with extended hours), or always (the simulator)."""
    backfill: BackfillConfig = BackfillConfig()
    """Gap backfill of time_and_sales."""
    pacing: PacingConfig = PacingConfig()
    """IB's pacing rules for historical requests."""

    @field_validator("bars")
    @classmethod
    def _one_per_bar_size(cls, value: tuple[BarSeriesConfig, ...]) -> tuple[BarSeriesConfig, ...]:
        sizes = [b.bar_size for b in value]
        if len(set(sizes)) != len(sizes):
            msg = f"a bar size is listed more than once: {sizes}"
            raise ValueError(msg)
        return value


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


class Settings(_Section):
    """The whole configuration of one daemon."""

    ibkr: IbkrConfig = IbkrConfig()
    """The IB Gateway / TWS connection."""
    universe: Annotated[tuple[SymbolConfig, ...], Field(min_length=1)] = tuple(
        SymbolConfig(symbol=s) for s in DEFAULT_UNIVERSE
    )
    """Instruments in priority order; a bare symbol means STK/SMART/USD with all data types."""
    limits: LimitsConfig = LimitsConfig()
    """IB's scarce lines."""
    questdb: QuestDBConfig = QuestDBConfig()
    """The QuestDB writer."""
    valkey: ValkeyConfig = ValkeyConfig()
    """The Valkey cache."""
    fred: FredConfig = FredConfig()
    """FRED economic series."""
    api: ApiConfig = ApiConfig()
    """The HTTP API."""
    logging: LoggingConfig = LoggingConfig()
    """Log lines on stdout."""
    alerts: AlertsConfig = AlertsConfig()
    """Alert delivery and stale-data detection."""
    pipeline: PipelineConfig = PipelineConfig()
    """The bounded queue to the sinks."""
    history: HistoryConfig = HistoryConfig()
    """IB history: bars and gap backfill."""

    @field_validator("universe")
    @classmethod
    def _symbols_unique(cls, value: tuple[SymbolConfig, ...]) -> tuple[SymbolConfig, ...]:
        seen: set[str] = set()
        repeated = [s.symbol for s in value if s.symbol in seen or seen.add(s.symbol)]
        if repeated:
            msg = f"symbols listed more than once: {', '.join(repeated)}"
            raise ValueError(msg)
        return value

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(s.symbol for s in self.universe)


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` holds one human line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load, merge and validate the configuration.

    Args:
        path: The YAML file. ``None`` means ``$INGESTION_CONFIG``, else ``config/config.yaml``.
        environ: The environment to read overrides from (``os.environ`` when ``None``).

    Returns:
        The validated, frozen settings.

    Raises:
        ConfigError: With one line per problem, each naming the key path and the bad value.
    """
    env = os.environ if environ is None else environ
    config_path = resolve_config_path(path, env)
    data = _read_yaml(config_path)
    sources: dict[tuple[str, ...], str] = {}
    _apply_environment(data, env, sources)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, sources, config_path)) from exc


def resolve_config_path(path: Path | None, environ: Mapping[str, str]) -> Path:
    if path is not None:
        return path
    from_env = environ.get(CONFIG_PATH_VARIABLE, "").strip()
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        msg = f"config file not found: {path} (pass --config PATH or set {CONFIG_PATH_VARIABLE})"
        raise ConfigError([msg]) from exc
    except OSError as exc:
        raise ConfigError([f"config file {path} cannot be read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        msg = f"config file {path} is not UTF-8 text (byte {exc.start}: {bad!r})"
        raise ConfigError([msg]) from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: not valid YAML: {problem}"]) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        msg = f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}"
        raise ConfigError([msg])
    return loaded


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str], sources: dict) -> None:
    for name, key_path in ENVIRONMENT_KEYS.items():
        if name in environ:
            _set_path(data, key_path, environ[name])
            sources[key_path] = name
    problems = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(NESTED_PREFIX):
            continue
        key_path = tuple(part.lower() for part in name[len(NESTED_PREFIX) :].split("__"))
        if not all(key_path):
            problems.append(f"{name}: malformed override name (expected {NESTED_PREFIX}SECTION__KEY)")
            continue
        _set_path(data, key_path, _parse_override(raw))
        sources[key_path] = name
    if problems:
        raise ConfigError(problems)


def _parse_override(raw: str) -> Any:
    # Lists and mappings are written in YAML flow style; scalars stay strings, which pydantic
    # converts to the field's type ("4001" -> 4001) without turning "0123" into a number first.
    if raw.lstrip().startswith(("[", "{")):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
    return raw


def _set_path(data: dict[str, Any], key_path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in key_path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[key_path[-1]] = value


def _describe(exc: ValidationError, data: dict, sources: dict, path: Path) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = _location(error["loc"])
        key_path = tuple(str(p) for p in error["loc"] if not isinstance(p, int))
        origin = f" (from {sources[key_path]})" if key_path in sources else f" (in {path})"
        if error["type"] == "extra_forbidden":
            hint = _did_you_mean(error["loc"], data)
            lines.append(f"{loc}: unknown key{origin}{hint}")
            continue
        value = _shown_value(error)
        expected = _expected(error)
        lines.append(f"{loc}: {value} is invalid{origin}: {expected}")
    return lines


def _location(loc: tuple) -> str:
    """``('universe', 2, 'symbol')`` -> ``universe[2].symbol``."""
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else f"{'.' if text else ''}{item}"
    return text or "(top level)"


def _shown_value(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "(missing)"
    value = error.get("input")
    key = str(error["loc"][-1]) if error["loc"] else ""
    if any(word in key for word in ("key", "password", "token", "url", "webhook")):
        return "'********'"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _expected(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _did_you_mean(loc: tuple, data: dict) -> str:
    model: type[BaseModel] | None = Settings
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None and str(part) == "universe":
            model = SymbolConfig
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    known = ", ".join(model.model_fields)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {known}"


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:@/]*):(?P<password>[^@/]+)@", re.I)


def mask_url(url: str) -> str:
    """Hide the password in a URL such as ``redis://:secret@host:6379/0``.

    >>> mask_url("redis://user:secret@valkey:6379/0")
    'redis://user:********@valkey:6379/0'
    """
    return _URL_PASSWORD.sub(r"\g<scheme>\g<user>:********@", url)


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, every secret replaced by a mask.

    The Valkey URL is shown with only its password masked, since host and port are what an
    operator needs to check; webhook URLs and keys are masked whole.
    """
    data = settings.model_dump(mode="json")
    data["valkey"]["url"] = mask_url(settings.valkey.url.get_secret_value())
    data["universe"] = [_compact_symbol(s) for s in settings.universe]
    return data


def _compact_symbol(symbol: SymbolConfig) -> Any:
    dumped = symbol.model_dump(mode="json", exclude_defaults=True)
    return dumped["symbol"] if list(dumped) == ["symbol"] else dumped
