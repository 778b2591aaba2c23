"""Defects a red-team session found using `mess` on a real, messy library (notes/redteam_session30.md)."""

from __future__ import annotations

import os
import unicodedata
from contextlib import closing
from pathlib import Path

from test_store import INFO, _vectors, two_model_store

from conftest import mess_here
from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.serve.routes_tracks import _matches
from mess.store import FeatureStore, Track
from mess.store.check import full_check


def _track(path: str, artist: str | None = None) -> Track:
    return Track(id=1, path=path, content_hash="0" * 32, duration=1.0, artist=artist, album=None, title=None,
                 genre=None, composer=None)


def test_track_search_finds_a_name_whatever_its_unicode_normal_form() -> None:
    """A file named on macOS (NFD: 'e' + combining acute) was not found by 'Café' typed as one letter (NFC), nor an
    NFC name by NFD text, in the server's track search and artist filter; both forms now match each other. Accents
    fold since session 35, as artist names always did (`normalize_name`): 'Café' finds 'Cafe' too."""
    nfc, nfd = unicodedata.normalize("NFC", "Café Été"), unicodedata.normalize("NFD", "Café Été")
    assert nfc != nfd
    for name in (nfc, nfd):
        track = _track(f"/music/{name}.flac", artist=unicodedata.normalize("NFD", "Björk") if name == nfd else "Björk")
        for typed in (nfc, nfd):
            assert _matches(track, {}, typed.split()[0].lower()), (name, typed)
            assert _matches(track, {}, typed.upper()), (name, typed)
        for artist in (unicodedata.normalize("NFC", "björk"), unicodedata.normalize("NFD", "BJÖRK")):
            assert _matches(track, {"artist": artist}, None), (name, artist)
    assert _matches(_track("/music/Cafe.flac"), {}, nfc.split()[0])  # accents fold, as in artist names


def _store_missing_vectors(root: Path) -> Path:
    """A store of 3 files, one embedded; of the two without vectors, ``here.wav`` is on disk, ``gone.wav`` not."""
    store = FeatureStore(root / "store")
    run = store.ensure_run(run_key(INFO, WindowPolicy()))
    (root / "music").mkdir()
    for i, name in enumerate(("kept.wav", "here.wav", "gone.wav")):
        if name != "gone.wav":
            (root / "music" / name).write_bytes(b"RIFF")
        store.upsert_track(root / "music" / name, f"h{i}", 10, 1.0, {"duration": 3.0},
                           {"artist": "x", "album": None, "title": name, "genre": None, "composer": None})
    store.write_vectors(run, [_vectors("h0", 2, 0)])
    store.close()
    return root / "store"


def test_check_sends_a_file_no_longer_on_disk_to_prune_not_to_extract(tmp_path: Path) -> None:
    """A file deleted after it was catalogued, before a second model was extracted, has no vectors of that model:
    `mess check` said `mess extract --model M` embeds it, which no extract can do (its advice came back after
    every run); the files no longer on disk are now named apart, sent to `mess extract FOLDER --prune`."""
    store = _store_missing_vectors(tmp_path)
    here, gone = tmp_path / "music" / "here.wav", tmp_path / "music" / "gone.wav"
    with closing(FeatureStore(store, readonly=True)) as fs:
        (problem,) = full_check(fs)
    assert problem.kind == "not-embedded" and not problem.damage
    embeds, _, rest = problem.message.partition("embeds")
    assert str(here) in embeds and str(gone) not in embeds, problem.message
    assert str(gone) in rest and "no longer on disk" in rest and "--prune" in rest, problem.message
    here.unlink()  # now neither is on disk: nothing for `mess extract` to embed
    with closing(FeatureStore(store, readonly=True)) as fs:
        (problem,) = full_check(fs)
    assert "embeds" not in problem.message and "--prune" in problem.message, problem.message
    out = mess_here("check", "--store", str(store))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    verdict = out.stdout.strip().splitlines()[-1]  # the verdict is the result: stdout
    assert "--prune" in verdict and "embeds" not in verdict, verdict


