"""Artist credits: name normalisation, "feat." / multi-artist parsing, collaboration graph."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence

import numpy as np

# "A feat. B", "A ft B", "A featuring B", "A (with B)": the part before is the main artist. A bare
# "with" is part of a name ("Dance With the Dead"); it credits a guest only inside brackets.
_FEAT = re.compile(r"\s*(?:[\(\[]\s*(?:feat\.?|ft\.?|featuring|with)|\b(?:feat\.?|ft\.?|featuring))\s+",
                   re.IGNORECASE)
# Everything that separates names inside one credit.
_SPLIT = re.compile(r"\s*[&;,/+]\s*|\s+(?:x|vs\.?|and)\s+|" + _FEAT.pattern, re.IGNORECASE)
# "Title (feat. B)" / "Title [ft. B & C]" credits guests in the title.
_TITLE_FEAT = re.compile(r"[\(\[]\s*(?:feat\.?|ft\.?|featuring|with)\s+([^\)\]]+)[\)\]]", re.IGNORECASE)


def normalize_name(name: str) -> str:
    """Comparable form of an artist name: no accents, case, punctuation or leading 'the'."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold().replace("&", " and ")
    text = re.sub(r"[^\w]+", " ", text).strip()
    return re.sub(r"^the\s+", "", text)


def name_key(name: str) -> str:
    """Identity of an artist name: :func:`normalize_name`, or the stripped casefolded name when that is empty."""
    return normalize_name(name) or name.strip().casefold()


def main_artist(credit: str) -> str:
    """The main artist of a credit: the text before any 'feat.' / 'ft.' / '(with' guest."""
    head = _FEAT.split(credit, maxsplit=1)[0].strip(" ([")
    return head or credit.strip()


def credit_key(credit: str | None) -> str:
    """Identity (:func:`name_key`) of a credit's main artist; empty for a missing or blank credit."""
    return name_key(main_artist(credit)) if credit and credit.strip() else ""


def split_credit(credit: str, known: Collection[str] = frozenset()) -> list[str]:
    """Every artist named in a credit, main artist first, without duplicates.

    A part of the credit that is itself a known artist (``known`` holds
    :func:`name_key` forms), such as a band called 'Earth, Wind & Fire', is
    not split at its '&' or ','.
    """
    parts = [main_artist(credit), *_FEAT.split(credit)[1:]]
    names: list[str] = []
    for part in parts:
        part = part.strip(" ()[]")
        pieces = [part] if name_key(part) in known else _SPLIT.split(part)
        names += [p.strip(" ()[]") for p in pieces if p and p.strip(" ()[]")]
    return _unique(names)


def track_credits(artist: str | None, title: str | None, known: Collection[str] = frozenset()) -> list[str]:
    """Artists credited on one track: the artist tag plus guests named in the title (``known`` as above)."""
    names = split_credit(artist, known) if artist else []
    for guest in _TITLE_FEAT.findall(title or ""):
        names += split_credit(guest, known)
    return _unique(names)


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
