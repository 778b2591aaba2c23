"""Defects a red-team session found using `mess` on a real, messy library (notes/redteam_session30.md)."""

from __future__ import annotations

import unicodedata

from mess.serve.routes_tracks import _matches
from mess.store import Track


def _track(path: str, artist: str | None = None) -> Track:
    return Track(id=1, path=path, content_hash="0" * 32, duration=1.0, artist=artist, album=None, title=None,
                 genre=None, composer=None)


def test_track_search_finds_a_name_whatever_its_unicode_normal_form() -> None:
    """A file named on macOS (NFD: 'e' + combining acute) was not found by 'Café' typed as one letter (NFC), nor an
    NFC name by NFD text, in the server's track search and artist filter; both forms now match each other."""
    nfc, nfd = unicodedata.normalize("NFC", "Café Été"), unicodedata.normalize("NFD", "Café Été")
    assert nfc != nfd
    for name in (nfc, nfd):
        track = _track(f"/music/{name}.flac", artist=unicodedata.normalize("NFD", "Björk") if name == nfd else "Björk")
        for typed in (nfc, nfd):
            assert _matches(track, {}, typed.split()[0].lower()), (name, typed)
            assert _matches(track, {}, typed.upper()), (name, typed)
        for artist in (unicodedata.normalize("NFC", "björk"), unicodedata.normalize("NFD", "BJÖRK")):
            assert _matches(track, {"artist": artist}, None), (name, artist)
    assert not _matches(_track("/music/Cafe.flac"), {}, nfc.split()[0])  # the accent still counts
