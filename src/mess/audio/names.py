"""Who a tag credits: artist-name identity (case, accents, punctuation, a leading 'the') and a credit's main artist.

Every stage that groups tracks by artist (search's evaluation, fusion's labels, the artists commands, radio) uses
these, so one spelling-insensitive identity holds everywhere.
"""

from __future__ import annotations

import re
import unicodedata

# "A feat. B", "A ft B", "A featuring B", "A (with B)": the part before is the main artist. A bare
# "with" is part of a name ("Dance With the Dead"); it credits a guest only inside brackets.
FEAT = re.compile(r"\s*(?:[\(\[]\s*(?:feat\.?|ft\.?|featuring|with)|\b(?:feat\.?|ft\.?|featuring))\s+",
                   re.IGNORECASE)

# name_key forms of the credits that name no artist: 'Various Artists' (MusicBrainz), 'VA', 'V.A.', 'Various',
# 'Unknown Artist' (Windows Media Player), 'Unknown', '[unknown]' and '[no artist]' (MusicBrainz); a folk tune's
# or an old piece's 'Traditional', 'Trad.', 'Anonymous', 'Anon.' (and 'Tradicional', 'Traditionnel', 'Anónimo').
PLACEHOLDERS = frozenset({"variousartists", "various", "va", "unknownartist", "unknown", "noartist", "unknowncomposer",
                          "traditional", "trad", "tradicional", "traditionnel", "tradizionale", "anonymous", "anon",
                          "anonimo", "anonyme", "anonym"})


def normalize_name(name: str) -> str:
    """Comparable form of an artist name: no accents, case, punctuation or leading 'the' ('The The' keeps one)."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold().replace("&", " and ")
    text = re.sub(r"[^\w]+", " ", text).strip()
    return re.sub(r"^the\s+(?!the$)", "", text)


def name_key(name: str) -> str:
    """Identity of an artist name: :func:`normalize_name` without its spaces, so punctuation in a name does not split
    an artist ('R.E.M.' = 'REM', 'Jay-Z' = 'Jay Z' = 'JayZ'); the stripped casefolded name when that is empty."""
    return normalize_name(name).replace(" ", "") or name.strip().casefold()


def main_artist(credit: str) -> str:
    """The main artist of a credit: the text before any 'feat.' / 'ft.' / '(with' guest, in its first value when
    a multi-valued tag's values are joined by ';' ('A; B', :func:`mess.audio.tags.read_tags`)."""
    first = credit.split(";", maxsplit=1)[0]
    head = FEAT.split(first, maxsplit=1)[0].rstrip(" ([").strip()  # a name may start with one: '(G)I-DLE'
    return head or first.strip() or credit.strip()


def credit_key(credit: str | None) -> str:
    """Identity (:func:`name_key`) of a credit's main artist; empty for a missing or blank credit, and for one that
    names no artist (:data:`PLACEHOLDERS`: a compilation's 'Various Artists', a ripper's 'Unknown Artist')."""
    key = name_key(main_artist(credit)) if credit and credit.strip() else ""
    return "" if key in PLACEHOLDERS else key


def label_key(field: str, value: str | None) -> str | None:
    """What a tag ``field`` labels a track with when tracks are grouped by it (evaluation, fusion): for artist and
    composer the credit's main-artist identity (:func:`credit_key`: spellings and guests do not split an artist, as
    in `mess artists`), for genre a multi-valued tag's first value ('Ambient; Electronic' is Ambient), else the
    stripped text; None when empty or naming no artist ('Various Artists')."""
    if field == "genre" and value:
        value = next((v for v in value.split(";") if v.strip()), "")
    if not value or not value.strip():
        return None
    return (credit_key(value) or None) if field in ("artist", "composer") else value.strip()
