"""The store's runs (model, revision, window policy) and where each run's model came from."""

from __future__ import annotations

import json
import shlex
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from mess.constants import DEFAULT_MAX_WINDOWS, DEFAULT_WINDOW_SECONDS
from mess.store.errors import CATALOG_ADVICE, StoreDamaged, StoreError
from mess.store.paths import printable, replace_file
from mess.store.records import Run, RunKey
from mess.store.tracks import TrackCatalog

CAUGHT_UP = 0.9  # the share of the fullest run's files a model's run must have handled to be the default


class RunCatalog(TrackCatalog):
    """The runs: which model, revision and window policy made a set of vectors, and how to pick one."""

    _caught_up: tuple[tuple[int, int], list[tuple[str, int]]] | None = None  # see caught_up_models

    def ensure_run(self, key: RunKey) -> Run:
        """Get or create the run of this model, revision and window policy."""
        if not key.layer_dims or min(key.layer_dims) < 1:  # rows of no values read back as damage ("run check")
            raise StoreError(f"{key.model} gives layers of sizes {list(key.layer_dims)}; every layer needs values")
        with self._write():
            self.db.execute(
                "INSERT OR IGNORE INTO runs (model, revision, policy, sample_rate, layer_names, layer_dims, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.model,
                    key.revision,
                    key.policy,
                    key.sample_rate,
                    json.dumps(list(key.layer_names)),
                    json.dumps(list(key.layer_dims)),
                    time.time(),
                ),
            )
            row = self.db.execute(
                "SELECT * FROM runs WHERE model=? AND revision=? AND policy=?", (key.model, key.revision, key.policy)
            ).fetchone()
        run = self._run(row)
        if (run.sample_rate, run.layer_dims) != (key.sample_rate, tuple(key.layer_dims)):  # rows of other sizes: damage
            raise StoreError(f"{key.model} revision {key.revision} now makes layers of sizes {list(key.layer_dims)} at "
                             f"{key.sample_rate} Hz, but its run {run.id} here holds {list(run.layer_dims)} at "
                             f"{run.sample_rate} Hz: a model whose layers change needs a new revision "
                             "(ModelInfo.revision)")
        return run

    def runs(self) -> list[Run]:
        """All runs, oldest first."""
        return [self._run(r) for r in self._query("SELECT * FROM runs ORDER BY id")]

    def embedded_models(self) -> list[str]:
        """The models of the runs holding vectors, oldest run first (a run `mess extract` has just begun holds none
        until its first batch is committed); commands naming no model choose among those of them that have caught up
        (:meth:`caught_up_models`)."""
        return [row["model"] for row in self._query(
            "SELECT r.model FROM runs r WHERE EXISTS (SELECT 1 FROM vectors v WHERE v.run_id = r.id) ORDER BY r.id")]

    def default_choice(self) -> str | None:
        """The model commands naming none use: the store's ``default-model`` setting, else the best-ranked model (see
        :mod:`mess.store.config`) among those that have caught up with the collection (:meth:`caught_up_models`);
        None when nothing is extracted.

        Raises:
            ConfigError: the setting names a model with no vectors here (never a silent fallback).
        """
        from mess.store.config import preferred_model, read_config

        embedded = self.embedded_models()
        configured = read_config(self.root).get("default-model")
        if configured or not embedded:
            return preferred_model(embedded or [r.model for r in self.runs()], configured)
        return preferred_model(self.caught_up_models())

    def caught_up_models(self) -> list[str]:
        """The models holding vectors whose best run has handled (embedded, or recorded as failed) at least
        :data:`CAUGHT_UP` of the catalogued files the fullest run has, oldest run first: a better model part-way
        through its first extract is not the default until it holds most of the collection, so a server or command
        naming no model never shrinks to the few tracks it holds so far; files added since and extracted by another
        model alone do not demote it. Kept on this store until the catalog changes (not in the shared memo, whose
        waits for another thread's computation could deadlock a reader holding the connection: see
        :meth:`snapshot`)."""
        version = self.version()
        kept = self._caught_up
        if kept is not None and kept[0] == version:
            counts = kept[1]
        else:
            counts = [(row["model"], row["handled"]) for row in self._query(
                "SELECT r.model, (SELECT COUNT(*) FROM tracks t WHERE"
                " EXISTS (SELECT 1 FROM vectors v WHERE v.run_id = r.id AND v.content_hash = t.content_hash) OR"
                " EXISTS (SELECT 1 FROM failures f WHERE f.run_id = r.id AND f.content_hash = t.content_hash))"
                " AS handled FROM runs r WHERE EXISTS (SELECT 1 FROM vectors v WHERE v.run_id = r.id) ORDER BY r.id")]
            self._caught_up = (version, counts)
        most = max((n for _, n in counts), default=0)
        return list(dict.fromkeys(model for model, n in counts if n >= CAUGHT_UP * most))

    def run(self, model: str | None = None) -> Run:
        """The run of ``model`` (a name or local model folder) that covers the most tracks, the newest of equals.

        A model extracted again with another window policy or revision has a second run; until that run holds as
        many of the collection's tracks, commands keep answering from the first (the newest run alone would hide
        every track it lacks). ``NAME@RUN_ID`` or ``run:RUN_ID`` picks one run (the ids `mess info` lists). With
        ``model`` None: :meth:`default_choice` (a StoreError when the ``default-model`` setting names a model with no
        vectors here), not the latest run.
        """
        from mess.store.config import ConfigError, model_key, run_choice

        runs = self.runs()
        names = [r.model for r in runs]
        if model:
            try:
                choice = run_choice(model, names)
            except ConfigError as exc:
                raise StoreError(str(exc)) from None
            if choice is not None:
                return _chosen_run(runs, *choice)
            model = model_key(model, names)
        else:
            try:
                model = self.default_choice()
            except ConfigError as exc:
                raise StoreError(str(exc)) from None
        sql = ("SELECT r.*, (SELECT COUNT(*) FROM tracks t JOIN vectors v ON v.content_hash = t.content_hash"
               " AND v.run_id = r.id) AS covered FROM runs r")
        args: tuple[str, ...] = ()
        if model:
            sql, args = sql + " WHERE r.model=?", (model,)
        row = self._one(sql + " ORDER BY covered DESC, r.id DESC LIMIT 1", args)
        if row is None:
            known = sorted({r.model for r in self.runs()})
            if not model:  # no run at all: an extract stopped before it embedded, or made none
                raise StoreError(f"no vectors in {self.root} yet; run `mess extract` first")
            raise StoreError(f"no vectors for model {model!r} in {self.root}; extracted models: {known or 'none'}")
        return self._run(row)

    def _run(self, row: sqlite3.Row) -> Run:
        """A run from its catalog row; a row whose layers cannot be read (damaged bytes) is :class:`StoreDamaged`."""
        try:
            names, dims = json.loads(row["layer_names"]), json.loads(row["layer_dims"])
        except (ValueError, TypeError):  # not JSON, or not text (UnicodeDecodeError is a ValueError)
            names = dims = None
        if not (isinstance(names, list) and isinstance(dims, list) and len(names) == len(dims)
                and all(isinstance(n, str) for n in names)
                and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)):
            raise StoreDamaged(f"{self.root} is damaged: the catalog's record of run {row['id']} "
                               f"({printable(str(row['model']))}) does not list its layers; {CATALOG_ADVICE}")
        return Run(
            model=row["model"],
            revision=row["revision"],
            policy=row["policy"],
            sample_rate=row["sample_rate"],
            layer_names=tuple(names),
            layer_dims=tuple(dims),
            id=row["id"],
        )

    def model_option(self, run: Run) -> str:
        """What ``--model`` picks ``run`` with: its model's name, or ``NAME@RUN_ID`` when the name picks another run
        (:meth:`run`)."""
        return run.model if self.run(run.model).id == run.id else f"{run.model}@{run.id}"

    def _run_folder(self, run: Run) -> Path:
        """``STORE/runs/ID``: the run's row files (track/, segment/), derived sets (derived/) and model record."""
        return self.root / "runs" / str(run.id)

    # ---- where a run's model came from ---------------------------------------------------
    def model_source_path(self, run: Run) -> Path:
        """``runs/ID/source.json``: the record :meth:`set_model_source` writes."""
        return self._run_folder(run) / "source.json"

    def set_model_source(self, run: Run, source: dict[str, str]) -> None:
        """Record, as plain data, how to load the run's model again where its name cannot (an ``.onnx`` file's
        path, preset and revision), replacing the record whole (atomically), under the write lock.

        A hint for embedding new files, never trusted as is: the loader checks the file against the run's revision.
        """
        with self._write():
            replace_file(self.model_source_path(run), (json.dumps(source, indent=1, sort_keys=True) + "\n").encode())

    def extract_options(self, run: Run) -> str:
        """The options `mess extract FOLDER` takes to embed files into ``run`` (not a new run): ``--model`` and the
        model file (with its ``--preset``) an ``.onnx`` run records (its name, the file's stem, loads no model), else
        ``--model`` and the run's model name; then ``--window`` and ``--max-windows`` where not the defaults."""
        try:
            source = self.model_source(run)
        except StoreError:  # a damaged record: the run's name is all there is to say
            source = None
        if source and "path" in source:
            preset = f" --preset {shlex.quote(source['preset'])}" if source.get("preset") else ""
            options = f"--model {shlex.quote(source['path'])}{preset}"
        else:
            options = f"--model {run.model}"
        policy = json.loads(run.policy)
        if (window := policy.get("window_seconds", DEFAULT_WINDOW_SECONDS)) != DEFAULT_WINDOW_SECONDS:
            options += f" --window {float(window)!r}".removesuffix(".0")  # exact (:g gave 12.3457)
        if (count := policy.get("max_windows", DEFAULT_MAX_WINDOWS)) != DEFAULT_MAX_WINDOWS:
            options += f" --max-windows {count}"
        return options

    def model_source(self, run: Run) -> dict[str, str] | None:
        """The run's record of where its model came from (see :meth:`set_model_source`); None when it has none.

        Raises StoreError (one line) when the record cannot be read or is not a JSON object of strings.
        """
        path = self.model_source_path(run)
        where = f"runs/{run.id}/source.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {where} in the store at {self.root} ({exc.strerror or exc}), the record "
                             f"of where {run.model}'s model file came from") from None
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        if not (isinstance(record, dict) and record and all(isinstance(v, str) for v in record.values())):
            raise StoreError(f"{where} in the store at {self.root}, the record of where {run.model}'s model file came "
                             "from, is damaged; run `mess extract` with the model file again to record it anew")
        return record


def _chosen_run(runs: Sequence[Run], model: str | None, run_id: int) -> Run:
    """The run ``run_id`` of ``runs``, which must be of ``model`` when given; a StoreError naming the runs when not."""
    found = next((r for r in runs if r.id == run_id), None)
    if found is not None and model in (None, found.model):
        return found
    if found is not None:
        theirs = ", ".join(f"{r.model}@{r.id}" for r in runs if r.model == model)
        raise StoreError(f"run {run_id} is a {found.model} run, not {model}'s; "
                         + (f"{model}'s runs: {theirs}" if theirs else f"{model} has no run in this store"))
    listed = ", ".join(f"{r.model}@{r.id}" for r in runs) or "none (run `mess extract` first)"
    raise StoreError(f"no run {run_id} in this store; its runs: {listed} (see `mess info`)")
