"""IB error and system-message codes, in named sets: never inline numbers elsewhere.

Texts and meanings: IB's TWS API message codes; see docs/IBKR_SETUP_GUIDE.md for the fixes.
"""

from __future__ import annotations

CONNECTIVITY_LOST = frozenset({1100})
RESTORED_DATA_LOST = frozenset({1101})
RESTORED_DATA_KEPT = frozenset({1102})
SYSTEM_CONNECTIVITY = CONNECTIVITY_LOST | RESTORED_DATA_LOST | RESTORED_DATA_KEPT

# Farm notices, by farm kind; "broken" and "ok" codes come in pairs.
FARM_BROKEN = frozenset({2103, 2105, 2157})
FARM_OK = frozenset({2104, 2106, 2158})
FARM_INACTIVE = frozenset({2107, 2108})
FARM_CONNECTING = frozenset({2119})
FARM_KIND = {
    2103: "market_data", 2104: "market_data", 2108: "market_data", 2119: "market_data",
    2105: "historical", 2106: "historical", 2107: "historical",
    2157: "security_definition", 2158: "security_definition",
}  # fmt: skip
FARM_NOTICES = FARM_BROKEN | FARM_OK | FARM_INACTIVE | FARM_CONNECTING

COMPETING_SESSION = frozenset({10197})
CLIENT_ID_IN_USE = frozenset({326})
NOT_CONNECTED = frozenset({502, 504})

UNKNOWN_CONTRACT = frozenset({200})
DEPTH_LIMIT = frozenset({309})
TICK_BY_TICK_LIMIT = frozenset({10190})
MARKET_DATA_LINES_LIMIT = frozenset({101})
PACING = frozenset({100})
# Not subscribed to this data: 354 (no market data permissions), 10089 (needs an API subscription),
# 10092 (deep book not subscribed), 10168 (delayed not enabled), 10186 (delayed not available).
NOT_ENTITLED = frozenset({354, 10089, 10092, 10168, 10186})
# 10167: not subscribed, delayed data shown instead (a warning: data flows, but late).
DELAYED_INSTEAD = frozenset({10167})
DEPTH_RESET = frozenset({317})


def offers_delayed(code: int, text: str) -> bool:
    """A refusal of live data that says delayed data is there for the asking: IB's 354 or 10089
    "...Delayed market data is available." answers a live request of a delayed-only account."""
    return code in NOT_ENTITLED and "delayed market data is available" in text.lower()
