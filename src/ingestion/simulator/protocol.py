"""TWS socket protocol: framing, field encoding and the version-dependent message layouts.

See /work/shared/reference/tws-wire-protocol.md for the facts behind every layout here.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Final

from ingestion.simulator.contracts import ContractSpec

HANDSHAKE_PREFIX: Final = b"API\0"
HEADER_SIZE: Final = 4

# Layout gates (ibapi server_versions.py), only those that change messages this simulator sends.
V_SIZE_RULES: Final = 164  # CONTRACT_DATA loses its version field and mdSizeMultiplier
V_SIZE_MIN_TICK_ONLY: Final = 163  # CONTRACT_DATA has one sizeMinTick field at exactly this version
V_ADVANCED_REJECT: Final = 166  # ERR_MSG gains advancedOrderRejectJson
V_SMART_DEPTH: Final = 146  # updateMktDepthL2 carries isSmartDepth


class In(IntEnum):
    """Message ids a client sends."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    REQ_OPEN_ORDERS = 5
    REQ_ACCT_DATA = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DATA = 9
    REQ_MKT_DEPTH = 10
    CANCEL_MKT_DEPTH = 11
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_HEAD_TIMESTAMP = 87
    CANCEL_HEAD_TIMESTAMP = 90
    REQ_HISTORICAL_TICKS = 96
    REQ_TICK_BY_TICK = 97
    CANCEL_TICK_BY_TICK = 98
    REQ_COMPLETED_ORDERS = 99


class Out(IntEnum):
    """Message ids the gateway sends."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ERR_MSG = 4
    ACCT_VALUE = 6
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    MARKET_DEPTH = 12
    MARKET_DEPTH_L2 = 13
    MANAGED_ACCTS = 15
    HISTORICAL_DATA = 17
    TICK_GENERIC = 45
    TICK_STRING = 46
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    TICK_REQ_PARAMS = 81
    HEAD_TIMESTAMP = 88
    HISTORICAL_TICKS = 96
    HISTORICAL_TICKS_BID_ASK = 97
    HISTORICAL_TICKS_LAST = 98
    TICK_BY_TICK = 99
    COMPLETED_ORDERS_END = 102


class TickType(IntEnum):
    """The tick types the market model emits."""

    BID_SIZE = 0
    BID = 1
    ASK = 2
    ASK_SIZE = 3
    LAST = 4
    LAST_SIZE = 5
    HIGH = 6
    LOW = 7
    VOLUME = 8
    CLOSE = 9
    OPEN = 14
    LAST_TIMESTAMP = 45
    RT_VOLUME = 48


class TickByTickType(IntEnum):
    """Wire codes of TICK_BY_TICK messages, keyed by the request's tickType string below."""

    LAST = 1
    ALL_LAST = 2
    BID_ASK = 3
    MID_POINT = 4


TICK_BY_TICK_TYPES: Final = {
    "Last": TickByTickType.LAST,
    "AllLast": TickByTickType.ALL_LAST,
    "BidAsk": TickByTickType.BID_ASK,
    "MidPoint": TickByTickType.MID_POINT,
}

GENERIC_TICK_RT_VOLUME: Final = "233"


class ErrorCode(IntEnum):
    """IB error and system message codes the simulator produces."""

    PACING = 100
    MAX_TICKERS = 101
    HISTORICAL_DATA = 162
    NO_SECURITY_DEFINITION = 200
    MAX_DEPTH_BOOKS = 309
    DEPTH_RESET = 317
    VALIDATION = 321
    DUPLICATE_TICKER_ID = 322
    PROCESSING = 322  # "Error processing request": the same code, other causes
    NOT_SUBSCRIBED = 354
    CLIENT_ID_IN_USE = 326
    CONNECTIVITY_LOST = 1100
    RESTORED_DATA_LOST = 1101
    RESTORED_DATA_MAINTAINED = 1102
    MARKET_FARM_BROKEN = 2103
    MARKET_FARM_OK = 2104
    HMDS_FARM_BROKEN = 2105
    HMDS_FARM_OK = 2106
    HMDS_FARM_INACTIVE = 2107
    MARKET_FARM_INACTIVE = 2108
    SERVER_CONNECTIVITY_BROKEN = 2110
    MARKET_FARM_CONNECTING = 2119
    SECDEF_FARM_BROKEN = 2157
    SECDEF_FARM_OK = 2158
    INVALID_END_DATE = 10314
    MAX_TICK_BY_TICK = 10190
    COMPETING_LIVE_SESSION = 10197


