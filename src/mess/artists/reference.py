"""Reference similar-artist lists (music-map, Last.fm, ListenBrainz shapes) matched to the collection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mess.artists.profiles import ArtistError, ArtistSet
from mess.audio.names import name_key

_NAME_KEYS = ("name", "artist_name", "artist")
_SHAPE = ("a JSON object mapping each artist to an ordered list of similar artists, as names or as objects "
          'with a "name" field (ListenBrainz), or a Last.fm artist.getSimilar answer')


def parse_reference(data: object) -> dict[str, list[str]]:
    """Normalise the accepted shapes to ``{artist: [similar artist, ...]}``, order kept.

    Accepted per artist: ``["B", "C"]``; ``[{"name": "B", ...}, ...]`` (ListenBrainz,
    Last.fm items); ``{"similarartists": {"artist": [...]}}`` (Last.fm answer). A Last.fm answer saved as it
    came, ``{"similarartists": {"artist": [...], "@attr": {"artist": "A"}}}``, is the list of artist A.
    """
    if isinstance(data, dict) and list(data) == ["similarartists"] and isinstance(data["similarartists"], dict):
        answer = data["similarartists"]
        artist = answer.get("@attr", {}).get("artist") if isinstance(answer.get("@attr"), dict) else None
        if not isinstance(artist, str):
            raise ArtistError('a Last.fm answer must name its artist ("@attr": {"artist": ...}) to be a reference')
        data = {artist: data}
    if not isinstance(data, dict):
        raise ArtistError(f"reference must be {_SHAPE}; got {_json_kind(data)}")
    reference = {}
    for artist, entries in data.items():
        if isinstance(entries, dict) and isinstance(entries.get("similarartists"), dict):
            entries = entries["similarartists"].get("artist", [])
        if not isinstance(entries, list):
            raise ArtistError(f"reference for {artist!r} is not a list; expected {_SHAPE}")
        reference[str(artist)] = [_entry_name(artist, e) for e in entries]
    return reference


def _entry_name(artist: str, entry: object) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        for key in _NAME_KEYS:
            if isinstance(entry.get(key), str):
                return entry[key]
    raise ArtistError(f"reference entry {entry!r} for {artist!r} has no artist name; expected {_SHAPE}")


def _json_kind(value: object) -> str:
    """What a JSON value is, in JSON's words ('null', not Python's 'NoneType')."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return "an array" if isinstance(value, list) else "a string" if isinstance(value, str) else "a number"


def read_json(path: Path, what: str) -> object:
    """The JSON in ``path`` (a ``what`` file: "reference", "tags"); a missing or malformed file is an ArtistError."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))  # -sig: Notepad writes a BOM
    except FileNotFoundError:
        raise ArtistError(f"no such {what} file: {path}") from None
    except IsADirectoryError:
        raise ArtistError(f"{path} is a folder, not a {what} file (JSON)") from None
    except OSError as exc:  # a link to itself, a file this user may not read
        raise ArtistError(f"cannot read {what} file {path} ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtistError(f"{what} file {path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ArtistError(f"{what} file {path} is not valid JSON (nested too deeply)") from None


def load_reference(path: Path) -> dict[str, list[str]]:
    """Read and normalise a reference file; malformed files raise :class:`ArtistError`."""
    return parse_reference(read_json(path, "reference"))


@dataclass(frozen=True)
class Coverage:
    """How much of a reference map exists in the collection."""

    query_artists: int  # artists with a reference list
    query_found: int  # ... that are in the collection
    listed_artists: int  # distinct artists named in the lists
    listed_found: int  # ... that are in the collection
    usable_queries: int  # found query artists with at least one listed artist in the collection
    missing: tuple[str, ...]  # a few reference artists not in the collection

    @property
    def query_fraction(self) -> float:
        """Share of query artists found in the collection."""
        return self.query_found / self.query_artists if self.query_artists else 0.0

    @property
    def listed_fraction(self) -> float:
        """Share of listed artists found in the collection."""
        return self.listed_found / self.listed_artists if self.listed_artists else 0.0

    def to_dict(self) -> dict:
        """JSON-ready form, with both fractions."""
        return {**vars(self), "query_fraction": self.query_fraction, "listed_fraction": self.listed_fraction}


def match_reference(reference: dict[str, list[str]], artists: ArtistSet,
                    missing_shown: int = 10) -> tuple[dict[int, list[int]], Coverage]:
    """Map names to artist rows: ``{query row: [relevant rows in reference order]}`` and coverage.

    Names are matched by :func:`~mess.audio.names.name_key` (case, accents, punctuation, leading 'the');
    listed artists not in the collection, and the query itself, are dropped. Lists of two spellings of one artist
    are joined, in file order, and coverage counts such an artist once (``missing`` names it as first spelled).
    """
    rows = {name_key(name): i for i, name in enumerate(artists.names)}
    matched: dict[int, list[int]] = {}
    missing: dict[str, str] = {}  # name_key -> first spelling
    queries: dict[str, bool] = {}  # name_key -> in the collection
    listed: dict[str, bool] = {}
    for query, similar in reference.items():
        q = rows.get(name_key(query))
        queries[name_key(query)] = q is not None
        if q is None:
            missing.setdefault(name_key(query), query)
        relevant: list[int] = matched.get(q, []) if q is not None else []  # two spellings of q: one list
        for name in similar:
            r = rows.get(name_key(name))
            listed[name_key(name)] = r is not None
            if r is None:
                missing.setdefault(name_key(name), name)
            elif r != q and r not in relevant:
                relevant.append(r)
        if q is not None and relevant:
            matched[q] = relevant
    coverage = Coverage(len(queries), sum(queries.values()), len(listed), sum(listed.values()), len(matched),
                        tuple(list(missing.values())[:missing_shown]))
    return matched, coverage
