"""Overload as a state: what the pipeline sheds when the record cannot keep up, and when it stops.

The QuestDB writer is the one sink that can fall behind (the cache conflates, and keeps a bounded tail of
trades), so its backlog decides. The writer tells apart two reasons for a backlog:

- QuestDB does not answer (a send outstanding longer than the writer calls *stalled*): QuestDB is down or
  slow, and the writer spills to its spool, where the rows wait and nothing is lost. Nothing is shed here.
- QuestDB answers, but the rows come faster than the daemon and QuestDB together carry them: that is
  overload, and the pipeline sheds at its intake, counted per kind and alerted, instead of spooling what
  the machine cannot carry (the spool would then only grow, and take the CPU it is short of to write it).

Levels, from the backlog (events queued in the pipeline + rows waiting in the writer) against the writer's
capacity (the rows it holds in memory before it spills):

- ``normal``: nothing is shed.
- ``shedding_quotes`` from :data:`SHED_QUOTES_AT` of the capacity: Level 1 quotes are shed. Each quote
  carries the whole top of book, so the next one restores the latest state (the cache and /health lose
  nothing lasting); the L1 record loses those rows, and says so. Depth and trades still go through: a
  depth update missed would leave the cache's book wrong, and trades are the record of what traded.
- ``shedding_all`` from :data:`SHED_ALL_AT` of the capacity: every event is shed.
- back to ``normal`` once the backlog is down to :data:`RECOVER_AT` of the capacity (hysteresis, so the
  state does not flap with every read).

Trade shedding (``shedding_all``, until the level is ``normal`` again) leaves a hole in
``time_and_sales``: the pipeline tells a :class:`ShedTrades` listener (the gap tracker) which trades it
shed and when it stops, so the hole is filled back from IB's history like any other gap.

An *episode* (one alert when it starts, one when it ends, with what was shed) lasts from the first shed
event until the level has stayed ``normal`` for :data:`CALM_SECONDS`: at twice the sustainable rate the
level goes back and forth every few seconds, and an alert pair each time would bury the operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ingestion.events import Trade

Level = Literal["normal", "shedding_quotes", "shedding_all"]

SHED_QUOTES_AT = 0.4
SHED_ALL_AT = 0.8
RECOVER_AT = 0.1
CALM_SECONDS = 10.0


class Backpressure(Protocol):
    """What the pipeline reads of the sink that can fall behind (the QuestDB writer)."""

    @property
    def backlog_rows(self) -> int: ...

    @property
    def capacity_rows(self) -> int: ...

    @property
    def stalled(self) -> bool: ...


class ShedTrades(Protocol):
    """Who must know which trades the pipeline shed: the record has a hole there until it is filled back."""

    def trades_shed(self, trades: Sequence[Trade]) -> None:
        """``trades``, in arrival order, were shed; called inline from the pipeline's intake."""

    def trade_shedding_over(self) -> None:
        """Trades go through again (the level left ``shedding_all``)."""


@dataclass
class Episode:
    """One overload, from its start to its end: what was shed, by kind."""

    started: float  # monotonic
    started_ns: int
    shed: dict[str, int] = field(default_factory=dict)
    calm_since: float | None = None  # monotonic, since the level is back to normal

    @property
    def total(self) -> int:
        return sum(self.shed.values())


@dataclass
class OverloadState:
    """The level, decided from the backlog on every read; ``change`` says when it moved."""

    source: Backpressure
    monotonic: Callable[[], float] = time.monotonic
    level: Level = "normal"
    episode: Episode | None = None
    episodes: int = 0

    def update(self, queued: int, now_ns: int) -> tuple[Level, Level, bool]:
        """The level before and after reading the backlog (``queued`` events wait in the pipeline), and
        whether this began an episode."""
        before = self.level
        source = self.source
        if source.stalled:
            # QuestDB does not answer: the writer's spool takes the rows; nothing to shed for it.
            self.level = "normal"
        else:
            capacity = source.capacity_rows
            backlog = queued + source.backlog_rows
            if backlog >= SHED_ALL_AT * capacity:
                self.level = "shedding_all"
            elif backlog >= SHED_QUOTES_AT * capacity:
                self.level = "shedding_quotes" if self.level != "shedding_all" else "shedding_all"
            elif backlog <= RECOVER_AT * capacity:
                self.level = "normal"
        episode = self.episode
        if self.level != "normal":
            if episode is None:
                self.episode = Episode(self.monotonic(), now_ns)
                self.episodes += 1
                return before, self.level, True
            episode.calm_since = None
        elif episode is not None and episode.calm_since is None:
            episode.calm_since = self.monotonic()
        return before, self.level, False

    def calm_episode_over(self) -> Episode | None:
        """The episode, ended, once the level has been normal for CALM_SECONDS; else None."""
        episode = self.episode
        if episode is None or episode.calm_since is None:
            return None
        if self.monotonic() - episode.calm_since < CALM_SECONDS:
            return None
        self.episode = None
        return episode

    def snapshot(self) -> dict[str, object]:
        episode = self.episode
        return {
            "state": self.level,
            "episodes": self.episodes,
            "episode_seconds": None if episode is None else round(self.monotonic() - episode.started, 1),
            "shed_this_episode": {} if episode is None else dict(episode.shed),
        }