# IB's own texts (ASCII only, no backslashes: ibapi decodes error text with unicode-escape).
ERROR_TEXTS: Final[dict[int, str]] = {
    ErrorCode.PACING: "Max rate of messages per second has been exceeded:max={limit} rec={received} (1)",
    ErrorCode.MAX_TICKERS: "Max number of tickers has been reached.",
    ErrorCode.HISTORICAL_DATA: "Historical Market Data Service error message:{detail}",
    ErrorCode.VALIDATION: "Error validating request.-'{letter}' : cause - {detail}",
    ErrorCode.INVALID_END_DATE: (
        "End Date/Time: The date, time, or time-zone entered is invalid. The correct format is "
        "yyyymmdd hh:mm:ss xx/xxxx where yyyymmdd and xx/xxxx are optional. E.g.: 20031126 15:59:00 "
        "US/Eastern  Note that there is a space between the date and time, and between the time and "
        "time-zone.  If no date is specified, current date is assumed. If no time-zone is specified, "
        "local time-zone is assumed(deprecated).  You can also provide yyyymmddd-hh:mm:ss time is in "
        "UTC. Note that there is a dash between the date and time in UTC notation."
    ),
    ErrorCode.NOT_SUBSCRIBED: "Requested market data is not subscribed. Delayed market data is available.",
    ErrorCode.NO_SECURITY_DEFINITION: "No security definition has been found for the request",
    ErrorCode.MAX_DEPTH_BOOKS: "Max number ({limit}) of market depth requests has been reached",
    ErrorCode.DEPTH_RESET: (
        "Market depth data has been RESET. Please empty deep book contents before applying any new entries."
    ),
    ErrorCode.DUPLICATE_TICKER_ID: "Error processing request.-'bW' : cause - Duplicate ticker id",
    ErrorCode.CLIENT_ID_IN_USE: (
        "Unable to connect as the client id is already in use. Retry with a unique client id."
    ),
    ErrorCode.CONNECTIVITY_LOST: "Connectivity between IB and Trader Workstation has been lost.",
    ErrorCode.RESTORED_DATA_LOST: (
        "Connectivity between IB and Trader Workstation has been restored - data lost."
    ),
    ErrorCode.RESTORED_DATA_MAINTAINED: (
        "Connectivity between IB and Trader Workstation has been restored - data maintained."
    ),
    ErrorCode.MARKET_FARM_BROKEN: "Market data farm connection is broken:usfarm",
    ErrorCode.MARKET_FARM_OK: "Market data farm connection is OK:usfarm",
    ErrorCode.HMDS_FARM_BROKEN: "HMDS data farm connection is broken:ushmds",
    ErrorCode.HMDS_FARM_OK: "HMDS data farm connection is OK:ushmds",
    ErrorCode.HMDS_FARM_INACTIVE: (
        "HMDS data farm connection is inactive but should be available upon demand.ushmds"
    ),
    ErrorCode.MARKET_FARM_INACTIVE: (
        "Market data farm connection is inactive but should be available upon demand.usfarm"
    ),
    ErrorCode.SERVER_CONNECTIVITY_BROKEN: (
        "Connectivity between Trader Workstation and server is broken. It will be restored automatically."
    ),
    ErrorCode.MARKET_FARM_CONNECTING: "Market data farm is connecting:usfarm",
    ErrorCode.SECDEF_FARM_BROKEN: "Sec-def data farm connection is broken:secdefnj",
    ErrorCode.SECDEF_FARM_OK: "Sec-def data farm connection is OK:secdefnj",
    ErrorCode.MAX_TICK_BY_TICK: "Max number of tick-by-tick requests has been reached.",
    ErrorCode.COMPETING_LIVE_SESSION: "No market data during competing live session",
}

# Codes POST /error may broadcast: IB's system and farm notices.
SYSTEM_MESSAGE_CODES: Final = frozenset(
    {
        ErrorCode.CONNECTIVITY_LOST,
        ErrorCode.RESTORED_DATA_LOST,
        ErrorCode.RESTORED_DATA_MAINTAINED,
        ErrorCode.MARKET_FARM_BROKEN,
        ErrorCode.MARKET_FARM_OK,
        ErrorCode.HMDS_FARM_BROKEN,
        ErrorCode.HMDS_FARM_OK,
        ErrorCode.HMDS_FARM_INACTIVE,
        ErrorCode.MARKET_FARM_INACTIVE,
        ErrorCode.SERVER_CONNECTIVITY_BROKEN,
        ErrorCode.MARKET_FARM_CONNECTING,
        ErrorCode.SECDEF_FARM_BROKEN,
        ErrorCode.SECDEF_FARM_OK,
        ErrorCode.COMPETING_LIVE_SESSION,
    }
)

