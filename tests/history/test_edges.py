"""The edge rule: IB's trades minus what live stored, as multisets; timestamps from IB's answer alone."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from ingestion.history.edges import MICROS, TapeTrade, backfill_timestamps, missing_indices


def t(second: int, price: float, size: float = 100, exchange: str | None = "ARCA") -> TapeTrade:
    return TapeTrade(second, price, size, exchange)


def test_at_an_edge_second_only_the_trades_live_did_not_store_are_missing() -> None:
    history = [t(10, 1.0), t(10, 1.1), t(10, 1.2), t(11, 1.3), t(12, 1.4), t(12, 1.5)]
    live = [t(10, 1.0), t(10, 1.1), t(12, 1.5)]  # start edge: the first two; end edge: the last one
    assert missing_indices(history, live) == [2, 3, 4]


def test_identical_trades_in_one_second_count_one_for_one() -> None:
    history = [t(10, 1.0), t(10, 1.0), t(10, 1.0)]
    assert missing_indices(history, [t(10, 1.0)]) == [1, 2]
    assert missing_indices(history, [t(10, 1.0)] * 3) == []


def test_rtvolume_trades_without_an_exchange_match_on_second_price_and_size() -> None:
    history = [t(10, 1.0, 100, "ARCA"), t(10, 1.0, 100, "NSDQ"), t(10, 1.0, 200, "ARCA")]
    assert missing_indices(history, [t(10, 1.0, 100, None)]) == [1, 2]


def test_the_exchange_decides_which_of_two_equal_trades_live_had() -> None:
    history = [t(10, 1.0, 100, "ARCA"), t(10, 1.0, 100, "NSDQ")]
    assert missing_indices(history, [t(10, 1.0, 100, "NSDQ")]) == [0]


def test_a_trade_of_another_second_does_not_match() -> None:
    assert missing_indices([t(10, 1.0)], [t(11, 1.0)]) == [0]


def test_timestamps_depend_on_ibs_answer_only_so_a_second_run_gives_the_same_rows() -> None:
    history = [t(10, 1.0), t(10, 1.1), t(11, 1.2)]
    first = backfill_timestamps(history, [1, 2], set())
    assert first == [10 * MICROS + 1, 11 * MICROS]
    assert backfill_timestamps(history, [1, 2], set()) == first


def test_a_timestamp_held_by_a_live_row_is_moved_by_a_millisecond() -> None:
    history = [t(10, 1.0), t(10, 1.1)]
    assert backfill_timestamps(history, [0, 1], {10 * MICROS}) == [10 * MICROS + 1000, 10 * MICROS + 1]


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([1.0, 1.01]), st.sampled_from([100, 200])), max_size=40
    ),
    st.randoms(use_true_random=False),
)
def test_live_plus_backfill_is_ibs_tape_one_for_one(
    tape: list[tuple[int, float, int]], rng: random.Random
) -> None:
    """Whatever subset live stored (at the edges or anywhere), live + missing = IB's trades, as multisets."""
    history = [t(s, p, z) for s, p, z in sorted(tape, key=lambda x: x[0])]
    live = [trade for trade in history if rng.random() < 0.5]
    if rng.random() < 0.5:
        live = [TapeTrade(x.second, x.price, x.size, None) for x in live]  # RTVolume: no exchange
    missing = [history[i] for i in missing_indices(history, live)]
    key = lambda x: (x.second, x.price, x.size)  # noqa: E731
    assert sorted(map(key, live + missing)) == sorted(map(key, history))
    stamps = backfill_timestamps(history, missing_indices(history, live), set())
    assert len(set(stamps)) == len(stamps)
