"""Which vectors to search, read from the store, and how they become unit vectors.

A :class:`VectorSpec` names a vector set of a run: one layer, the layer chosen for an aspect by ``mess probe``, the
fused vectors of ``mess fuse``, the learned head shipped for the model (:mod:`mess.models.head`, applied to all
layers), or all layers at once (each layer normalised, then concatenated, so the cosine of two such vectors is the
mean of their per-layer cosines; a weighted mean for the default musicnn, whose timbre layer weighs as 12). A
:class:`Preprocessor` fitted on the collection turns raw vectors into unit vectors: per-dimension z-scoring
("zscore": removes the common offset that makes every pair of neural embeddings look alike, and evens out dimensions
on different scales), the same after a signed power |x|^0.25 of every raw dimension ("power": tames the few large
activations; the default for all layers, with the augmented ranking, docs/quality.md), or centering alone, then L2
normalisation per layer block. Fitted on fewer than :data:`MIN_FIT_TRACKS` tracks it is plain L2 normalisation
(cosine of the raw vectors).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, TypeVar, get_args

import numpy as np

from mess.constants import DEFAULT_NORM, ENCODED_R2, FUSED, LEARNED, VectorKind
from mess.models import timbre
from mess.models.head import HeadError, shipped_head, shipped_head_path
from mess.store import FeatureStore, Run, StoreError, Track, TrackList
from mess.store.fused import fused_matrix
from mess.store.memo import MEMO

Norm = Literal["none", "center", "zscore", "power", "auto"]
# z-scoring divides a dimension by at least this fraction of its layer's mean spread: a nearly constant dimension
# (a dead unit) would otherwise turn a new track's tiny deviation into the largest coordinate of its vector
ZSCORE_FLOOR = 0.01
BASE_NORMS: tuple[Norm, ...] = ("none", "center", "zscore")  # the per-dimension ones (no power)
NORMS: tuple[Norm, ...] = (*BASE_NORMS, "power", "auto")
# "power": every raw dimension through signed |x|^POWER first (tames the few large activations that dominate a
# cosine), then z-scores; with re-ranking on real soundtracks in docs/quality.md
POWER = 0.25
# centring (and z-scoring) needs at least this many tracks: n centred vectors sum to zero, so their mean pairwise
# cosine is about -1/(n-1): two tracks always scored -1 (an OGG and its own decoded WAV included), three -0.5;
# at 8 the bias is -0.14 and below the spread of real pairs, and a per-dimension std from fewer samples is noise
MIN_FIT_TRACKS = 8
# the timbre layer's weight, in layers, in the all-layer vector of the musicnn ensemble (18 network layers beside it):
# leave-one-game-out on the real soundtracks picked 12 in all six folds (docs/quality.md)
TIMBRE_WEIGHT = 12.0
T = TypeVar("T")


def resolved_norm(kind: VectorKind, norm: Norm) -> Norm:
    """The normalisation a vector set of ``kind`` gets for ``norm``: "auto" (the default) is power for all layers
    together, centring for the learned head and z-scores for one layer, aspect or group (power helps the all-layer
    vector with database-side augmentation, and costs single layers up to 17% on real soundtracks: docs/quality.md);
    fused vectors never z-score (:func:`fused_norm`). The head's output is principal axes already, scored centred
    (docs/head.md); z-scoring whitens them, weighing its weakest axes as its strongest: on 30 real soundtracks its
    game mAP fell from 0.540 to 0.216, below chance (0.228)."""
    if norm == "auto":
        norm = "power" if kind == "all" else "center" if kind == LEARNED else "zscore"
    return fused_norm(norm) if kind == FUSED else norm


def fused_norm(norm: Norm) -> Norm:
    """The normalisation fused vectors get for ``norm``: never z-scores (nor power-normalises). They are the
    fusion network's output, PCA directions already; z-scoring whitens them, and on a collection smaller than
    their size every cosine became about 0 (mAP at chance, where the fusion report measured 0.7 with plain cosines)."""
    return "none" if norm in ("zscore", "power") else norm


@dataclass(frozen=True)
class VectorSpec:
    """A vector set of a run: ``kind`` is layer, aspect, fused, learned or all; ``name`` the layer or aspect."""

    kind: VectorKind
    name: str = ""  # layer, aspect, or '+'-joined layer names of a group
    norm: Norm = DEFAULT_NORM  # "auto" is resolved on construction (:func:`resolved_norm`)

    def __post_init__(self) -> None:
        if self.kind not in get_args(VectorKind):
            raise ValueError(f"unknown vector kind {self.kind!r}; choose one of {', '.join(get_args(VectorKind))}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown normalisation {self.norm!r}; choose one of {', '.join(NORMS)}")
        object.__setattr__(self, "norm", resolved_norm(self.kind, self.norm))

    @classmethod
    def from_options(
        cls,
        layer: str | None = None,
        aspect: str | None = None,
        fused: bool = False,
        norm: Norm = DEFAULT_NORM,
        learned: bool = False,
    ) -> VectorSpec:
        """Build a spec from CLI-style options (at most one of layer, aspect, fused, learned; none = all layers)."""
        if sum(x is not None and x is not False for x in (layer, aspect, fused, learned)) > 1:
            raise ValueError("choose at most one of --layer, --aspect, --fused and --learned")
        if norm not in NORMS:
            raise ValueError(f"unknown normalisation {norm!r}; choose one of {', '.join(NORMS)}")
        if layer is not None:
            return cls("layer", str(layer), norm)
        if aspect is not None:
            return cls("aspect", aspect, norm)
        if learned:
            return cls(LEARNED, "", norm)
        return cls(FUSED if fused else "all", "", norm)

    @property
    def slug(self) -> str:
        """File-name-safe identity, e.g. ``layer-7-center``."""
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        return "-".join(p for p in (self.kind, name, self.norm) if p)

    def layers(self, store: FeatureStore, run: Run) -> tuple[str, ...]:
        """Layer names this spec reads (empty for fused vectors)."""
        if self.kind == FUSED:
            return ()
        if self.kind in ("all", LEARNED):
            return run.layer_names
        if self.kind in ("layer", "group"):
            return tuple(run.layer_names[run.layer_index(n)] for n in self.name.split("+"))
        return (aspect_layer(store, run, self.name),)


def aspect_layer(store: FeatureStore, run: Run, aspect: str) -> str:
    """The layer ``mess probe`` chose for an aspect; StoreError naming the fix when unknown, or when no layer
    encodes it (the probe's best R^2 below :data:`~mess.constants.ENCODED_R2`: ranking by it would pass an
    arbitrary layer off as that aspect)."""
    amap = store.aspect_map(run)
    if not amap:
        raise StoreError(f"no aspect map for {run.model}; run `mess probe --model {store.model_option(run)}` first")
    if aspect not in amap:
        raise StoreError(f"unknown aspect {aspect!r}; {run.model} has {', '.join(sorted(amap))}")
    score = store.aspect_scores(run)[aspect]
    if score < ENCODED_R2:
        # a probe of fewer tracks than the run has now may be why: a probe of them all may find the aspect
        probed, now = store.aspect_map_tracks(run), len(store.tracks(run))
        rerun = (f" in a probe of {probed} tracks ({now} now: rerun `mess probe --model {store.model_option(run)}`)"
                 if probed is not None and probed < now else "")
        raise StoreError(f"no layer of {run.model} encodes {aspect}{rerun} (the probe's best R^2, less what shuffled "
                         f"targets reach, is {score:.2f}, below {ENCODED_R2}); choose another aspect, or leave "
                         "--aspect out for all layers")
    return run.layer_names[run.layer_index(amap[aspect])]


@dataclass(frozen=True)
class Preprocessor:
    """Per-dimension shift and scale fitted on a collection, then per-block L2 normalisation and weights."""

    mean: np.ndarray
    scale: np.ndarray
    blocks: tuple[int, ...]
    power: float = 1.0  # exponent of the signed power applied to raw values first (1 = none)
    unpowered: tuple[bool, ...] = ()  # per block: left out of the signed power (the timbre layer's log coordinates)
    weights: tuple[float, ...] = ()  # per block: its weight in the cosine (empty: all 1)

    @classmethod
    def fit(cls, raw: np.ndarray, blocks: Sequence[int], norm: Norm, unpowered: Sequence[bool] = (),
            weights: Sequence[float] = ()) -> Preprocessor:
        """Fit on ``raw`` [n, sum(blocks)] vectors for the given normalisation (none below MIN_FIT_TRACKS);
        ``unpowered`` and ``weights`` as :func:`block_roles` gives them (default: none, all 1)."""
        dim = raw.shape[1]
        if len(raw) < MIN_FIT_TRACKS:
            norm = "none"
        power = POWER if norm == "power" else 1.0
        unpowered, weights = tuple(bool(u) for u in unpowered), tuple(float(w) for w in weights)
        raw = _powered(raw, tuple(int(b) for b in blocks), power, unpowered)
        mean = raw.mean(axis=0) if norm != "none" and len(raw) else np.zeros(dim)
        scale = np.ones(dim)
        if norm in ("zscore", "power") and len(raw):
            std = raw.std(axis=0)
            edges = np.cumsum([0, *blocks])
            for start, stop in zip(edges[:-1], edges[1:], strict=True):
                floor = ZSCORE_FLOOR * float(std[start:stop].mean())
                scale[start:stop] = np.maximum(std[start:stop], floor) if floor > 1e-8 else 1.0
        return cls(mean.astype(np.float32), scale.astype(np.float32), tuple(int(b) for b in blocks), power,
                   unpowered, weights)

    def shift(self, raw: np.ndarray) -> np.ndarray:
        """Power-normalised, centred (and scaled) vectors before normalisation, float32 [n, dim]."""
        x = _powered(np.atleast_2d(raw).astype(np.float32), self.blocks, self.power, self.unpowered)
        return ((x - self.mean) / self.scale).astype(np.float32)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Unit vectors: shift, L2-normalise each block and scale it by sqrt(its weight), divide by sqrt(the sum of
        the weights) (the number of blocks when all weigh 1)."""
        x = self.shift(raw)
        weights = self.weights or (1.0,) * len(self.blocks)
        start = 0
        for size, weight in zip(self.blocks, weights, strict=True):
            part = x[:, start : start + size]
            part *= np.sqrt(weight) / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
            start += size
        if sum(weights) != 1.0:  # a lone block of weight 12 (a model's one layer named timbre) too
            x /= np.sqrt(sum(weights))
        return x

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays to save (see :meth:`from_arrays`)."""
        return {"mean": self.mean, "scale": self.scale, "blocks": np.array(self.blocks, dtype=np.int64),
                "power": np.array(self.power), "unpowered": np.array(self.unpowered, dtype=bool),
                "weights": np.array(self.weights, dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Preprocessor:
        """Inverse of :meth:`arrays` (files saved before power or block weights existed get their defaults)."""
        power = float(arrays["power"]) if "power" in arrays else 1.0
        unpowered = tuple(bool(u) for u in arrays["unpowered"]) if "unpowered" in arrays else ()
        weights = tuple(float(w) for w in arrays["weights"]) if "weights" in arrays else ()
        return cls(arrays["mean"], arrays["scale"], tuple(int(b) for b in arrays["blocks"]), power, unpowered, weights)


def block_roles(layers: Sequence[str], kind: VectorKind,
                revision: str) -> tuple[tuple[bool, ...], tuple[float, ...]]:
    """Per layer block of a spec of ``kind`` of a run of ``revision``: whether it is left out of the signed power
    (the timbre layer, whose log-Euclidean coordinates are signed by nature), and its weight: :data:`TIMBRE_WEIGHT`
    for the timbre layer among all layers, 1 otherwise. The timbre layer is :mod:`mess.models.timbre`'s, in a run
    whose revision names it (the musicnn ensemble's), not another model's layer of that name."""
    ours = timbre.REVISION in revision.split("+")
    unpowered = tuple(ours and name == timbre.LAYER for name in layers)
    return unpowered, tuple(TIMBRE_WEIGHT if u and kind == "all" else 1.0 for u in unpowered)


def _powered(raw: np.ndarray, blocks: tuple[int, ...], power: float, unpowered: tuple[bool, ...]) -> np.ndarray:
    """Raw vectors through the signed power, but for the blocks left out of it."""
    if power == 1.0 or not any(unpowered):
        return signed_power(raw, power)
    out = signed_power(raw, power)
    edges = np.cumsum([0, *blocks])
    for start, stop, keep in zip(edges[:-1], edges[1:], unpowered, strict=True):
        if keep:
            out[:, start:stop] = raw[:, start:stop]
    return out


def signed_power(x: np.ndarray, power: float) -> np.ndarray:
    """sign(x) |x|^power elementwise (``x`` itself when power is 1)."""
    if power == 1.0:
        return x
    return (np.sign(x) * np.abs(x) ** power).astype(x.dtype, copy=False)


@dataclass
class VectorSet:
    """Raw vectors of one spec for every track that has them, plus the fitted preprocessor."""

    run: Run
    spec: VectorSpec
    layers: tuple[str, ...]
    ids: np.ndarray
    hashes: np.ndarray
    raw: np.ndarray
    prep: Preprocessor
    source: str = ""  # what the vectors were read from beyond the tracks' contents (see vectors_source)
    _unit: np.ndarray | None = field(default=None, repr=False)

    @property
    def norm_note(self) -> str:
        """One line when the spec's normalisation fell back to plain cosine (too few tracks), else ''."""
        if self.spec.norm == "none" or len(self.ids) >= MIN_FIT_TRACKS:
            return ""
        have = "1 track has" if len(self.ids) == 1 else f"{len(self.ids)} tracks have"
        return (f"only {have} these vectors: scores are plain cosines "
                f"({self.spec.norm} normalisation needs {MIN_FIT_TRACKS})")

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the content: run, spec, source and the (track id, content hash) pairs."""
        h = hashlib.sha1(f"{self.run.id}|{self.spec.slug}|{self.source}|".encode())
        h.update(self.ids.tobytes())
        h.update("\n".join(self.hashes.tolist()).encode())
        return h.hexdigest()

    def unit(self) -> np.ndarray:
        """All vectors as unit vectors with this set's preprocessor (computed once)."""
        if self._unit is None:
            self._unit = self.prep.apply(self.raw)
        return self._unit

    @cached_property
    def _order(self) -> np.ndarray:
        return np.argsort(self.ids)

    @cached_property
    def _id_set(self) -> frozenset[int]:
        return frozenset(self.ids.tolist())

    def __contains__(self, track_id: object) -> bool:
        """Whether a track id is in the set."""
        return track_id in self._id_set

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of track ids (which must be in the set)."""
        return self._order[np.searchsorted(self.ids, ids, sorter=self._order)]


def read_vectors(store: FeatureStore, run: Run, spec: VectorSpec, tracks: Sequence[Track] | None = None) -> VectorSet:
    """Read a spec's raw vectors for all tracks of the run and fit its preprocessor. With ``tracks`` None the track
    list is read in the vectors' snapshot; tracks given must come from the caller's
    (:func:`~mess.store.consistent.one_state`)."""

    def read() -> tuple[Sequence[Track], str, tuple[str, ...], list[tuple[np.ndarray, np.ndarray]]]:
        listed = store.tracks(run) if tracks is None else tracks
        if spec.kind == FUSED:  # refused when made for another run of the model
            return listed, vectors_source(store, run, spec), (), [fused_matrix(store, run)]
        layers = spec.layers(store, run)
        return listed, vectors_source(store, run, spec), layers, [store.layer_matrix(run, name) for name in layers]

    # the tracks, their vectors and what they are from one catalog version, though an extract may be committing
    # (and again from a newer one where fuse apply rewrote the fused set twice meanwhile)
    listed, source, layers, mats = store.reading(read)
    hash_of = {t.id: t.content_hash for t in listed}
    if spec.kind == FUSED:
        ids, raw = mats[0]
        blocks = (raw.shape[1],)
    else:
        ids = mats[0][0]
        raw = mats[0][1] if len(mats) == 1 else np.concatenate([m for _, m in mats], axis=1)
        blocks = tuple(m.shape[1] for _, m in mats)
        if spec.kind == LEARNED:
            raw = learned_vectors(run, raw)
            blocks = (raw.shape[1],)
    keep = np.array([int(i) in hash_of for i in ids], dtype=bool)
    ids, raw = ids[keep], raw[keep]
    if not len(ids):
        kind = "" if spec.kind == "all" else f"{spec.kind} "
        raise StoreError(f"no {kind}vectors for {run.model} in this store yet; run `mess extract` first")
    hashes = np.array([hash_of[int(i)] for i in ids])
    roles = block_roles(layers, spec.kind, run.revision) if spec.kind not in (FUSED, LEARNED) else ((), ())
    return VectorSet(run, spec, layers, ids, hashes, raw, Preprocessor.fit(raw, blocks, spec.norm, *roles), source)


def vectors_source(store: FeatureStore, run: Run, spec: VectorSpec) -> str:
    """What a spec's vectors are, beyond the tracks' contents: the layers read (a probe may give an aspect another
    one), the fused set's file (each `mess fuse apply` writes a new one) or the learned head's CRC-32. A saved index
    records it, so one built from other vectors is never taken for current. StoreError as :meth:`VectorSpec.layers`."""
    if spec.kind == FUSED:
        meta = store.derived_meta(run, FUSED) or {}
        return f"fused:{meta.get('file')}:{meta.get('written_at')}"
    layers = "+".join(spec.layers(store, run))
    if spec.kind == LEARNED:
        try:
            return f"learned:{layers}:{zlib.crc32(shipped_head_path(run.model).read_bytes())}"
        except OSError:
            return f"learned:{layers}:none"
    return f"layers:{layers}"


def from_tracks(tracks: Sequence[Track], name: Hashable, make: Callable[[Sequence[Track]], T]) -> T:
    """``make(tracks)``, memoised (:mod:`mess.store.memo`) for the catalog version ``tracks`` were read at
    when they are what :meth:`FeatureStore.tracks` returned; computed afresh for other sequences.

    Values are shared by every caller with the same track list: do not modify them.
    """
    if not isinstance(tracks, TrackList):
        return make(tracks)
    return MEMO.get(tracks.scope, tracks.version, (tracks.query, name), lambda: make(tracks))


def track_by_id(tracks: Sequence[Track]) -> dict[int, Track]:
    """Track id -> track of ``tracks`` (memoised on the tuple; do not modify)."""
    return from_tracks(tracks, "by_id", lambda ts: {t.id: t for t in ts})


def track_by_hash(tracks: Sequence[Track]) -> dict[str, Track]:
    """Content hash -> the first track (lowest id) with that content (memoised on the tuple; do not modify)."""

    def make(ts: Sequence[Track]) -> dict[str, Track]:
        out: dict[str, Track] = {}
        for t in ts:
            out.setdefault(t.content_hash, t)
        return out

    return from_tracks(tracks, "by_hash", make)


def learned_vectors(run: Run, raw: np.ndarray) -> np.ndarray:
    """The shipped learned head applied to raw all-layer vectors [n, sum(layer_dims)] of ``run``."""
    try:
        head = shipped_head(run.model)
        head.check(run.model, run.layer_names, run.layer_dims)
    except HeadError as exc:
        raise StoreError(str(exc)) from exc
    return head.transform(raw)


def in_space(spec: VectorSpec, run: Run, raw: np.ndarray) -> np.ndarray:
    """Raw concatenated layer vectors [n, D] (tracks or windows) in the space of ``spec``: through the
    learned head for a learned spec, unchanged otherwise."""
    return learned_vectors(run, raw) if spec.kind == LEARNED else raw


def has_learned_head(run: Run) -> bool:
    """Whether a learned head ships for this run's model and layers."""
    return learned_head_problem(run) is None


def learned_head_problem(run: Run) -> str | None:
    """Why no learned head ships for this run's model and layers, naming the models heads ship for (what
    ``--learned`` says); None when one does."""
    try:
        shipped_head(run.model).check(run.model, run.layer_names, run.layer_dims)
    except HeadError as exc:
        return str(exc)
    return None


def vectors_label(layer: str | None, aspect: str | None, fused: bool, learned: bool = False) -> str:
    """Human name of a vector choice."""
    if layer is not None:
        return f"layer {layer}"
    if aspect is not None:
        return f"aspect {aspect}"
    return FUSED if fused else LEARNED if learned else "all layers"


def load_vectors(store: FeatureStore, run: Run, spec: VectorSpec, tracks: Sequence[Track] | None = None) -> VectorSet:
    """:func:`read_vectors`, memoised until the catalog changes (see :meth:`FeatureStore.cached`).

    With ``tracks`` None (or the tuple :meth:`FeatureStore.tracks` returned) a repeated
    call costs a catalog version check, not a pass over every track.
    """
    def load() -> VectorSet:  # the track list and the vectors from one catalog version (:func:`read_vectors`)
        listed = store.tracks(run) if tracks is None else tracks
        return store.cached(("vectors", run.id, spec), lambda: read_vectors(store, run, spec, listed), tracks=listed)

    return store.reading(load)


def query_vector(
    spec_layers: tuple[str, ...], run: Run, layer_vectors: Sequence[np.ndarray], learned: bool = False
) -> np.ndarray:
    """Concatenate a query's raw per-layer vectors in the order a spec reads them (through the head if learned)."""
    raw = np.concatenate(
        [np.asarray(layer_vectors[run.layer_index(name)], dtype=np.float32).ravel() for name in spec_layers]
    )
    return learned_vectors(run, raw[None])[0] if learned else raw