def test_a_track_id_whose_file_changed_since_extraction_is_answered_with_a_warning(tmp_path: Path) -> None:
    """`mess similar 6` (or a radio seeded by id) of a track whose file was since overwritten by other audio
    answered from the vectors of what the file held before, saying nothing, where the same file given by path warns
    and is embedded as it is now. An id still answers from its stored vectors, now with a one-line warning naming
    the file; a file only touched says nothing."""
    from test_store_faults import _tones

    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.dsp import DspModel
    from mess.query import resolve_query

    paths = _tones(tmp_path / "music", 3)
    with closing(FeatureStore(tmp_path / "store")) as store:
        extract(store, paths, DspModel(), WindowPolicy(4.0, 3))
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        changed, touched = (store.track(p) for p in paths[:2])
    os.utime(touched.path, (1_000_000_000, 1_000_000_000))
    _tones(tmp_path / "other", 1, offset=5)[0].replace(changed.path)  # another song written over it
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        run = store.run("dsp")
        said: list[str] = []
        for ref in (str(touched.id), str(paths[2].name)):
            assert resolve_query(store, ref, run, on_warning=said.append).track is not None
        assert said == []
        query = resolve_query(store, str(changed.id), run, on_warning=said.append)
    assert query.track == changed  # the id names the catalogued track: its stored vectors answer
    assert len(said) == 1 and changed.path in said[0] and "changed since it was extracted" in said[0], said
    out = mess_here("similar", str(changed.id), "--store", str(tmp_path / "store"), "-k", "1")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert f"warning: {changed.path} has changed since it was extracted" in " ".join(out.stderr.split()), out.stderr


def test_a_non_utf8_name_pasted_as_mess_prints_it_finds_its_track(tmp_path: Path) -> None:
    """mess prints a file name that is not UTF-8 with its bytes escaped (caf\\xe9 latin1.ogg) in tables, failures and
    JSON; that name pasted back (`mess similar 'caf\\xe9 latin1.ogg'`, or its whole path) was 'unknown track'."""
    raw = os.fsdecode(b"/music/caf\xe9 latin1.ogg")
    with closing(FeatureStore(tmp_path / "store")) as store:
        run = store.ensure_run(run_key(INFO, WindowPolicy()))
        for i, path in enumerate((raw, "/music/other.ogg")):
            store.upsert_track(Path(path), f"h{i}", 10, 1.0, {"duration": 3.0},
                               {"artist": "x", "album": None, "title": None, "genre": None, "composer": None})
        store.write_vectors(run, [_vectors("h0", 2, 0), _vectors("h1", 2, 1)])
        track = store.track(raw)
        printed = "/music/caf\\xe9 latin1.ogg"
        for typed in (printed, Path(printed).name):
            assert store.track(typed) == track, typed
        assert store.find("caf\\xe8 latin1.ogg") is None  # another byte: no such file
    out = mess_here("similar", "caf\\xe9 latin1.ogg", "--store", str(tmp_path / "store"), "-k", "1")
    said = out.stdout + out.stderr
    assert out.returncode == 0 and "like x - caf\\xe9 latin1" in said and "x - other" in said, said


def test_an_empty_query_is_said_to_be_empty(tmp_path: Path) -> None:
    """`mess similar "$UNSET"` (an empty argument) said '. is a folder, not an audio file or a track'."""
    store = _store_missing_vectors(tmp_path)
    for command in (["similar", ""], ["playlist", "radio", ""]):
        out = mess_here(*command, "--store", str(store))
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.count("\n") == 1 and "empty" in out.stderr and "folder" not in out.stderr, out.stderr


def test_check_says_a_file_extracted_with_another_model_only_is_that(tmp_path: Path) -> None:
    """Files extracted with musicnn-msd but never with dsp were reported for dsp as having 'neither vectors nor a
    recorded failure ... vectors a repair dropped, an interrupted or running `mess extract`, or a damaged content
    hash': a user read damage into the most common case, a folder extracted with one model only."""
    with closing(FeatureStore(two_model_store(tmp_path, 3, 3))) as store:
        toy = store.run("toy").id
        problems = {p.run_id: p for p in full_check(store)}
    assert list(problems) == [toy], problems
    message = problems[toy].message
    assert "2 files have neither vectors" in message and "extracted with another model only" in message, message
    assert "repair" not in message and "damaged" not in message, message
    assert "`mess extract FOLDER --model toy` embeds them" in message, message
