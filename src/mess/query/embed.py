"""Embed an external audio file with a stored run's model and policy, and make it a search seed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from mess.audio.names import credit_key
from mess.constants import FUSED, file_title, stamp_matches
from mess.extract.runs import run_policy
from mess.fusion.data import FusionError
from mess.models.registry import ModelError, load_run_model
from mess.search.query import TrackQuery, collection_query
from mess.search.vectors import track_by_hash
from mess.store import FeatureStore, Run, StoreError, is_track_id
from mess.store.paths import expanded, printable

log = logging.getLogger(__name__)
UNKNOWN_QUERY = "no track of the collection is named so"  # a query that is neither a track nor a file


def resolve_query(store: FeatureStore, ref: str | Path | int, run: Run,
                  on_warning: Callable[[str], None] | None = None) -> TrackQuery:
    """A track id, a collection path or file name, or any audio file (embedded with the run's model).

    A collection file changed since it was extracted is embedded as it is now, said in one line to ``on_warning``
    (default: this module's logger); a track id (or a file name alone) still names the catalogued entry, and
    answers from its stored vectors with that warning. Raises StoreError when nothing matches or the file cannot be
    embedded.
    """
    if not str(ref):  # an unset shell variable: not the working folder, which Path('') is
        raise StoreError("the query is empty: give a track id, a file of the collection or an audio file")
    path = expanded(str(ref))
    if is_track_id(str(ref)) or not _is(path, Path.is_file):
        try:
            found = collection_query(store, ref)
        except StoreError as exc:
            if not is_track_id(str(ref)) and _is(path, Path.is_dir):  # was 'unknown track'
                raise StoreError(f"{printable(str(path))} is a folder, not an audio file or a track (`mess extract` "
                                 "adds a folder's files to the collection)") from None
            if not is_track_id(str(ref)) and _is(path, Path.is_symlink) and not _is(path, Path.exists):  # `ls` lists it
                raise StoreError(f"{printable(str(path))}: a link to {printable(str(path.readlink()))}, which is "
                                 "missing") from None
            unknown = str(exc).startswith("unknown track ")  # not a failed file's reason, nor a name two tracks share
            if unknown and not is_track_id(str(ref)) and not _is(path, Path.exists):  # a typo'd path: both lookups
                raise StoreError(f"{exc}: {UNKNOWN_QUERY}, and no such file is on disk") \
                    from None
            raise
        own = Path(found.track.path) if found.track is not None else None
        if own is not None and _is(own, Path.is_file):  # an id names the entry
            try:
                changed = not _as_catalogued(store, own)
            except OSError as exc:
                (on_warning or log.warning)(_unreadable(own, exc))
                return found
            if changed:
                (on_warning or log.warning)(f"{printable(str(own))} has changed since it was extracted: answering "
                                            "from what it held then (give its path to search with it as it is now; "
                                            "`mess extract` updates the collection)")
        return found
    stale = None
    try:
        found = collection_query(store, path)
        if found.track is not None and Path(found.track.path) == path.resolve():
            try:
                if _as_catalogued(store, path):
                    return found
            except OSError as exc:  # the catalogued entry is all there is to answer from
                (on_warning or log.warning)(_unreadable(path, exc))
                return found
            (on_warning or log.warning)(f"{printable(str(path))} has changed since it was extracted: searching with "
                                        "the file as it is now (`mess extract` updates the collection)")
            stale = found.track  # its stored vectors are what the file held before: never an answer to itself
    except StoreError:
        pass
    return replace(embed_query(store, path, run, on_warning), replaces=stale)


def _is(path: Path, kind: Callable[[Path], bool]) -> bool:
    """``kind(path)`` (``Path.is_file``, ``Path.is_dir``), False where the name cannot be looked up at all: one
    longer than the file system allows was 'File name too long', not an unknown track."""
    try:
        return kind(path)
    except OSError:
        return False


def _as_catalogued(store: FeatureStore, path: Path) -> bool:
    """Whether the file holds the audio the catalog last saw, so its stored vectors are its own: the same change
    stamp, or else the same content hash (a touched, retagged or copied-back file, which `mess extract` leaves as it
    is, was said to have changed and embedded again). OSError when the file cannot be read now (a chmod moves the
    stamp: such a file was said to have changed)."""
    known = store.known_file(path.resolve())
    if known is None:
        return False
    if stamp_matches(path.stat(), known[1]):
        return True
    from mess.audio.discover import content_hash  # here, as the decoding below: PyAV for files read, not stat'ed

    return content_hash(path) == known[0]


def _unreadable(path: Path, exc: OSError) -> str:
    """The warning for a collection file that cannot be read now, answered from its catalogued entry."""
    return (f"{printable(str(path))}: cannot read it now ({exc.strerror or exc}): answering from what it held when it "
            "was extracted")


def embed_query(store: FeatureStore, path: str | Path, run: Run,
                on_warning: Callable[[str], None] | None = None) -> TrackQuery:
    """Decode and embed ``path`` exactly as the run's tracks were (same model revision and windows); what a run's
    summary would warn of (a low sample rate, only its start analysed) goes to ``on_warning`` (default: this module's
    logger; `mess similar` printed it as a logging record, 'WARNING mess.extract.embed: ...')."""
    from mess.audio.decode import probe  # PyAV and the decoders: only a query that is a file loads them
    from mess.audio.tags import read_tags
    from mess.extract.embed import embed_file_warned

    path = Path(path)
    try:
        model = load_run_model(run.model, run.revision, store.model_source(run))
    except ModelError as exc:
        raise StoreError(str(exc)) from exc
    try:
        vectors, warnings = embed_file_warned(path, model, run_policy(run))
    except Exception as exc:  # noqa: BLE001 -- any fault of this one file is a clear error, not a traceback
        raise StoreError(f"cannot embed {path}: {str(exc).removeprefix(f'{path}: ')}") from exc  # named once
    for text in warnings:
        (on_warning or log.warning)(text)
    tags = read_tags(path)
    label = f"{tags['artist']} - {tags['title'] or file_title(str(path))}" if tags["artist"] else path.name
    query = external_query(store, run, label, vectors.content_hash, vectors.layers, vectors.segments, credit_of(tags))
    if query.track is not None:
        return query
    return replace(query, path=str(path), duration=probe(path).duration or None)  # compared with close results


def _checked_layers(run: Run, layers: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """One float32 vector per layer of ``run`` ([dim] or [1, dim]), rounded to float16 as the store holds the
    collection's (an outside copy of a track is that track again: the signed fourth root of the power norm raised the
    near-zero values float16 rounds to 0, to 0.95 for a copy); StoreError naming a layer missing, of another size,
    or holding NaN or infinite values."""
    if len(layers) != len(run.layer_names):
        raise StoreError(f"{len(layers)} layer vectors for {run.model}'s {len(run.layer_names)} layers "
                         f"({', '.join(run.layer_names)})")
    raw = []
    for name, dim, vector in zip(run.layer_names, run.layer_dims, layers, strict=True):
        v = np.asarray(vector, dtype=np.float32)
        if v.shape not in ((dim,), (1, dim)):
            raise StoreError(f"layer {name} of {run.model} has {dim} values; got an array of shape {v.shape}")
        if not np.isfinite(v).all():
            raise StoreError(f"layer {name}'s vector holds NaN or infinite values")
        raw.append(_as_stored(v).reshape(dim))
    return tuple(raw)


def _as_stored(v: np.ndarray) -> np.ndarray:
    """``v`` (float32) rounded to float16 as the store holds vectors; as it is where that overflows (never stored)."""
    with np.errstate(over="ignore"):
        stored = np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32)
    return stored if np.isfinite(stored).all() else np.asarray(v, dtype=np.float32)


def credit_of(tags: Mapping[str, str | None]) -> str | None:
    """The credit an outside file's artist is grouped by, as a collection track's is (--exclude-same-artist, the
    radio's artist spread): its artist tag when that names an artist, else its composer."""
    artist = tags.get("artist")
    return artist if credit_key(artist) else tags.get("composer") or artist


def external_query(store: FeatureStore, run: Run, label: str, content_hash: str, layers: Sequence[np.ndarray],
                   segments: Sequence[np.ndarray] = (), artist: str | None = None) -> TrackQuery:
    """A seed from vectors embedded outside the store (by :func:`embed_query` or the server's worker).

    Content already in the collection is that track. Otherwise the seed carries the raw
    per-layer (and window) vectors, plus the fused vector when the run has fused vectors,
    computed by the network `mess fuse apply` used.
    """
    track = track_by_hash(store.tracks(run)).get(content_hash)
    if track is not None:
        return TrackQuery(track.name, track=track, content_hash=track.content_hash, artist=track.artist)
    raw = _checked_layers(run, layers)
    fused = None
    if store.derived_meta(run, FUSED) is not None:
        from mess.fusion.apply import fuse_query  # here, not at the top: plain queries start without torch

        try:
            fused = fuse_query(store, run, raw)
        except FusionError as exc:
            raise StoreError(str(exc)) from exc
    return TrackQuery(label, layers=raw, segments=tuple(_as_stored(v) for v in segments) or None,
                      content_hash=content_hash, artist=artist, fused=fused)
