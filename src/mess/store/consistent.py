"""Readers that see one catalog version throughout, whatever a writer commits meanwhile."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from mess.store.feature_store import FeatureStore

P = ParamSpec("P")
R = TypeVar("R")


def one_state(build: Callable[Concatenate[FeatureStore, P], R]) -> Callable[Concatenate[FeatureStore, P], R]:
    """``build(store, ...)`` reading one catalog version throughout (:meth:`FeatureStore.reading`; read again, whole,
    where rows moved meanwhile): a writer committing between its reads (the track list, then the vectors) made an
    answer of a collection the store never held (a file changed in place: its old hash with its new vector)."""
    @functools.wraps(build)
    def built(store: FeatureStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return store.reading(lambda: build(store, *args, **kwargs))

    return built
