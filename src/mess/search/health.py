"""A store's health with its search indexes: what `mess check` finds and, asked to, repairs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mess.search.index import BehindIndex, delete_index, index_states, indexes_blocked, stale_indexes
from mess.search.query import stale_aspect_map
from mess.search.rerank_store import index_command
from mess.store import FeatureStore
from mess.store.check import Problem, check_and_repair, full_check, unblock_lock


@dataclass(frozen=True)
class StoreHealth:
    """Problems still there (after any repair), indexes out of date, indexes lacking tracks added since they were
    built, and what a repair did."""

    problems: list[Problem]
    stale: list[Path]
    repaired: list[str]
    behind: list[BehindIndex] = field(default_factory=list)

    @property
    def damaged(self) -> list[Problem]:
        """The problems that make answers wrong."""
        return [p for p in self.problems if p.damage]

    def to_dict(self) -> dict:
        """JSON-ready form: ok, what was repaired, and every problem (stale indexes as 'stale-index')."""
        return {"ok": not self.damaged, "repaired": self.repaired,
                "problems": [{"kind": p.kind, "run": p.run_id, "damage": p.damage, "message": p.message}
                             for p in self.problems]
                + [{"kind": "stale-index", "run": None, "damage": False, "message": f"{p.name} is out of date"}
                   for p in self.stale]
                + [{"kind": "behind-index", "run": b.run.id, "damage": False, "message": behind_message(b)}
                   for b in self.behind]}


def check_store(path: Path, *, fix: bool = False, on_wait: Callable[[str], None] | None = None) -> StoreHealth:
    """Check the store at ``path`` (without the verify-on-open that refuses a damaged one); with ``fix``, first
    repair what a scan under the write lock finds and the row files allow, and delete stale indexes. StoreError
    when it cannot open; ``on_wait`` hears when the repair waits for another writer."""
    store = FeatureStore(path, readonly=not fix, verify=False, on_wait=on_wait, create=False)
    try:
        problems, actions = _repair(store) if fix else (full_check(store), [])
        odd = indexes_blocked(store)
        if odd is not None:
            problems.append(Problem("not-a-folder", None, f"indexes is {odd}, not the folder of saved indexes, so "
                                    "`mess index` cannot save one; `mess check --repair` moves it aside",
                                    damage=False))
        stale, behind = ([], []) if any(p.kind == "catalog" for p in problems) else index_states(store)
        behind = [] if any(p.damage for p in problems) else behind  # repair first: then they may be stale
        problems += [] if any(p.kind == "catalog" for p in problems) else _stale_aspect_maps(store)
    finally:
        store.close()
    return StoreHealth(problems, stale, actions, behind)


def behind_message(index: BehindIndex) -> str:
    """What an index lacking tracks means, and the `mess index` command that adds them."""
    return (f"{index.path.name} lacks {index.missing} of its {index.tracks} tracks (added since it was built), so "
            "every search builds an exact index in memory instead; "
            f"`{index_command(index.run, index.spec)}` adds them")


def _repair(store: FeatureStore) -> tuple[list[Problem], list[str]]:
    """Repair the store and delete its stale indexes, under one hold of the write lock: (the problems left, what
    was done)."""
    moved = unblock_lock(store)  # a folder named write.lock: no writer, this one included, could take the lock
    with store.writing("mess check --repair"):
        try:
            problems, actions = check_and_repair(store)
            actions = moved + actions
        except ValueError:  # a damaged catalog: the check names it
            return full_check(store), moved
        for index in stale_indexes(store):  # after the repair: the vectors it drops make indexes stale too
            actions.append(delete_index(index))
        odd = indexes_blocked(store)
        if odd is not None:
            aside = store.indexes_dir.with_name(f"indexes.{time.time_ns()}.not-the-indexes")
            store.indexes_dir.rename(aside)
            actions.append(f"moved indexes ({odd}) aside to {aside.name}; delete it when you no longer need it")
    return problems, actions


def _stale_aspect_maps(store: FeatureStore) -> list[Problem]:
    """A 'stale-aspect-map' note per run whose aspect map is not of the run's tracks now, or of its latest probe
    (:func:`~mess.search.query.stale_aspect_map`): answers still use it; `mess probe` maps it again."""
    notes = ((run, stale_aspect_map(store, run)) for run in store.runs())
    return [Problem("stale-aspect-map", run.id, f"{run.model} (run {run.id}): {note}", damage=False)
            for run, note in notes if note is not None]
