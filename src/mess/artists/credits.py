"""Artist credits: multi-artist parsing and the collaboration graph (names: :mod:`mess.audio.names`)."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

import numpy as np

from mess.audio.names import FEAT, main_artist, name_key, normalize_name

# Everything that separates names inside one credit.
_SPLIT = re.compile(r"\s*[&;,/+]\s*|\s+(?:x|vs\.?|and)\s+|" + FEAT.pattern, re.IGNORECASE)
# "Title (feat. B)" / "Title [ft. B & C]" credits guests in the title.
_TITLE_FEAT = re.compile(r"[\(\[]\s*(?:feat\.?|ft\.?|featuring|with)\s+([^\)\]]+)[\)\]]", re.IGNORECASE)
# Words of a guest credit that name no one: "(with Orchestra)", "(with the Strings)", "(with Lyrics)". A guest made
# only of these is not an artist; "with the London Symphony Orchestra" is one.
_GENERIC = frozenset("""a an and his her their my our full big small live special guest guests friends others
    orchestra orchestras orchestral symphony symphonic philharmonic chamber strings string choir choirs chorus band
    ensemble quartet quintet trio section horns horn brass woodwinds winds percussion rhythm drums piano guitar organ
    harp vocals vocal voice voices singers children kids audience crowd lyrics intro outro accompaniment backing
    """.split())


def split_credit(credit: str, known: Collection[str] = frozenset()) -> list[str]:
    """Every artist named in a credit, main artist first, without duplicates.

    Each value of a multi-valued tag ('A; B feat. C') is a credit of its own. A part of the credit that is
    itself a known artist (``known`` holds :func:`name_key` forms), such as a band called 'Earth, Wind & Fire',
    is not split at its '&' or ','.
    """
    parts = [(part, i > 0) for value in credit.split(";")
             for i, part in enumerate((main_artist(value), *FEAT.split(value)[1:]))]
    names: list[str] = []
    for part, guest in parts:
        part = part.strip(" ()[]")
        pieces = [part] if name_key(part) in known else _SPLIT.split(part)
        names += [p.strip(" ()[]") for p in pieces
                  if p and p.strip(" ()[]") and not (guest and _names_no_one(p, known))]
    return _unique(names)


def track_credits(artist: str | None, title: str | None, known: Collection[str] = frozenset()) -> list[str]:
    """Artists credited on one track: the artist tag plus guests named in the title (``known`` as above)."""
    names = split_credit(artist, known) if artist else []
    for guest in _TITLE_FEAT.findall(title or ""):
        names += [name for name in split_credit(guest, known) if not _names_no_one(name, known)]
    return _unique(names)


def _names_no_one(guest: str, known: Collection[str]) -> bool:
    """Whether a guest credit is only words that name no one (:data:`_GENERIC`: 'Orchestra', 'Full Choir'), and not
    a known artist (``known``: 'The Band')."""
    words = normalize_name(guest).split()
    return bool(words) and all(w in _GENERIC for w in words) and name_key(guest) not in known


def _unique(names: Iterable[str]) -> list[str]:
    """Names in order, dropping later spellings of the same artist (:func:`name_key`)."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name_key(name), name)
    return list(seen.values())


def collaboration_similarity(artists: Sequence[str], credits: Iterable[Sequence[str]]) -> np.ndarray:
    """Artist x artist similarity from co-credited tracks.

    Every credited name is a node; each track adds an edge between every two names
    it credits. Two artists are similar when they collaborated or share collaborators:
    the cosine of their rows in (adjacency + identity). Artists without any
    collaboration get 0 to everyone else (1 to themselves).
    """
    from scipy import sparse  # here, not at the top: the CLI starts without sklearn/scipy
    from sklearn.metrics.pairwise import cosine_similarity

    index = {name_key(a): i for i, a in enumerate(artists)}
    rows, cols = [], []
    for names in credits:
        ids = [index.setdefault(name_key(name), len(index)) for name in names]
        for i in ids:
            for j in ids:
                if i != j:
                    rows.append(i)
                    cols.append(j)
    n = len(index)
    adj = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    adj = adj + sparse.identity(n, format="csr")
    return cosine_similarity(adj[: len(artists)]).astype(np.float32)
