"""Test data generators: rendered corpus audio is real and labelled, factor sets vary one factor, files are as named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from mess.audio.decode import AudioError, load_audio, probe
from mess.audio.tags import read_tags
from mess.datasets import render, synth
from mess.datasets.render import RenderedVariant, RenderError, RenderSettings
from mess.datasets.wesnoth import read_artists

FactorSets = Callable[[str], list[RenderedVariant]]
COMPOSERS = ("bach", "haydn", "mozart", "palestrina")  # the session's rendered_collection
HANGING_PIECE = "mozart/k155/movement2.mxl"  # music21 leaves its grace notes on: fluidsynth never stops


# ---------------------------------------------------------------- corpus listing


def test_corpus_listing_is_deterministic_labelled_and_one_file_per_piece() -> None:
    pytest.importorskip("music21")
    pieces = render.list_corpus(["bach", "beethoven"], 6)
    assert pieces == render.list_corpus(["bach", "beethoven"], 6)
    assert [p.composer for p in pieces] == ["Bach"] * 6 + ["Beethoven"] * 6
    assert not any(p.corpus_path.endswith(".rntxt") for p in pieces)
    stems = [p.corpus_path.rsplit(".", 1)[0] for p in pieces]
    assert len(stems) == len(set(stems))  # opus18no1 ships as .krn and .mxl: listed once, as .mxl
    quartet = next(p for p in pieces if p.corpus_path == "beethoven/opus18no1/movement1.mxl")
    assert (quartet.work, quartet.title, quartet.slug) == ("opus18no1", "opus18no1 movement1",
                                                           "beethoven__opus18no1__movement1")
    with pytest.raises(RenderError, match="no pieces"):
        render.list_corpus(["nobody"], 1)


def test_missing_soundfont_names_the_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "SOUNDFONT_DIR", tmp_path)
    with pytest.raises(RenderError, match="apt-get install fluidsynth timgm6mb-soundfont"):
        render.find_soundfont()


# ---------------------------------------------------------------- rendered collection


def test_collection_is_real_tagged_audio(rendered_collection: list[Path]) -> None:
    assert Counter(p.name.split("__")[0] for p in rendered_collection) == dict.fromkeys(COMPOSERS, 4)
    for path in rendered_collection:
        info = sf.info(path)
        assert info.samplerate == 22050 and info.channels == 1
        assert 5.0 < info.duration <= 20.0 + 1e-3, path
        audio, _ = sf.read(path, dtype="float32")
        assert float(np.abs(audio).max()) == pytest.approx(0.5, abs=1e-3)
        assert float(audio.std()) > 0.01, f"{path} is nearly silent"
        tags = read_tags(path)
        composer = path.name.split("__")[0].title()
        assert tags["artist"] == tags["composer"] == composer and tags["genre"] == "classical"
        assert tags["album"] and tags["title"]
        assert path.with_suffix(".mid").is_file()


def test_collection_render_is_idempotent(rendered_collection: list[Path]) -> None:
    out = rendered_collection[0].parent
    mtimes = {p: p.stat().st_mtime_ns for p in rendered_collection}
    start = time.perf_counter()
    again = render.render_collection(out, COMPOSERS, 4, settings=RenderSettings(max_seconds=20.0))
    assert again == rendered_collection
    assert {p: p.stat().st_mtime_ns for p in again} == mtimes
    assert time.perf_counter() - start < 5.0


@pytest.fixture
def hanging_piece() -> render.CorpusPiece:
    pytest.importorskip("music21")
    try:
        render.require_synth()
    except RenderError as exc:
        pytest.skip(str(exc))
    return next(p for p in render.list_corpus(["mozart"], None) if p.corpus_path == HANGING_PIECE)


def test_a_quartet_excerpt_renders_in_time_and_its_midi_closes_every_channel(
        hanging_piece: render.CorpusPiece, tmp_path: Path) -> None:
    from music21 import midi

    path = render.render_piece(hanging_piece, tmp_path, max_seconds=30.0, timeout_s=30.0)
    assert sf.info(path).duration == pytest.approx(30.0, abs=0.01)
    mf = midi.MidiFile()
    mf.open(str(path.with_suffix(".mid")))
    mf.read()
    mf.close()
    for track in mf.tracks:
        channel_events = [e for e in track.events if not e.isDeltaTime()
                          and (e.type in midi.ChannelVoiceMessages or e.type in midi.ChannelModeMessages)]
        channels = {e.channel for e in channel_events}
        closing = channel_events[-2 * len(channels):]
        assert {(e.channel, e.parameter1) for e in closing} == {(c, cc) for c in channels for cc in (123, 120)}


@pytest.mark.parametrize(("drop_graces", "close_channels"), [(True, False), (False, True), (False, False)])
def test_either_safeguard_alone_ends_a_render_that_otherwise_never_stops(
        hanging_piece: render.CorpusPiece, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        drop_graces: bool, close_channels: bool) -> None:
    if not drop_graces:
        monkeypatch.setattr(render, "_drop_grace_notes", lambda score: score)
    if not close_channels:
        monkeypatch.setattr(render, "_apply_settings", lambda track, settings: None)
    if drop_graces or close_channels:
        render.render_piece(hanging_piece, tmp_path, max_seconds=30.0, timeout_s=30.0)
    else:
        with pytest.raises(RenderError, match="ran past 5 s"):
            render.render_piece(hanging_piece, tmp_path, max_seconds=30.0, timeout_s=5.0)


def test_a_collection_stops_when_fluidsynth_hangs_on_every_piece(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A fluidsynth that hangs timed out on each piece and the collection went on to the next, through the whole
    corpus (1,318 Palestrina pieces x the 60 s time-out): it now stops after a few pieces in a row, in one line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "fluidsynth"
    fake.write_text(f"#!/bin/sh\necho run >> '{calls}'\nexec sleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    start = time.perf_counter()
    with pytest.raises(RenderError, match="fluidsynth failed on 3 pieces in a row.*ran past 1 s"):
        render.render_collection(tmp_path / "out", ["josquin"], 1, workers=1,
                                 settings=RenderSettings(max_seconds=5.0, timeout_s=1.0))
    assert len(calls.read_text().split()) == render.SYNTH_FAILURES_IN_A_ROW
    assert time.perf_counter() - start < 30
    assert not list((tmp_path / "out").glob("*.flac"))


# ---------------------------------------------------------------- factor sets


@pytest.mark.parametrize("factor", ["instrument", "tempo", "transpose", "velocity"])
def test_factor_sets_vary_only_their_factor(factor_sets: FactorSets, factor: str) -> None:
    variants = factor_sets(factor)
    field = {"instrument": "program", "tempo": "tempo_scale", "transpose": "transpose", "velocity": "velocity"}[factor]
    assert len(variants) == 6 and len({v.piece for v in variants}) == 2
    for piece in {v.piece for v in variants}:
        sidecars = [json.loads(v.path.with_suffix(".json").read_text()) for v in variants if v.piece == piece]
        assert [s["value"] for s in sidecars] == [s["settings"][field] for s in sidecars]
        fixed = [{k: val for k, val in s["settings"].items() if k != field} for s in sidecars]
        assert all(f == fixed[0] for f in fixed) and fixed[0]["peak"] is None
        assert all(s["factor"] == factor and s["piece"] == piece.corpus_path for s in sidecars)


def _by_piece(variants: list[RenderedVariant]) -> dict[str, list[RenderedVariant]]:
    pieces: dict[str, list[RenderedVariant]] = {}
    for v in variants:
        pieces.setdefault(v.piece.corpus_path, []).append(v)
    return {k: sorted(vs, key=lambda v: v.value) for k, vs in pieces.items()}


def test_tempo_scales_the_duration(factor_sets: FactorSets) -> None:
    for slow, normal, fast in _by_piece(factor_sets("tempo")).values():
        d = {v.value: sf.info(v.path).duration for v in (slow, normal, fast)}
        assert d[0.6] > d[1.0] > d[1.6]
        # duration = length / scale + a constant synth tail, so the differences cancel the tail
        expected = (1 / 0.6 - 1) / (1 - 1 / 1.6)
        assert (d[0.6] - d[1.0]) / (d[1.0] - d[1.6]) == pytest.approx(expected, rel=0.05)


def test_transposition_shifts_the_chroma(factor_sets: FactorSets) -> None:
    def chroma(v: RenderedVariant) -> np.ndarray:
        y, sr = sf.read(v.path, dtype="float32")
        return librosa.feature.chroma_stft(y=y, sr=sr, n_fft=4096, tuning=0.0).mean(axis=1)

    for variants in _by_piece(factor_sets("transpose")).values():
        base = chroma(next(v for v in variants if v.value == 0))
        for v in variants:
            shifted = chroma(v)
            fit = [np.corrcoef(np.roll(base, k), shifted)[0, 1] for k in range(12)]
            assert int(np.argmax(fit)) == int(v.value) % 12, f"{v.path.name}: {np.round(fit, 2)}"


def test_velocity_raises_the_level(factor_sets: FactorSets) -> None:
    for variants in _by_piece(factor_sets("velocity")).values():
        rms = [float(sf.read(v.path)[0].std()) for v in variants]
        assert rms[0] * 2 < rms[1] and rms[1] * 1.5 < rms[2], rms


def test_instrument_changes_timbre_not_timing(factor_sets: FactorSets) -> None:
    for variants in _by_piece(factor_sets("instrument")).values():
        durations = {round(sf.info(v.path).duration, 2) for v in variants}
        assert len(durations) == 1
        centroids = []
        for v in variants:
            y, sr = sf.read(v.path, dtype="float32")
            centroids.append(float(librosa.feature.spectral_centroid(y=y, sr=sr).mean()))
        ratios = [max(a, b) / min(a, b) for i, a in enumerate(centroids) for b in centroids[i + 1:]]
        assert min(ratios) > 1.1, centroids


# ---------------------------------------------------------------- synthetic files

GOOD = ["tone.wav", "tone.flac", "tone.ogg", "tone.mp3", "tone.m4a", "tone.opus", "stereo.flac", "surround51.flac",
        "rate_8000.wav", "rate_96000.flac"]
BROKEN = ["empty.wav", "corrupt.mp3", "corrupt.flac", "truncated.flac"]


@pytest.mark.parametrize("name", GOOD)
def test_synth_tones_decode_to_a440(synth_dir: Path, name: str) -> None:
    y = load_audio(synth_dir / name, 16000)
    assert abs(y.size / 16000 - 2.0) < 0.1
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    assert abs(np.argmax(spectrum) * 16000 / y.size - 440.0) < 2.0


def test_synth_layouts_and_rates_are_as_named(synth_dir: Path) -> None:
    assert probe(synth_dir / "stereo.flac").channels == 2
    assert probe(synth_dir / "surround51.flac").channels == 6
    assert probe(synth_dir / "rate_8000.wav").sample_rate == 8000
    assert probe(synth_dir / "tone.opus").sample_rate == 48000
    silence = load_audio(synth_dir / "silence.wav", 16000)
    assert silence.size == 32000 and not silence.any()
    assert load_audio(synth_dir / "short.wav", 16000).size == 160


@pytest.mark.parametrize("name", BROKEN)
def test_synth_broken_files_fail_to_decode(synth_dir: Path, name: str) -> None:
    with pytest.raises(AudioError):
        load_audio(synth_dir / name, 16000)


def test_synth_signals_are_deterministic_and_as_described(tmp_path: Path) -> None:
    assert np.array_equal(synth.noise(seed=3), synth.noise(seed=3))
    clicks = synth.clicks(bpm=120.0, seconds=4.0, sr=8000)
    loud = np.flatnonzero(np.abs(clicks) > 0.05)
    onsets = loud[np.r_[True, np.diff(loud) > 800]]  # first loud sample after 0.1 s of quiet
    assert len(onsets) == 8 and np.allclose(np.diff(onsets) / 8000, 0.5, atol=0.002)
    wide = synth.multichannel(synth.tone(), 6)
    assert np.allclose(np.abs(wide).max(axis=0), 0.5 / np.arange(1, 7), rtol=1e-3)
    path = synth.write(tmp_path / "wide.m4a", wide, 22050)
    assert probe(path).channels == 6
    with pytest.raises(ValueError, match="opus"):
        synth.write(tmp_path / "x.opus", synth.tone(), 22050)
    with pytest.raises(ValueError, match="cannot write"):
        synth.write(tmp_path / "x.wma", synth.tone(), 22050)


# ---------------------------------------------------------------- wesnoth


def test_wesnoth_tracks_carry_ten_composers(wesnoth_tracks: list[Path]) -> None:
    assert len(wesnoth_tracks) == 41
    artists = read_artists(wesnoth_tracks)
    tagged = {p.name: a for p, a in artists.items() if a}
    assert len(tagged) == 40 and "silence.ogg" not in tagged
    counts = Counter(tagged.values())
    assert len(counts) == 10 and min(counts.values()) >= 2
    assert all(probe(p).duration > 5.0 for p in wesnoth_tracks)



def _package_from(tracks: list[Path], work: Path) -> Path:
    """A folder holding an ``apt-get`` that downloads a wesnoth-1.16-music .deb of ``tracks`` (its real tracks, in its
    layout; built uncompressed, so unpacking it costs no xz) and fails for any other request."""
    root = work / "root"
    music = root / "usr" / "share" / "games" / "wesnoth" / "1.16" / "data" / "core" / "music"
    music.mkdir(parents=True)
    for track in tracks:
        try:
            os.link(track, music / track.name)
        except OSError:  # the cache on another file system
            shutil.copyfile(track, music / track.name)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text("Package: wesnoth-1.16-music\nVersion: 1:1.16.9-1\nArchitecture: all\n"
                                             "Maintainer: Tests <tests@example.org>\nDescription: Wesnoth music\n")
    deb = work / "wesnoth-1.16-music_1.16.9-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "-b", str(root), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(root)
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\n[ "$*" = "download wesnoth-1.16-music" ] || exit 100\n'
                                     f"exec cp '{deb}' .\n")
    (bin_dir / "apt-get").chmod(0o755)
    return bin_dir


def test_wesnoth_lists_only_its_own_tracks_beside_other_files(wesnoth_tracks: list[Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every OGG in the folder was returned and shown as Wesnoth's (a folder of 41 OGGs of anything was taken
    for the soundtrack): an extra file made '42 tracks' with an '(untagged)' composer. The package comes from an
    `apt-get download` of a local .deb of the session's tracks: what is tested is the folder, not the network."""
    from mess.datasets.wesnoth import FetchError, fetch_wesnoth

    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb builds the package: this test needs Debian or Ubuntu")
    monkeypatch.setenv("PATH", f"{_package_from(wesnoth_tracks, tmp_path / 'package')}:{os.environ['PATH']}")
    out = tmp_path / "wesnoth ü"
    out.mkdir()
    sf.write(out / "mine.ogg", np.zeros(8000, np.float32), 8000, format="OGG")
    try:
        fetched = fetch_wesnoth(out)
    except FetchError as exc:
        pytest.skip(str(exc))
    assert [p.name for p in fetched] == [p.name for p in wesnoth_tracks]
    monkeypatch.setenv("PATH", "")  # no apt-get: the folder itself answers
    assert fetch_wesnoth(out) == fetched
    assert (out / "mine.ogg").is_file()
