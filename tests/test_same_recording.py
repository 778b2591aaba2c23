"""Same recording: lossy, resampled and shifted copies of real soundtrack tracks are one recording; other tracks,
another mix of one piece and another render of one score are not; radios never play a track and its copy, and
`mess similar` says which result is the query's recording."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from conftest import CACHE_ROOT, cache_lock, mess_here
from mess.audio import recording
from mess.audio.decode import load_audio, probe
from mess.audio.recording import same_recording
from mess.datasets import copies
from mess.datasets.copies import read_channels, write_copy
from mess.store import FeatureStore

if TYPE_CHECKING:
    from mess.datasets.render import RenderedVariant

SOUNDTRACKS = Path(os.environ.get("MESS_SOUNDTRACKS", "/work/data/soundtracks"))
SOURCES = ("transience.ogg", "main_menu.ogg", "battle-epic.ogg", "revelation.ogg")  # Wesnoth's, 48-78 s
EXCERPT = 40.0  # seconds of each: the originals are lossless FLACs of them
COPIES = {  # of the first source: name -> (codec, keyword arguments of write_copy)
    "mp3-128.mp3": ("libmp3lame", {"bit_rate": 128_000}),
    "aac-64.m4a": ("aac", {"bit_rate": 64_000}),
    "lead-48k.flac": ("flac", {"out_rate": 48_000, "lead": 0.03}),
}


@pytest.fixture(scope="session")
def originals(request: pytest.FixtureRequest) -> list[Path]:
    """FLACs of the first :data:`EXCERPT` seconds of four Wesnoth tracks, and copies of the first (:data:`COPIES`),
    cached across runs (keyed by the copy writer's source)."""
    folder = SOUNDTRACKS / "wesnoth"
    tracks = [folder / s for s in SOURCES] if folder.is_dir() else request.getfixturevalue("wesnoth_tracks")
    by_name = {Path(t).name: Path(t) for t in tracks}
    key = json.dumps([SOURCES, EXCERPT, {k: [c, kw] for k, (c, kw) in COPIES.items()}]).encode()
    out = CACHE_ROOT / f"recordings-{hashlib.sha1(key + Path(copies.__file__).read_bytes()).hexdigest()[:12]}"
    with cache_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        made = []
        for name in SOURCES:
            flac = out / f"{Path(name).stem}.flac"
            audio, rate = read_channels(by_name[name], EXCERPT)
            _write(flac, lambda tmp, a=audio, r=rate: write_copy(a, r, tmp, "flac"))
            made.append(flac)
        audio, rate = read_channels(made[0])
        for name, (codec, kw) in COPIES.items():
            _write(out / name, lambda tmp, c=codec, k=kw: write_copy(audio, rate, tmp, c, **k))
    return made


def _write(path: Path, make: Callable[[Path], object]) -> None:
    """``make`` a file at ``path`` unless it is there, through a temporary name (a killed run leaves no half file)."""
    if not path.exists():
        tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        make(tmp)
        tmp.replace(path)


def _copy(originals: list[Path], name: str) -> Path:
    return originals[0].parent / name


@pytest.mark.parametrize("name", sorted(COPIES))
def test_a_lossy_resampled_or_shifted_copy_is_the_same_recording(originals: list[Path], name: str) -> None:
    """An MP3 at 128 kb/s, an AAC at 64 kb/s and a 48 kHz FLAC with 30 ms of silence ahead are the original's
    recording, found at the lag the copy was made with (within one 16 ms frame; encoder delay is under that)."""
    match = same_recording(originals[0], _copy(originals, name))
    lead = COPIES[name][1].get("lead", 0.0)
    assert match.same, match.reason
    assert abs(match.lag - lead) <= 128 / recording.RATE + 1e-9, match
    assert match.score >= recording.SAME_SCORE and match.level_drift <= recording.SAME_LEVEL_DB
    assert "same recording" in match.reason and match.to_dict()["same"] is True


def test_the_score_is_the_correlation_of_the_log_mel_spans_at_the_lag(originals: list[Path]) -> None:
    """The correlation a match reports is the Pearson correlation (numpy's corrcoef) of the two files' log-mel
    spectrograms at the reported lag, the lowest of the three spans'."""
    a, b = originals[0], _copy(originals, "lead-48k.flac")
    match = same_recording(a, b)
    pairs = list(recording.spans(a, b, *recording.span_starts(match.durations[0])))
    pad = len(pairs[0][1]) - len(pairs[0][0])
    lag = round(match.lag * recording.RATE / 128) + pad // 2
    expected = min(float(np.corrcoef(x.ravel(), y[lag:lag + len(x)].ravel())[0, 1]) for x, y in pairs)
    assert match.score == pytest.approx(expected, abs=1e-4)


def test_other_tracks_of_one_length_are_not_the_same_recording(originals: list[Path]) -> None:
    """Four different tracks cut to one length (so the duration check passes) are pairwise different recordings,
    their correlation below the threshold."""
    for i, a in enumerate(originals):
        for b in originals[i + 1:]:
            match = same_recording(a, b)
            assert not match.same and match.score < recording.SAME_SCORE, match


def test_another_mix_of_one_piece_is_not_the_same_recording(tmp_path: Path) -> None:
    """Warmux's Apnee and Apnee2: one piece, the same stems (their waveforms correlate 0.999 for most of the
    track) mixed with other levels; their log-mel spectra correlate like a lossy copy's, but their loudness ratio
    drifts by several dB from one part to the next (measured here from the decoded audio), as a copy's never does."""
    folder = SOUNDTRACKS / "warmux"
    if not (folder / "Olivier_Militon.-.Apnee2.ogg").is_file():
        pytest.skip(f"the warmux soundtrack is not in {SOUNDTRACKS}")
    a, b = (Path(shutil.copy(folder / f"Olivier_Militon.-.{n}.ogg", tmp_path)) for n in ("Apnee", "Apnee2"))
    x, y = load_audio(a, 8000), load_audio(b, 8000)
    seconds = np.arange(0, min(len(x), len(y)) - 80_000, 80_000)
    ratio = [10 * np.log10(np.mean(y[s:s + 80_000] ** 2) / np.mean(x[s:s + 80_000] ** 2)) for s in seconds]
    assert max(ratio) - min(ratio) > 2 * recording.SAME_LEVEL_DB  # the premise: the two mixes ride levels apart
    match = same_recording(a, b)
    assert not match.same and match.level_drift > recording.SAME_LEVEL_DB, match


def test_one_score_rendered_with_two_instruments_is_not_the_same_recording(
        factor_sets: Callable[[str], list[RenderedVariant]]) -> None:
    """A Bach chorale rendered with piano, violin and flute (one score, one tempo, one length): three recordings."""
    renders = [v for v in factor_sets("instrument") if v.piece == factor_sets("instrument")[0].piece]
    assert len(renders) == 3
    for i, a in enumerate(renders):
        for b in renders[i + 1:]:
            match = same_recording(a.path, b.path)
            assert not match.same, (a.value, b.value, match)


def test_files_not_on_disk_or_unreadable_are_not_compared(originals: list[Path], tmp_path: Path) -> None:
    """A missing file and one that is no audio give a verdict with the reason, not an exception."""
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all" * 100)
    for other in (tmp_path / "gone.flac", junk):
        match = same_recording(originals[0], other)
        assert not match.same and "not compared" in match.reason and str(other) in match.reason
        assert match.to_dict()["score"] is None


def test_copies_are_made_from_the_samples_a_decoder_gives(tmp_path: Path) -> None:
    """``read_channels`` gives what libsndfile reads: a Vorbis file's priming (128 samples FFmpeg stamps before 0 in
    Wesnoth's battle-epic) left out, so a copy starts where the original does; 8-bit PCM centred on 0. Before, the
    priming was kept (its copies ran 2.9 ms early) and 8-bit samples came back as 0-255."""
    import soundfile as sf

    wav = tmp_path / "u8.wav"
    sf.write(wav, np.sin(np.linspace(0, 200, 8000))[:, None] * [0.5, -0.25], 8000, subtype="PCM_U8")
    primed = SOUNDTRACKS / "wesnoth" / "battle-epic.ogg"
    for path in [wav, primed] if primed.is_file() else [wav]:
        audio, rate = read_channels(path)
        expected, expected_rate = sf.read(path, dtype="float32", always_2d=True)
        assert rate == expected_rate and audio.shape == expected.T.shape, path
        assert np.abs(audio - expected.T).max() < 1e-4, path


@pytest.fixture(scope="module")
def copied_store(originals: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """The four originals and the copies of the first in a music folder, extracted with dsp: (store, the first
    original and its copies there). Its tests only read it."""
    tmp_path = tmp_path_factory.mktemp("copied")
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model

    music = tmp_path / "music"
    music.mkdir()
    for path in [*originals, *(_copy(originals, name) for name in COPIES)]:
        shutil.copy(path, music)
    with closing(FeatureStore(tmp_path / "store")) as store:
        assert not extract(store, sorted(music.iterdir()), load_model("dsp"), WindowPolicy()).failed
    return tmp_path / "store", [music / originals[0].name, *(music / name for name in COPIES)]


def test_a_radio_never_plays_a_track_and_its_copies(copied_store: tuple[Path, list[Path]]) -> None:
    """Seeded by any track, a radio over a folder holding a track, its MP3 and AAC copies and a resampled copy plays
    at most one of the four (the seed counts). Some of them are at a cosine under 0.9999 in the radio's space,
    above VERIFY_COSINE: the vectors could not tell, and the radio played two of the recording before."""
    from mess.playlists.radio import radio
    from mess.search.query import DUPLICATE_COSINE, VERIFY_COSINE, collection_query
    from mess.search.vectors import VectorSpec, load_vectors

    root, group = copied_store
    with closing(FeatureStore(root)) as store:
        run = store.runs()[0]
        same = {str(p) for p in group}
        vs = load_vectors(store, run, VectorSpec.from_options(), store.tracks(run))
        units = vs.unit()[vs.rows(np.array([store.track(p).id for p in sorted(same)]))]
        cosines = (units @ units.T)[np.triu_indices(len(units), 1)]
        assert ((cosines >= VERIFY_COSINE) & (cosines < DUPLICATE_COSINE)).any(), cosines  # the premise
        for track in store.tracks(run):
            playlist = radio(store, run, [collection_query(store, track.path)], n=10)
            played = {track.path, *(t.path for t in playlist.tracks)}
            assert len(played & same) <= 1, (track.path, [t.path for t in playlist.tracks])


def test_similar_marks_the_copies_as_the_same_recording(copied_store: tuple[Path, list[Path]]) -> None:
    """`mess similar` of the original flags its copies as duplicates, one at a cosine under 0.9999, with the
    comparison's evidence in JSON ("same_recording"); the other tracks (of the same length, close in this small
    collection's space) are compared and are not."""
    from mess.search.query import DUPLICATE_COSINE, collection_query, similar_tracks

    root, (original, *copied) = copied_store
    with closing(FeatureStore(root)) as store:
        run = store.runs()[0]
        results = similar_tracks(store, run, collection_query(store, str(original)), k=6)
    by_path = {n.track.path: n for n in results}
    assert any(by_path[str(p)].score < DUPLICATE_COSINE for p in copied)  # the premise: its audio tells
    for path in copied:
        n = by_path[str(path)]
        assert n.duplicate and n.recording is not None and n.recording.same, n
        evidence = n.to_dict()["same_recording"]
        assert evidence["same"] and evidence["score"] >= recording.SAME_SCORE and len(evidence["durations"]) == 2
    others = [n for n in results if Path(n.track.path) not in copied]
    assert others and not any(n.duplicate or n.recording is not None and n.recording.same for n in others)


def test_a_path_from_a_track_to_its_copy_is_refused(copied_store: tuple[Path, list[Path]]) -> None:
    """A sonic path from a track to its MP3 copy (other content) is refused as one from a track to itself is, the
    reason naming both; from the track to another one it is made."""
    from mess.playlists.path import sonic_path
    from mess.playlists.playlist import PlaylistError

    root, (original, *copied) = copied_store
    with closing(FeatureStore(root)) as store:
        run = store.runs()[0]
        start, copy = store.track(str(original)), store.track(str(copied[0]))
        with pytest.raises(PlaylistError, match="the start and the end are the same recording") as refused:
            sonic_path(store, run, start, copy, n=3)
        assert start.name in str(refused.value) and copy.name in str(refused.value)
        other = next(t for t in store.tracks(run) if Path(t.path).parent == original.parent
                     and Path(t.path) not in (original, *copied))
        assert len(sonic_path(store, run, start, other, n=3)) == 3


def test_mess_similar_says_same_recording(copied_store: tuple[Path, list[Path]]) -> None:
    """`mess similar` prints "(same recording)" beside each copy of the query, and its JSON the evidence."""
    root, (original, *copied) = copied_store
    shown = mess_here("similar", str(original), "-k", "6", "-s", str(root), env={"COLUMNS": "250"})
    assert shown.returncode == 0, shown.stderr
    # "(same" starts each flagged row's name cell: the table may wrap "recording)" onto the next line (a rich console
    # made under a COLUMNS keeps that width; under xdist this one was once 80 wide whatever COLUMNS said here)
    flagged = [line for line in shown.stdout.splitlines() if "(same" in line]
    assert " ".join(shown.stdout.split()).count("recording)") >= len(copied)
    assert len(flagged) == len(copied) and all(any(p.stem in line for p in copied) for line in flagged), shown.stdout
    answer = json.loads(mess_here("similar", str(original), "-k", "6", "-s", str(root), "--json").stdout)
    same = {Path(r["path"]).name for r in answer["results"] if r["same_recording"] and r["same_recording"]["same"]}
    assert same == {p.name for p in copied}


def test_the_shortest_files_compared_are_compared(originals: list[Path], tmp_path: Path) -> None:
    """A 7.3 s track and its MP3 copy: the first span starts at the lag's margin, and the other file's span, a lag
    earlier, at 0 s, not before (it started 4 ms before the file's start, and the pair was 'not compared')."""
    audio, rate = read_channels(originals[0], 7.3)
    a = write_copy(audio, rate, tmp_path / "short.flac", "flac")
    b = write_copy(audio, rate, tmp_path / "short.mp3", "libmp3lame", bit_rate=128_000)
    assert recording.span_starts(probe(a).duration)[0][0] == recording.MAX_LAG  # the premise
    match = same_recording(a, b)
    assert match.same, match.reason


GAP = 10.0  # seconds of each silence spliced in


def _spliced(audio: np.ndarray, rate: int, at: list[float]) -> np.ndarray:
    """[channels, samples] ``audio`` with :data:`GAP` seconds of digital silence inserted to begin at each of ``at``
    (seconds of the result, in order)."""
    parts, used = [], 0
    for i, t in enumerate(at):
        cut = round((t - i * GAP) * rate)
        parts += [audio[:, used:cut], np.zeros((len(audio), round(GAP * rate)), audio.dtype)]
        used = cut
    return np.concatenate([*parts, audio[:, used:]], axis=1)


@pytest.fixture(scope="module")
def spliced(originals: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the first original with a silence spliced in over each span compared, its MP3 copy, the second original with
    the same silences): FLACs of 70 s, silent from 1 s before each span to 1 s after it."""
    tmp_path = tmp_path_factory.mktemp("spliced")
    at = [s - 1.0 for s in recording.span_starts(EXCERPT + 3 * GAP)[0]]
    made = []
    for i, source in enumerate(originals[:2]):
        audio, rate = read_channels(source)
        made.append(write_copy(_spliced(audio, rate, at), rate, tmp_path / f"spliced{i}.flac", "flac"))
    audio, rate = read_channels(made[0])
    copy = write_copy(audio, rate, tmp_path / "spliced0.mp3", "libmp3lame", bit_rate=128_000)
    return made[0], copy, made[1]


def _quiet_spans(path: Path) -> list[float]:
    """The loudest half second (dBFS, numpy on the decoded audio) of each span :func:`span_starts` places in
    ``path``."""
    x = load_audio(path, recording.RATE).astype(np.float64)
    starts, span = recording.span_starts(probe(path).duration)
    half = recording.RATE // 2
    loudest = []
    for s in starts:
        run = x[round(s * recording.RATE):round((s + span) * recording.RATE)]
        loudest.append(float(np.max(10 * np.log10(np.mean(run[:len(run) // half * half].reshape(-1, half) ** 2,
                                                              axis=1) + 1e-20))))
    return loudest


def test_a_copy_silent_where_the_spans_fall_is_the_same_recording(spliced: tuple[Path, Path, Path]) -> None:
    """A track silent where its three spans fall (as a hidden track follows minutes of silence) and its MP3 copy are
    one recording, either way round: the spans are moved where the first file sounds. Before, the spans compared
    silence (correlation 0) and the copy was another recording, so a radio could play both."""
    original, copy, _ = spliced
    assert max(_quiet_spans(original) + _quiet_spans(copy)) < recording.SILENT_DB  # the premise
    for a, b in ((original, copy), (copy, original)):
        match = same_recording(a, b)
        assert match.same, match.reason
        assert "3 moved off silence" in match.reason and abs(match.lag) <= 128 / recording.RATE + 1e-9, match


def test_other_tracks_with_the_same_silences_are_not_the_same_recording(spliced: tuple[Path, Path, Path]) -> None:
    """Another track with the same silences spliced in is another recording than the first and its copy: moved where
    the first file sounds, the spans compare music (a span silent in both would agree whatever the music)."""
    original, copy, other = spliced
    for a, b in ((original, other), (other, copy), (copy, other)):
        match = same_recording(a, b)
        assert not match.same and match.score < recording.SAME_SCORE, match


def test_each_span_is_decoded_once_and_only_while_it_can_tell(originals: list[Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pair of the first original, its three copies (encoder padding makes their lengths differ by a few ms)
    and another track, compared both ways: each span of each file is decoded once (a radio's candidate meets several
    kept tracks, then is kept), as spans fall at the same places; the other track's first span, under the threshold
    against every file, is the only one of it decoded. Before, a file was decoded again as the second file for each
    length it met, and as the first, three spans each time; the verdicts stand."""
    from mess.audio import decode

    group = [originals[0], *(_copy(originals, name) for name in COPIES)]
    files = [*group, originals[1]]
    durations = [probe(f).duration for f in files]
    assert len(set(durations)) > 1 and len({tuple(recording.span_starts(d)[0]) for d in durations}) == 1  # premise
    decoded: Counter[Path] = Counter()  # spans decoded, by file
    real = decode.load_segments

    def counted(path: str | Path, rate: int, starts: list[float], seconds: float) -> np.ndarray:
        decoded[Path(path)] += len(starts)
        return real(path, rate, starts, seconds)

    monkeypatch.setattr(decode, "load_segments", counted)
    for cached in (recording._decoded, recording._sounding):
        cached.cache_clear()
    verdicts = {(a, b): same_recording(a, b).same for a in files for b in files if a != b}
    assert verdicts == {(a, b): a in group and b in group for a, b in verdicts}
    assert decoded == {**{f: 3 for f in group}, originals[1]: 1}


def test_the_api_says_same_recording(copied_store: tuple[Path, list[Path]]) -> None:
    """The server's similar answer carries the same evidence as `mess similar --json`: each copy of the query flagged
    a duplicate with ``same_recording.same``, the other tracks not."""
    from fastapi.testclient import TestClient

    from mess.serve.app import create_app

    root, (original, *copied) = copied_store
    with closing(FeatureStore(root)) as store:
        query = store.track(str(original)).id
    with TestClient(create_app(root), base_url="http://127.0.0.1") as client:
        answer = client.get(f"/api/tracks/{query}/similar", params={"k": 6})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    same = {r["file"] for r in results if r["same_recording"] and r["same_recording"]["same"]}
    assert same == {p.name for p in copied}
    assert all(r["duplicate"] for r in results if r["file"] in same)


def test_an_outside_lossy_copy_is_compared_with_the_collection(copied_store: tuple[Path, list[Path]],
                                                               tmp_path: Path) -> None:
    """A file from outside the collection (an MP3 at 96 kb/s of the original, which the store does not hold): `mess
    similar` of it says which results are its recording (the original and its copies), and a radio seeded by it
    plays none of them. Before, only collection tracks were compared: the radio played the original."""
    from mess.playlists.radio import radio
    from mess.query.embed import embed_query
    from mess.search.query import similar_tracks

    root, group = copied_store
    audio, rate = read_channels(group[0])
    outside = tmp_path / "outside.mp3"
    write_copy(audio, rate, outside, "libmp3lame", bit_rate=96_000)
    with closing(FeatureStore(root)) as store:
        run = store.runs()[0]
        query = embed_query(store, outside, run)
        assert query.track is None and query.path == str(outside)  # the premise: not a track of the store
        results = similar_tracks(store, run, query, k=len(group) + 2)
        same = {n.track.path for n in results if n.recording is not None and n.recording.same}
        assert same == {str(p) for p in group}
        assert all(n.duplicate for n in results if n.track.path in same)
        playlist = radio(store, run, [query], n=8)
    assert not {t.path for t in playlist.tracks} & {str(p) for p in group}, [t.path for t in playlist.tracks]