# Sent after startApi, as a real gateway does once its farms are up.
STARTUP_FARM_NOTICES: Final = (ErrorCode.MARKET_FARM_OK, ErrorCode.HMDS_FARM_OK, ErrorCode.SECDEF_FARM_OK)


class ProtocolError(Exception):
    """A client sent bytes that are not the TWS protocol; the connection is closed."""


def encode(fields: tuple[object, ...] | list[object]) -> bytes:
    """One length-prefixed frame; every field, the last included, is NUL-terminated."""
    payload = "".join([f"{value}\0" for value in fields]).encode("ascii")
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


def encode_text(payload: str) -> bytes:
    """Frame a payload that is already NUL-terminated text (the hot path builds these directly)."""
    data = payload.encode("ascii")
    return len(data).to_bytes(HEADER_SIZE, "big") + data


def format_price(cents: int) -> str:
    """Cents as a decimal string with two places, without float rounding noise."""
    return f"{cents // 100}.{cents % 100:02d}"


_VERSION_RE: Final = re.compile(r"v(\d+)(?:\.\.(\d+))?")


def parse_version_range(payload: bytes) -> tuple[int, int]:
    """The (min, max) versions of the handshake payload, e.g. ``v157..178 +PACEAPI``."""
    try:
        text = payload.decode("ascii").rstrip("\0")
    except UnicodeDecodeError as exc:
        raise ProtocolError("handshake version is not ASCII") from exc
    match = _VERSION_RE.match(text.split(" ", 1)[0])
    if match is None:
        msg = f"bad handshake version {text[:40]!r}"
        raise ProtocolError(msg)
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if low > high:
        msg = f"bad handshake version range {low}..{high}"
        raise ProtocolError(msg)
    return low, high


def split_fields(payload: bytes) -> list[str]:
    """The fields of one client frame; the payload must end with NUL."""
    if not payload or payload[-1] != 0:
        raise ProtocolError("frame does not end with a NUL")
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("frame is not ASCII") from exc
    fields = text.split("\0")
    fields.pop()
    if not fields[0].isdigit():
        msg = f"message id {fields[0][:20]!r} is not a number"
        raise ProtocolError(msg)
    return fields


def error_frame(version: int, req_id: int, code: int, text: str) -> bytes:
    """ERR_MSG in the layout of the negotiated version."""
    if version >= V_ADVANCED_REJECT:
        return encode((Out.ERR_MSG, 2, req_id, code, text, ""))
    return encode((Out.ERR_MSG, 2, req_id, code, text))


_ORDER_TYPES: Final = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,"
    "GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,LOC,MIT,MKT,MOC,MTL,NGCOMB,NONALGO,OCA,PEGBENCH,REL,RELPCTOFS,"
    "RTH,SCALE,SMARTSTG,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,WHATIF"
)
_VALID_EXCHANGES: Final = (
    "SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,ISLAND,DRCTEDGE,BEX,BATS,EDGEA,CSFBALGO,JEFFALGO,"
    "BYX,IEX,EDGX,FOXRIVER,PEARL,NYSENAT,LTSE,MEMX,PSX"
)
_TRADING_HOURS: Final = "20250102:0400-20250102:2000;20250103:0400-20250103:2000"
_LIQUID_HOURS: Final = "20250102:0930-20250102:1600;20250103:0930-20250103:1600"


def contract_data_frame(version: int, req_id: int, spec: ContractSpec) -> bytes:
    """CONTRACT_DATA for a US stock on SMART, in the layout of the negotiated version."""
    head: list[object] = [Out.CONTRACT_DATA]
    if version < V_SIZE_RULES:
        head.append(8)
    head += [req_id, spec.symbol, spec.sec_type, "", "0", "", "SMART", spec.currency, spec.symbol]
    head += [spec.symbol, spec.symbol, spec.con_id, "0.01"]
    if version < V_SIZE_RULES:
        head.append(1)  # mdSizeMultiplier
    head += ["", _ORDER_TYPES, _VALID_EXCHANGES, 1, 0, spec.long_name, spec.primary_exchange, ""]
    head += [spec.industry, spec.category, "", "US/Eastern", _TRADING_HOURS, _LIQUID_HOURS, "", ""]
    head += [0]  # secIdCount: a literal 0, ib_async calls int() on it
    head += [1, "", "", "26", "", spec.stock_type]
    if version == V_SIZE_MIN_TICK_ONLY:
        head.append("0.0001")
    if version >= V_SIZE_RULES:
        head += ["0.0001", "0.0001", "100"]
    return encode(head)
