"""The simulator's contract universe: what reqContractDetails can find."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """One tradable US listing the simulator knows.

    ``price_cents`` is where the market model starts; ``stock_type`` is IB's ``stockType`` (ETF, COMMON).
    """

    symbol: str
    con_id: int
    primary_exchange: str
    long_name: str
    price_cents: int
    stock_type: str = "ETF"
    sec_type: str = "STK"
    currency: str = "USD"
    industry: str = ""
    category: str = ""

    def __post_init__(self) -> None:
        if self.con_id <= 0:
            # ib_async's Contract.__hash__ raises for conId 0, so a qualified contract must be non-zero.
            msg = f"{self.symbol}: con_id must be > 0"
            raise ValueError(msg)
        if self.price_cents < 100:
            msg = f"{self.symbol}: price_cents must be at least 100"
            raise ValueError(msg)


def _etf(symbol: str, con_id: int, name: str, price_cents: int, primary: str = "ARCA") -> ContractSpec:
    return ContractSpec(symbol, con_id, primary, name, price_cents, "ETF")


def _stock(symbol: str, con_id: int, name: str, price_cents: int) -> ContractSpec:
    return ContractSpec(symbol, con_id, "NASDAQ", name, price_cents, "COMMON", industry="Technology")


DEFAULT_UNIVERSE: tuple[ContractSpec, ...] = (
    _etf("SPY", 756733, "SPDR S&P 500 ETF TRUST", 600_00),
    _etf("QQQ", 320227571, "INVESCO QQQ TRUST SERIES 1", 520_00, "NASDAQ"),
    _etf("IWM", 9579970, "ISHARES RUSSELL 2000 ETF", 225_00),
    _etf("DIA", 73128548, "SPDR DJIA TRUST", 440_00),
    _etf("XLK", 4215235, "TECHNOLOGY SELECT SECT SPDR", 240_00),
    _etf("XLF", 4215210, "FINANCIAL SELECT SECTOR SPDR", 50_00),
    _etf("XLE", 4215217, "ENERGY SELECT SECTOR SPDR", 90_00),
    _etf("XLV", 4215220, "HEALTH CARE SELECT SECTOR", 145_00),
    _etf("XLY", 4215222, "CONSUMER DISCRETIONARY SELT", 215_00),
    _etf("XLI", 4215219, "INDUSTRIAL SELECT SECT SPDR", 135_00),
    _etf("XLP", 4215221, "CONSUMER STAPLES SPDR", 80_00),
    _etf("XLB", 4215218, "MATERIALS SELECT SECTOR SPDR", 90_00),
    _etf("XLRE", 212311938, "REAL ESTATE SELECT SECT SPDR", 42_00),
    _etf("XLU", 4215223, "UTILITIES SELECT SECTOR SPDR", 80_00),
    _etf("XLC", 324060617, "COMMUNICATION SERVICES SPDR", 100_00),
    _stock("AAPL", 265598, "APPLE INC", 230_00),
    _stock("MSFT", 272093, "MICROSOFT CORP", 420_00),
    _stock("NVDA", 4815747, "NVIDIA CORP", 140_00),
    _stock("AMZN", 3691937, "AMAZON.COM INC", 220_00),
    _stock("TSLA", 76792991, "TESLA INC", 400_00),
)

DEFAULT_ETFS: tuple[str, ...] = tuple(spec.symbol for spec in DEFAULT_UNIVERSE[:15])


class Universe:
    """Lookup of contracts by conId or by symbol, the way IB resolves a request."""

    def __init__(self, specs: tuple[ContractSpec, ...]) -> None:
        self._by_symbol = {spec.symbol.upper(): spec for spec in specs}
        self._by_con_id = {spec.con_id: spec for spec in specs}
        if len(self._by_symbol) != len(specs) or len(self._by_con_id) != len(specs):
            msg = "universe symbols and con_ids must be unique"
            raise ValueError(msg)

    def resolve(self, con_id: str, symbol: str, sec_type: str, currency: str) -> ContractSpec | None:
        """The one contract a request names, or None (IB answers error 200).

        A non-zero conId wins over the symbol; secType and currency, when given, must match.
        """
        spec: ContractSpec | None
        if con_id not in ("", "0"):
            try:
                spec = self._by_con_id.get(int(con_id))
            except ValueError:
                return None
            if spec is not None and symbol and symbol.upper() != spec.symbol:
                return None
        else:
            spec = self._by_symbol.get(symbol.upper())
        if spec is None:
            return None
        if sec_type and sec_type != spec.sec_type:
            return None
        if currency and currency.upper() != spec.currency:
            return None
        return spec
