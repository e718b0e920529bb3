"""The bench's QuestDB double counts rows sent twice without slowing down as it fills (bench/)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "questdb_server.py"


def _seen_keys() -> type:
    spec = importlib.util.spec_from_file_location("bench_questdb_server", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SeenKeys


def test_in_order_keys_are_new_and_a_repeat_of_any_of_them_is_a_duplicate() -> None:
    seen = _seen_keys()()
    assert all(seen.add(key) for key in range(0, 1000, 10))
    assert [seen.add(key) for key in (0, 500, 990)] == [False, False, False]


def test_a_replay_of_late_keys_finds_exactly_the_rows_sent_twice() -> None:
    """A spool replay: older keys arrive after newer ones, some already stored, some not."""
    seen = _seen_keys()()
    rng = random.Random(3)
    stored = sorted(rng.sample(range(100_000), 5_000))
    for key in stored:
        seen.add(key)
    replay = rng.sample(range(100_000), 3_000)
    fresh = [key for key in replay if key not in set(stored)]
    assert sum(not seen.add(key) for key in replay) == len(replay) - len(fresh)
    assert not any(seen.add(key) for key in replay)  # a second replay: every key is a duplicate now
