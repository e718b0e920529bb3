"""Every option of the gateway simulator, in one frozen object handed to each component."""

from __future__ import annotations

from dataclasses import dataclass, field

from ingestion.simulator.contracts import DEFAULT_UNIVERSE, ContractSpec
from ingestion.simulator.entitlement import Entitlement
from ingestion.simulator.hours import SESSION_CHOICES

# A realistic total message rate for a handful of subscriptions on a real gateway.
DEFAULT_RATE = 2_000.0

# Trades each symbol's tape keeps for history: 1,000,000 trades are 17 MB (17 bytes each), over an
# hour of a symbol trading 200 times a second (3,000 trades/s over 15 ETFs) and about 17 hours at the
# real rate. Quotes (24 bytes each) serve only BID_ASK and MIDPOINT ticks, which the daemon does not
# fill back by default: a quarter as many. 20 symbols stay under about 460 MB however long it runs.
DEFAULT_TAPE_LIMIT = 1_000_000
DEFAULT_QUOTE_LIMIT = 250_000

# The highest version this simulator speaks; at 201 and above IB switches to protobuf bodies.
MAX_SERVER_VERSION = 178
# ib_async and ib_insync refuse anything below 157, IB's own 9.81 client asks for 100..157.
MIN_SERVER_VERSION = 100


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Options of one simulator instance.

    Args:
        host: interface for both listeners.
        port: TWS API port; 0 picks a free one (read it back from ``Simulator.port``).
        control_port: HTTP control API port; 0 picks a free one, ``None`` disables the control API.
        rate: total streaming messages per second over all subscriptions of all clients;
            0 means unthrottled (as fast as the sockets drain).
        seed: seed of the market model: the n-th event of a symbol depends only on it (with the same
            clock and requests, the bytes sent are identical too).
        max_depth_books: market depth subscriptions per client before error 309.
        max_tick_by_tick: tick-by-tick subscriptions per client before error 10190.
        max_market_data_lines: streaming reqMktData per client before error 101.
        pacing_limit: requests per second per client before error 100; ``None`` disables pacing.
        accounts: managed accounts reported to every client.
        next_valid_id: first order id reported after startApi (fixed for determinism).
        server_version: highest API version negotiated (the answer is min(this, client max)).
        depth_rows: rows per side of every depth book.
        session: when the market trades: ``always`` (UTC days, tests at any hour) or ``nyse``.
        tape_limit: trades each symbol keeps for history (the oldest quarter goes when full).
        quote_limit: quotes (top-of-book changes) each symbol keeps for BID_ASK / MIDPOINT ticks.
        hmds_latency: seconds before a historical request is answered (requests are open meanwhile).
        paused: start with the market paused (``resume`` starts it; tests that need exact content).
        max_frame_size: largest client frame accepted; bigger ones close that client.
        universe: the contracts the simulator knows.
        not_entitled: symbols this account has no market data subscription for: reqMktData,
            reqMktDepth and reqTickByTickData on them get error 354, as IB answers.
        entitlement: the account's market data permission at start: ``live``, ``delayed`` (delayed
            data only: 10167 and delayed ticks after reqMarketDataType(3), 354 otherwise) or ``none``
            (see entitlement.py); ``POST /entitlement`` changes it for later requests.
    """

    host: str = "127.0.0.1"
    port: int = 4002
    control_port: int | None = 4080
    rate: float = DEFAULT_RATE
    seed: int = 1
    max_depth_books: int = 3
    max_tick_by_tick: int = 3
    max_market_data_lines: int = 100
    pacing_limit: int | None = None
    accounts: tuple[str, ...] = ("DU1234567",)
    next_valid_id: int = 1
    server_version: int = MAX_SERVER_VERSION
    depth_rows: int = 10
    session: str = "always"
    tape_limit: int = DEFAULT_TAPE_LIMIT
    quote_limit: int = DEFAULT_QUOTE_LIMIT
    hmds_latency: float = 0.01
    paused: bool = False
    max_frame_size: int = 0xFFFFFF
    universe: tuple[ContractSpec, ...] = field(default=DEFAULT_UNIVERSE)
    not_entitled: frozenset[str] = frozenset()
    entitlement: Entitlement = Entitlement.LIVE

    def __post_init__(self) -> None:
        if self.rate < 0:
            msg = f"rate must be >= 0 (0 = unthrottled), got {self.rate}"
            raise ValueError(msg)
        if not MIN_SERVER_VERSION <= self.server_version <= MAX_SERVER_VERSION:
            msg = f"server_version must be in {MIN_SERVER_VERSION}..{MAX_SERVER_VERSION}"
            raise ValueError(msg)
        if not self.accounts or not all(self.accounts):
            # ib_async never becomes ready with an empty managedAccounts list.
            msg = "accounts must name at least one account"
            raise ValueError(msg)
        if not 1 <= self.depth_rows <= 10:
            msg = f"depth_rows must be in 1..10, got {self.depth_rows}"
            raise ValueError(msg)
        if self.session not in SESSION_CHOICES:
            msg = f"session must be one of {SESSION_CHOICES}, got {self.session!r}"
            raise ValueError(msg)
        for name in ("tape_limit", "quote_limit"):
            if getattr(self, name) < 1000:
                msg = f"{name} must be at least 1000, got {getattr(self, name)}"
                raise ValueError(msg)
        if self.hmds_latency < 0:
            msg = "hmds_latency must be >= 0"
            raise ValueError(msg)
        for name in ("max_depth_books", "max_tick_by_tick", "max_market_data_lines"):
            if getattr(self, name) < 0:
                msg = f"{name} must be >= 0"
                raise ValueError(msg)
