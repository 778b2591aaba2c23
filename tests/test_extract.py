"""The extraction pipeline end to end on real decoding and the real DSP model."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf
from tones import write_tones

from conftest import as_ordinary_user, mess_here
from mess.audio.discover import find_audio
from mess.audio.windows import WindowPolicy
from mess.extract import pipeline
from mess.extract.embed import embed_file
from mess.extract.pipeline import extract
from mess.extract.runs import run_policy
from mess.models.dsp import DspModel
from mess.store import FeatureStore, catalog

POLICY = WindowPolicy(window_seconds=4.0, max_windows=3)


def _tone_files(folder: Path, n: int, seconds: float = 3.0, sr: int = 22050) -> list[Path]:
    return write_tones(folder, n, seconds=seconds, sr=sr,
                       wave=lambda i, t: 0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t)
                       * (1 + 0.5 * np.sin(2 * np.pi * (i + 1) * t)))


def test_extract_skips_unchanged_picks_up_new_and_prunes(tmp_path: Path) -> None:
    music = tmp_path / "music"
    _tone_files(music, 3)
    store = FeatureStore(tmp_path / "store")
    model = DspModel()
    first = extract(store, find_audio([music]), model, POLICY)
    assert (first.done, first.skipped, first.failed) == (3, 0, [])
    _tone_files(music, 4)  # rewrites the same 3 bytes-identical files and adds one
    second = extract(store, find_audio([music]), model, POLICY)
    assert (second.done, second.skipped) == (1, 3)
    (music / "tone00.wav").unlink()
    third = extract(store, find_audio([music]), model, POLICY, prune_under=[music])
    assert (third.removed, third.done, third.skipped) == (1, 0, 3)
    assert len(store.tracks(store.run("dsp"))) == 3


def _truncated_mp3(path: Path, seconds: float = 200.0, keep: float = 0.31, sr: int = 16000) -> None:
    """An MP3 (LAME through PyAV) whose Xing header claims ``seconds`` but whose bytes stop after ``keep`` of them."""
    import av

    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr) * 2**31).astype(np.int32)
    full = path.with_suffix(".full")
    with av.open(str(full), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sr, layout="mono")
        stream.bit_rate = 32000
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s32p", layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()


def _truncated_m4a(path: Path, seconds: float = 200.0, keep: float = 0.31, sr: int = 16000) -> None:
    """An M4A (AAC through PyAV, its index first) whose index claims ``seconds`` but whose bytes stop after ``keep``
    of them. (A truncated MP3 no longer serves: its probe reads the length the bytes hold, not its Xing header's.)"""
    import av

    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)
    full = path.with_suffix(".full")
    with av.open(str(full), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("aac", rate=sr, layout="mono")
        stream.bit_rate = 32000
        for start in range(0, len(samples), 16384):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 16384], format="flt", layout="mono")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()


def test_a_truncated_file_is_catalogued_with_its_decoded_duration(tmp_path: Path) -> None:
    """Its index claims 200 s (the probe says so): seeking to the windows fails, the whole file is decoded, and what
    was decoded (about 62 s) is its duration (playlists showed 3:20), also after the file is inspected again."""
    music = tmp_path / "music"
    music.mkdir()
    from mess.extract.prepare import inspect_file

    _truncated_m4a(music / "cut.m4a")
    assert inspect_file(music / "cut.m4a").info["duration"] > 199  # what the correction has to undo
    cli = ["extract", str(music), "--model", "dsp", "--window", "4", "--max-windows", "3", "--store",
           str(tmp_path / "store")]
    assert mess_here(*cli).returncode == 0
    os.utime(music / "cut.m4a", (1, 1))  # inspected again: the index says 200 s again
    second = mess_here(*cli)
    assert second.returncode == 0 and "1 unchanged" in second.stderr, second.stderr
    store = FeatureStore(tmp_path / "store", readonly=True)
    duration = store.track(music / "cut.m4a").duration
    store.close()
    assert duration is not None and 55 < duration < 70, duration


def test_a_pruned_tracks_id_never_names_another_file(tmp_path: Path) -> None:
    """SQLite gives a new row the highest id + 1, so after the last track was pruned the next new file took its id:
    `mess similar 3`, a server URL or a saved id then named another file."""
    music = tmp_path / "music"
    _tone_files(music, 3)
    store = FeatureStore(tmp_path / "store")
    extract(store, find_audio([music]), DspModel(), POLICY)
    last = max(t.id for t in store.tracks(store.run("dsp")))
    removed = next(t for t in store.tracks(store.run("dsp")) if t.id == last)
    Path(removed.path).unlink()
    assert extract(store, find_audio([music]), DspModel(), POLICY, prune_under=[music]).removed == 1
    _tone_files(tmp_path / "more", 4)
    extract(store, [tmp_path / "more" / "tone03.wav"], DspModel(), POLICY)
    new = store.track(tmp_path / "more" / "tone03.wav")
    assert new.id > last, (new.id, last)
    assert len({t.id for t in store.tracks(store.run("dsp"))}) == 3


def test_prune_forgets_files_gone_from_a_folder_the_walk_reached_through_a_link(tmp_path: Path) -> None:
    """`mess extract music --prune` kept a deleted file of music/linked, a symbolic link to a folder elsewhere: the
    walk follows the link and catalogues its files under the real folder, outside music/, where --prune never
    looked; the run then told the user to do what they had just done (`mess extract FOLDER --prune`). It kept
    the deleted target of music/single.wav, a link to a file elsewhere, too."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    music, elsewhere, store = tmp_path / "music", tmp_path / "elsewhere", tmp_path / "s"
    _tone_files(music, 1)
    gone, kept = _tone_files(elsewhere / "album", 2)
    (music / "linked").symlink_to(elsewhere / "album", target_is_directory=True)
    single = _tone_files(elsewhere / "single", 1, sr=16000)[0]  # a file linked alone, its target deleted after
    (music / "single.wav").symlink_to(single)
    args = ["extract", str(music), "--model", "dsp", "--store", str(store)]
    assert CliRunner().invoke(app, args).exit_code == 0
    gone.unlink()
    single.unlink()
    out = CliRunner().invoke(app, [*args, "--prune"], env={"COLUMNS": "300"})
    assert out.exit_code == 0 and "2 removed" in out.output and "no longer on disk" not in out.output, out.output
    fs = FeatureStore(store, readonly=True)
    try:
        assert sorted(fs.all_paths()) == sorted(str(p.resolve()) for p in (music / "tone00.wav", kept))
    finally:
        fs.close()


def test_a_file_replaced_by_a_link_is_named_and_pruned_not_answered_with_its_old_vectors(tmp_path: Path) -> None:
    """A catalogued a.wav replaced by a symbolic link to the collection's b.wav kept its entry and the vectors of
    what it held before, in every answer (`mess similar` named a.wav, whose player plays b.wav), with no word, through
    `--prune` and `mess check`: files are catalogued by their real paths, so the walk catalogued only b.wav, and a.wav,
    a file still, never counted as gone. It is now named as gone (replaced by a link) and --prune forgets it."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    music, store = tmp_path / "music", tmp_path / "s"
    a, b, c = _tone_files(music, 3)
    args = ["extract", str(music), "--model", "dsp", "--store", str(store)]
    assert CliRunner().invoke(app, args).exit_code == 0
    a.unlink()
    a.symlink_to(b.name)
    out = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert out.exit_code == 0 and "1 catalogued file is no longer on disk" in out.output, out.output
    assert "replaced by a link" in out.output and str(music.resolve() / a.name) in out.output, out.output
    out = CliRunner().invoke(app, [*args, "--prune"], env={"COLUMNS": "300"})
    assert out.exit_code == 0 and "1 removed" in out.output and "no longer on disk" not in out.output, out.output
    fs = FeatureStore(store, readonly=True)
    try:
        assert sorted(fs.all_paths()) == [str(b.resolve()), str(c.resolve())]
    finally:
        fs.close()


def test_hidden_link_loops_and_a_loop_named_to_prune_end_no_run(tmp_path: Path) -> None:
    """A hidden audio name linking to itself ('.loop.wav', or x.wav in a dot-folder) ended `mess extract` in a
    RuntimeError traceback (Path.resolve on a link loop, Python 3.11) while counting hidden files, and so did a link
    loop among the FOLDERS of `--prune` (a folder given there may be gone). Both are now passed over."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    music, store = tmp_path / "music", tmp_path / "s"
    _tone_files(music, 1)
    (music / ".loop.wav").symlink_to(".loop.wav")
    (music / ".hidden").mkdir()
    (music / ".hidden" / "x.wav").symlink_to("x.wav")
    (tmp_path / "loop").symlink_to("loop")
    args = ["extract", str(music), "--model", "dsp", "--store", str(store)]
    out = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert out.exit_code == 0 and "1 embedded" in out.output and "2 hidden audio files" in out.output, out.output
    out = CliRunner().invoke(app, [*args, str(tmp_path / "loop"), "--prune"], env={"COLUMNS": "300"})
    assert out.exit_code == 0 and "1 unchanged" in out.output, (out.output, out.exception)


def test_prune_keeps_a_file_the_folder_walk_passes_over(tmp_path: Path) -> None:
    """A file in a hidden folder, extracted by naming it, is still on disk: pruning its parent keeps it."""
    music = tmp_path / "music"
    _tone_files(music, 2)
    hidden = _tone_files(music / ".stash", 3)[2]
    store = FeatureStore(tmp_path / "store")
    model = DspModel()
    extract(store, [*find_audio([music]), hidden], model, POLICY)
    (music / "tone01.wav").unlink()
    summary = extract(store, find_audio([music]), model, POLICY, prune_under=[music])
    assert summary.removed == 1  # tone01.wav only (the hidden file used to go too)
    assert sorted(Path(t.path).name for t in store.tracks(store.run("dsp"))) == ["tone00.wav", "tone02.wav"]
    assert store.track(str(hidden)).path == str(hidden)


def test_byte_identical_copies_in_one_batch_share_one_vector(tmp_path: Path) -> None:
    music = tmp_path / "music"
    original = _tone_files(music, 2)[0]
    for name in ("copy_a.wav", "copy_b.wav"):
        shutil.copy(original, music / name)
    store = FeatureStore(tmp_path / "store")
    summary = extract(store, find_audio([music]), DspModel(), POLICY, batch_size=16)
    assert (summary.done, summary.copies, summary.skipped, summary.failed) == (2, 2, 0, [])
    run = store.run("dsp")
    tracks = store.tracks(run)
    assert len(tracks) == 4  # every path is catalogued ...
    ids, matrix = store.layer_matrix(run, 0)
    by_id = dict(zip(ids.tolist(), matrix, strict=False))
    original_hash = next(t.content_hash for t in tracks if Path(t.path) == original)
    copies = [t.id for t in tracks if t.content_hash == original_hash]
    assert len(copies) == 3 and all(
        np.array_equal(by_id[copies[0]], by_id[c]) for c in copies
    )  # ... and copies read one vector


def test_the_summary_tells_copies_embedded_now_from_unchanged_files(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mess.cli.main import app

    music, store = tmp_path / "music", tmp_path / "store"
    original = _tone_files(music, 2)[0]
    for name in ("copy_a.wav", "copy_b.wav", "copy_c.wav"):
        shutil.copy(original, music / name)
    args = ["extract", str(music), "--model", "dsp", "--window", "4", "--batch-size", "1", "--store", str(store)]
    first = CliRunner().invoke(app, args)  # one file per batch: copies found before and after the first is written
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())
    assert "2 embedded, 3 copies of files embedded in this run (skipped), 0 unchanged (skipped)" in said, said
    again = CliRunner().invoke(app, args)
    said = " ".join(again.output.split())
    assert "0 embedded, 5 unchanged (skipped)" in said and "copies of" not in said, said


def test_moved_file_keeps_its_vectors_by_content_hash(tmp_path: Path) -> None:
    music = tmp_path / "music"
    _tone_files(music, 2)
    store = FeatureStore(tmp_path / "store")
    extract(store, find_audio([music]), DspModel(), POLICY)
    moved = store.track("tone01.wav")
    shutil.move(music / "tone01.wav", music / "renamed.wav")
    summary = extract(store, find_audio([music]), DspModel(), POLICY, prune_under=[music])
    assert (summary.done, summary.skipped, summary.removed) == (0, 2, 0)  # moved, not removed (pruned after)
    assert store.track("renamed.wav") == replace(moved, path=str(music / "renamed.wav"))


def test_bad_files_are_reported_by_name_and_do_not_stop_the_run(tmp_path: Path) -> None:
    music = tmp_path / "music"
    good = _tone_files(music, 2)
    sf.write(music / "silence.flac", np.zeros(22050 * 2, np.float32), 22050)
    sf.write(music / "blip.wav", np.full(11025, 0.2, np.float32), 22050)  # 0.5 s
    (music / "corrupt.ogg").write_bytes(os.urandom(4096))
    (music / "empty.mp3").write_bytes(b"")
    store = FeatureStore(tmp_path / "store")
    summary = extract(store, find_audio([music]), DspModel(), POLICY)
    assert summary.done == len(good)
    reasons = dict(summary.failed)
    assert set(Path(p).name for p in reasons) == {"silence.flac", "blip.wav", "corrupt.ogg", "empty.mp3"}
    assert "silent" in reasons[str(music / "silence.flac")]
    assert "too short" in reasons[str(music / "blip.wav")]
    assert all(Path(p).name in why for p, why in reasons.items())


def test_a_clip_a_sample_short_of_the_minimum_is_not_said_to_be_as_long_as_it(tmp_path: Path) -> None:
    """A 1 s clip one sample short failed as 'too short (1.00 s; the minimum is 1.00 s)': its length was rounded up
    to the minimum it missed."""
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "almost.wav", np.full(22049, 0.2, np.float32), 22050)
    summary = extract(FeatureStore(tmp_path / "store"), find_audio([music]), DspModel(), POLICY)
    [(_, reason)] = summary.failed
    assert reason.endswith("almost.wav: too short (0.99 s; the minimum is 1.00 s)"), reason


def test_a_file_sampled_below_half_the_models_rate_is_embedded_with_a_warning(tmp_path: Path) -> None:
    """A 4 kHz or 1 kHz file was embedded without a word, though the model (dsp: 22050 Hz) hears almost nothing of
    its band; the run's summary now names it and its rate (read whole or by seeking), and the file is still used."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    music = tmp_path / "music"
    for name, sr, seconds in (("cd.wav", 22050, 3.0), ("half.wav", 11025, 3.0), ("phone.wav", 4000, 3.0),
                              ("long-1k.wav", 1000, 10.0)):
        _tone_files(music / name.removesuffix(".wav"), 1, seconds, sr)[0].rename(music / name)
    args = ["extract", str(music), "--model", "dsp", "--window", "4", "--store", str(tmp_path / "store")]
    done = CliRunner().invoke(app, args)
    said = " ".join(done.output.split())
    assert done.exit_code == 0 and "4 embedded" in said, said
    assert said.count("warning:") == 2, said
    for name, sr in (("phone.wav", 4000), ("long-1k.wav", 1000)):
        assert (f"warning: {music / name}: sampled at {sr} Hz, below half the model's 22050 Hz: it hears nothing above "
                f"{sr / 2:g} Hz, so its vectors say little") in said, said


def test_similar_warns_of_an_outside_file_sampled_below_half_the_models_rate_as_every_warning(tmp_path: Path) -> None:
    """`mess similar phone.wav` (4 kHz, dsp: 22050 Hz) printed 'WARNING mess.extract.embed: phone.wav: ...', a
    logging record, where every other warning of the CLI reads 'warning: ...'."""
    store = tmp_path / "store"
    extract(FeatureStore(store), _tone_files(tmp_path / "music", 3), DspModel(), WindowPolicy())
    phone = _tone_files(tmp_path / "outside", 1, 3.0, 4000)[0]
    done = mess_here("similar", str(phone), "-k", "2", "--store", str(store))
    said = " ".join(done.stderr.split())
    assert done.returncode == 0, done.stderr
    assert said.startswith(f"warning: {phone}: sampled at 4000 Hz, below half the model's 22050 Hz"), said
    assert "WARNING" not in said, said


def test_many_files_with_the_same_warning_get_one_line(tmp_path: Path) -> None:
    """A library of low-rate files printed one warning line per file; five with the same reason are one line that
    counts them and names three, and a file with another reason keeps its own line."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    music = tmp_path / "music"
    for i, path in enumerate(_tone_files(music / "p", 5, 3.0, 4000)):  # five different tones
        path.rename(music / f"phone{i}.wav")
    _tone_files(music / "k", 1, 3.0, 1000)[0].rename(music / "kilo.wav")
    args = ["extract", str(music), "--model", "dsp", "--window", "4", "--store", str(tmp_path / "store")]
    done = CliRunner().invoke(app, args)
    said = " ".join(done.output.split())
    assert done.exit_code == 0 and "6 embedded" in said, said
    assert said.count("warning:") == 2, said
    assert (f"warning: 5 files ({music / 'phone0.wav'}, {music / 'phone1.wav'}, {music / 'phone2.wav'} and 2 more): "
            "sampled at 4000 Hz, below half the model's 22050 Hz") in said, said
    assert f"warning: {music / 'kilo.wav'}: sampled at 1000 Hz" in said, said


def test_the_default_model_warns_of_files_without_its_16_khz_band(tmp_path: Path) -> None:
    """The default musicnn reads up to 16 kHz (its timbre layer; 8 kHz its networks): a 22.05 kHz file is embedded
    with a word on its timbre, an 11.025 kHz one with the warning that its vectors say little, a 44.1 kHz one
    with none."""
    pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")
    from typer.testing import CliRunner

    from mess.cli.main import app

    music = tmp_path / "music"
    for name, sr in (("full.wav", 44100), ("cd-half.wav", 22050), ("low.wav", 11025)):
        _tone_files(music / name.removesuffix(".wav"), 1, 3.0, sr)[0].rename(music / name)
    args = ["extract", str(music), "--model", "musicnn", "--window", "4", "--store", str(tmp_path / "store")]
    done = CliRunner().invoke(app, args)
    said = " ".join(done.output.split())
    assert done.exit_code == 0 and "3 embedded" in said, said
    assert said.count("warning:") == 2 and "warning: full.wav" not in said, said
    assert (f"warning: {music / 'cd-half.wav'}: sampled at 22050 Hz, it holds nothing above 11025 Hz of the 16000 Hz "
            "the model reads: its timbre compares poorly with full-band files") in said, said
    assert "files'" not in said, said  # a stray quote ended the sentence (also in an upload's warnings)
    assert (f"warning: {music / 'low.wav'}: sampled at 11025 Hz, it holds nothing above 5512.5 Hz of the 16000 Hz "
            "the model reads, so its vectors say little") in said, said


def test_long_track_gets_full_windows_and_segment_vectors(tmp_path: Path) -> None:
    music = tmp_path / "music"
    _tone_files(music, 1, seconds=10.0)
    store = FeatureStore(tmp_path / "store")
    extract(store, find_audio([music]), DspModel(), POLICY)
    run = store.run("dsp")
    ids, starts, segments = store.segment_matrix(run, "mfcc")
    assert len(ids) == 3 and starts[0] == 0 and abs(starts[-1] - 6.0) < 1e-3
    _, track = store.layer_matrix(run, "mfcc")
    np.testing.assert_allclose(track[0], segments.mean(axis=0), rtol=1e-2, atol=1e-2)
    assert run_policy(run) == POLICY and run.policy == POLICY.to_json()


def test_embed_file_matches_the_stored_vectors(tmp_path: Path) -> None:
    paths = _tone_files(tmp_path / "music", 1)
    store = FeatureStore(tmp_path / "store")
    extract(store, paths, DspModel(), POLICY)
    _, stored = store.layer_matrix(store.run("dsp"), "chroma")
    fresh = embed_file(paths[0], DspModel(), POLICY)
    np.testing.assert_allclose(stored[0], fresh.layers[1], rtol=1e-2, atol=1e-2)


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    music = tmp_path / "music"
    paths = _tone_files(music, 24, seconds=6.0)
    store_dir = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "mess.cli",
        "extract",
        str(music),
        "--model",
        "dsp",
        "--store",
        str(store_dir),
        "--window",
        "4",
        "--batch-size",
        "2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300  # a loaded machine compiling librosa's JIT cold needs minutes
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        committed = _committed(store_dir)
        if committed >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < _committed(store_dir) < len(paths), "the kill should land mid-run"
    resumed_run = mess_here(*cmd[3:])  # the resume needs no process of its own: the kill above was the point
    assert resumed_run.returncode == 0, resumed_run.stderr
    with sqlite3.connect(store_dir / "catalog.sqlite") as db:
        n_vectors, n_distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT content_hash) FROM vectors").fetchone()
    assert n_vectors == n_distinct == len(paths)
    store = FeatureStore(store_dir)
    run = store.run("dsp")
    assert store.row_file(run, "track", 0).rows == len(paths)
    clean = FeatureStore(tmp_path / "clean")
    extract(clean, find_audio([music]), DspModel(), WindowPolicy(window_seconds=4.0))
    resumed, reference = _by_path(store), _by_path(clean)
    assert resumed.keys() == reference.keys() == {str(p) for p in paths}
    for path, vector in reference.items():
        np.testing.assert_array_equal(resumed[path], vector)


def _by_path(store: FeatureStore) -> dict[str, np.ndarray]:
    run = store.run("dsp")
    ids, mat = store.layer_matrix(run, "mfcc")
    paths = {t.id: t.path for t in store.tracks(run)}
    return {paths[i]: row for i, row in zip(ids, mat, strict=False)}


def _committed(store_dir: Path) -> int:
    try:
        # read-write (never create): after a kill -9 mid-commit, WAL recovery needs write access, as the store has
        with sqlite3.connect(catalog.uri(store_dir / "catalog.sqlite", "rw"), uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_dsp_descriptors_ignore_playback_gain() -> None:
    """A quieter copy of a recording must describe the same music: no descriptor may follow the level."""
    from mess.models.dsp import describe

    sr = 22050
    t = np.arange(5 * sr) / sr
    notes = np.sin(2 * np.pi * 220 * 2 ** (np.floor(t * 4) % 5 / 12) * t) * np.exp(-3 * (t * 4 % 1))
    y = (0.5 * notes + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    loud, quiet = describe(y), describe(np.float32(0.3) * y)
    for group in loud:
        np.testing.assert_allclose(quiet[group], loud[group], rtol=1e-3, atol=1e-3, err_msg=group)


def test_dsp_embeds_float_audio_of_any_magnitude_and_batches_like_single_windows() -> None:
    """A float WAV can hold 3e19; the descriptors stay finite and equal those of the same audio at 0.5 peak."""
    sr = 22050
    t = np.arange(4 * sr) / sr
    y = np.sin(2 * np.pi * 330 * t) * np.exp(-2 * (t % 0.5)) + 0.01 * np.random.default_rng(1).standard_normal(t.size)
    model = DspModel()
    huge = model.embed(np.stack([3e19 * y / np.abs(y).max(), -3e19 * y / np.abs(y).max()]).astype(np.float32))
    normal = model.embed((0.5 * y / np.abs(y).max()).astype(np.float32)[None])
    for layer, big, ref in zip(model.info.layer_names, huge, normal, strict=False):
        assert np.isfinite(big).all(), layer
        np.testing.assert_allclose(big[0], ref[0], rtol=1e-3, atol=1e-3, err_msg=layer)


def _decoder_holding(path: Path, timeout: float = 60.0) -> int:
    """Pid of this process's decode worker that has ``path`` open."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for child in psutil.Process().children(recursive=True):
            try:
                if "mess.extract.decode_worker" in child.cmdline() and any(
                        os.readlink(fd) == str(path) for fd in Path(f"/proc/{child.pid}/fd").iterdir()):
                    return child.pid  # (psutil's open_files lists regular files only, not a FIFO)
            except (psutil.NoSuchProcess, FileNotFoundError):
                continue
        time.sleep(0.05)
    raise AssertionError(f"no decode worker opened {path}")


def test_a_decoder_that_crashes_costs_only_its_file(tmp_path: Path) -> None:
    """A decoder killed by a signal (as by a segfault) while it reads one file: that file is recorded as
    failed, naming the signal; a fresh decoder takes the next files (one worker, so it must restart)."""
    music = tmp_path / "music"
    paths = _tone_files(music, 3)
    stuck = music / "stuck.wav"  # a FIFO: its reader blocks until the test writes, like a stalled mount
    os.mkfifo(stuck)
    store = FeatureStore(tmp_path / "store")
    result: list = []
    runner = threading.Thread(target=lambda: result.append(extract(store, [stuck, *paths], DspModel(), POLICY,
                                                                   workers=1)))
    runner.start()
    with stuck.open("wb"):  # returns once the decoder has the FIFO open for reading
        os.kill(_decoder_holding(stuck), signal.SIGSEGV)
    runner.join(120)
    summary = result[0]
    assert summary.done == 3
    assert [(name, reason) for name, reason in summary.failed] == [
        (str(stuck), f"{stuck}: the decoder died (killed by SIGSEGV); file skipped")]


def test_a_decoder_that_hangs_is_stopped_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "DECODE_TIMEOUT", 3.0)
    music = tmp_path / "music"
    paths = _tone_files(music, 2)
    stuck = music / "stuck.wav"
    os.mkfifo(stuck)  # nobody writes: reading it never ends
    summary = extract(FeatureStore(tmp_path / "store"), [*paths, stuck], DspModel(), POLICY, workers=2)
    assert summary.done == 2
    assert summary.failed == [(str(stuck), f"{stuck}: the decoder took longer than 3 s and was stopped; file skipped")]


def test_a_decoder_slow_to_start_is_not_taken_for_a_hung_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decode time-out counted from the worker's spawn, its imports included: on a loaded machine a healthy
    file 'took longer than 3 s and was stopped'. It counts from when the worker is ready; a hang is still stopped.
    Here each worker sleeps longer than the time-out as it starts (a sitecustomize, in the real child process: the
    zygote that forks the decoders, started afresh for this test and stopped after it)."""
    from mess.extract.zygote import zygote

    timeout = 3.0
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(f"import time\ntime.sleep({timeout + 1})\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(pipeline, "DECODE_TIMEOUT", timeout)
    music = tmp_path / "music"
    paths = _tone_files(music, 1)
    stuck = music / "stuck.wav"
    os.mkfifo(stuck)  # nobody writes: reading it never ends
    decoders = zygote("mess.extract.decode_worker")
    decoders.close()  # the next decoder starts with the slow start-up
    began = time.monotonic()
    try:
        summary = extract(FeatureStore(tmp_path / "store"), [*paths, stuck], DspModel(), POLICY, workers=1)
    finally:
        decoders.close()  # later tests' decoders start without this test's sitecustomize
    assert summary.failed == [(str(stuck), f"{stuck}: the decoder took longer than 3 s and was stopped; file skipped")]
    assert summary.done == 1
    assert time.monotonic() - began > 2 * timeout + 1  # the worker's slow start-up, then the FIFO's time-out


@pytest.mark.parametrize("how", ["rewritten", "replaced", "removed"])
def test_a_file_changed_after_it_was_hashed_is_not_decoded_under_the_old_hash(tmp_path: Path, how: str) -> None:
    """The hash is taken when a file is inspected and its samples when it is decoded; a file replaced in between had
    the new audio's vectors stored under the old content's hash, for good (the next run skipped it as known)."""
    from mess.audio.decode import AudioError
    from mess.extract.prepare import decode_windows, inspect_file

    t = np.arange(22050 * 6) / 22050
    path, other = tmp_path / "x.wav", tmp_path / "other.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    sf.write(other, (0.3 * np.sign(np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 990 * t)).astype(np.float32), 22050)
    policy = WindowPolicy(window_seconds=2.0, max_windows=2)
    record = inspect_file(path)
    assert decode_windows(record, 16000, policy).audio.shape == (2, 32000)  # unchanged: decoded
    if how == "rewritten":
        path.write_bytes(other.read_bytes())
    elif how == "replaced":
        other.replace(path)
    else:
        path.unlink()
    with pytest.raises((AudioError, OSError), match="changed while it was being read|No such file"):
        decode_windows(record, 16000, policy)


def test_a_query_for_a_file_that_failed_to_extract_names_the_failure(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`similar` and `playlist` on a file recorded as failed said it had no vectors yet and to run `mess extract`
    (a corrupt file) or "unknown track" (a file never read); they name the failure and its recorded reason, and
    the server answers 422 with the reason, naming the file without its folder. The reason is given without the
    path it was recorded with, which named the file a second time ('... no vectors: /m/corrupt.wav: cannot
    decode (...: '/m/corrupt.wav')')."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from mess.cli.main import app
    from mess.serve.app import create_app

    monkeypatch.setattr(pipeline, "DECODE_TIMEOUT", 5.0)  # stops the FIFO; a loaded machine decodes the rest in time
    music = tmp_path / "music"
    paths = _tone_files(music, 3)
    corrupt, stuck = music / "corrupt.wav", music / "stuck.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    os.mkfifo(stuck)  # nobody writes: never read, so never catalogued
    store = FeatureStore(tmp_path / "store")
    summary = extract(store, [corrupt, stuck, *paths], DspModel(), POLICY, workers=2)
    failed_id = store.track(corrupt).id
    store.close()
    reasons = dict(summary.failed)
    assert set(reasons) == {str(corrupt), str(stuck)}
    root = str(tmp_path / "store")
    for args, path in ((["similar", str(corrupt)], corrupt), (["similar", "corrupt.wav"], corrupt),
                       (["playlist", "radio", str(corrupt)], corrupt), (["playlist", "path", "corrupt.wav",
                                                                         str(paths[0]), "-n", "3"], corrupt),
                       (["similar", str(stuck)], stuck), (["playlist", "radio", "stuck.wav"], stuck)):
        out = CliRunner().invoke(app, [*args, "--store", root])
        said = " ".join(out.output.split())
        assert out.exit_code == 1 and "Traceback" not in out.output, out.output
        reason = " ".join(reasons[str(path)].split()).removeprefix(f"{path}: ")
        assert "failed to extract" in said and reason in said and said.count(str(path)) <= 1, said
        assert "mess extract" not in said and "unknown track" not in said, said
    with TestClient(create_app(tmp_path / "store"), base_url="http://127.0.0.1") as client:
        answer = client.get(f"/api/tracks/{failed_id}/similar")
        radio = client.get("/api/playlists/radio", params={"seed": failed_id})
    assert answer.status_code == radio.status_code == 422, answer.text + radio.text
    detail = answer.json()["detail"]
    assert "failed to extract" in detail and "no vectors: cannot decode" in detail and str(music) not in detail
    assert detail.count("corrupt.wav") <= 1, detail


def test_a_window_longer_than_any_decoded_audio_is_refused_before_the_run(tmp_path: Path) -> None:
    """--window inf (or 1e308) passed the option check: every file then failed with 'OverflowError: cannot convert
    float infinity to integer' (exit 3) and the store kept a run of that policy with those failures."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    music, store = tmp_path / "music", tmp_path / "store"
    _tone_files(music, 1)
    for window in ("inf", "1e308", str(WindowPolicy.max_decode_seconds + 1)):
        out = CliRunner().invoke(app, ["extract", str(music), "--model", "dsp", "--window", window,
                                       "--store", str(store)])
        assert out.exit_code == 1 and "--window" in out.output and "Traceback" not in out.output, out.output
        assert not store.exists()
    with pytest.raises(ValueError, match="invalid window policy"):
        WindowPolicy(window_seconds=float("inf"))


def test_a_folder_that_cannot_be_read_and_a_dangling_link_are_named_not_passed_over(tmp_path: Path) -> None:
    """os.walk skipped an unreadable folder without a word (the run said '1 embedded ... 0 failed', exit 0, its
    files missing), a folder listable but not searchable stopped the whole run on its first file, and a link to
    nothing was dropped unnamed."""
    music = tmp_path / "music"
    _tone_files(music / "ok", 1)
    _tone_files(music / "locked", 1)
    _tone_files(music / "unsearchable", 1)
    (music / "ok" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    cmd = as_ordinary_user([sys.executable, "-m", "mess.cli", "extract", str(music), "--model", "dsp", "--store",
                             str(tmp_path / "s")])
    (music / "locked").chmod(0)
    (music / "unsearchable").chmod(0o600)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    finally:
        (music / "locked").chmod(0o755)
        (music / "unsearchable").chmod(0o755)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    said = " ".join((out.stdout + out.stderr).split())
    assert "1 embedded" in said, said
    assert f"warning: {music / 'locked'}: cannot read (Permission denied); skipped" in said
    assert f"warning: {music / 'unsearchable' / 'tone00.wav'}: cannot read (Permission denied); skipped" in said
    assert f"warning: {music / 'ok' / 'gone.wav'}: a link to a missing file; skipped" in said


def test_prune_keeps_the_files_of_a_folder_it_cannot_read(tmp_path: Path) -> None:
    """--prune stopped the whole run ('error: .../tone00.wav: Permission denied') when a catalogued file's folder
    could no longer be read; such files are now kept (they may well be there) and the run goes on."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    music, store = tmp_path / "music", tmp_path / "s"
    _tone_files(music / "ok", 2)
    _tone_files(music / "locked", 1)
    args = ["extract", str(music), "--model", "dsp", "--store", str(store)]
    assert CliRunner().invoke(app, args).exit_code == 0
    (music / "ok" / "tone00.wav").unlink()
    cmd = as_ordinary_user([sys.executable, "-m", "mess.cli", *args, "--prune"])
    (music / "locked").chmod(0)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    finally:
        (music / "locked").chmod(0o755)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    fs = FeatureStore(store, readonly=True)
    try:  # the removed file is forgotten, the unreadable one kept
        kept = [music.resolve() / "locked" / "tone00.wav", music.resolve() / "ok" / "tone01.wav"]
        assert sorted(t.path for t in fs.tracks()) == [str(p) for p in kept]
    finally:
        fs.close()


def test_extracting_into_a_run_no_answer_uses_says_so_and_how_to_add_to_the_one_used(tmp_path: Path) -> None:
    """New files extracted with the default windows into a store made with --max-windows 2 went into a second run
    that answers do not use: 'mess similar FILE' said to run `mess extract`, which then said '1 unchanged'."""
    from typer.testing import CliRunner

    from mess.cli.main import app

    music, new, store = tmp_path / "music", tmp_path / "new", tmp_path / "store"
    _tone_files(music, 2)
    _tone_files(new, 1, seconds=4.5)
    base = ["extract", "--model", "dsp", "--window", "2", "--store", str(store)]
    assert CliRunner().invoke(app, [*base, str(music), "--max-windows", "2"]).exit_code == 0
    out = CliRunner().invoke(app, [*base, str(new)])
    said = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert "warning: dsp answers from its run 1 (2 x 2 s windows, 2 tracks), not this one (4 x 2 s windows, 1 track)" \
        in said and "extract with --window 2 --max-windows 2 to add files to it" in said, said
    out = CliRunner().invoke(app, [*base, str(new), "--max-windows", "2"])
    assert out.exit_code == 0 and "1 embedded" in out.output and "warning" not in out.output, out.output
    found = CliRunner().invoke(app, ["similar", str(new / "tone00.wav"), "--store", str(store)])
    assert found.exit_code == 0, found.output


@pytest.mark.parametrize("args", [("extract", "MUSIC", "--model", "dsp"), ("extract", "MUSIC", "--model", "musicnn"),
                                  ("extract", "MUSIC", "--model", "dsp", "--engine", "ray"),
                                  ("probe", "--model", "dsp", "--control", "random-init")])
def test_an_unknown_device_is_refused_naming_the_devices(tmp_path: Path, args: tuple[str, ...]) -> None:
    """--device tpu with the dsp model (which runs on no device) embedded on the CPU without a word, exit 0."""
    music, store = tmp_path / "music", tmp_path / "store"
    _tone_files(music, 1)
    cmd = [*(str(music) if a == "MUSIC" else a for a in args), "--device", "tpu", "--store", str(store)]
    out = mess_here(*cmd, env={"COLUMNS": "300"})
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == "error: unknown device 'tpu'; use cpu, cuda, cuda:N or mps", out.stderr
    assert not store.exists()


def test_a_file_rewritten_in_place_is_hashed_again_and_embedded_again(tmp_path: Path) -> None:
    """The stored hash of a file is reused only while its stamp (size, mtime, inode, ctime) is unchanged: a file
    rewritten with other audio gets the hash of what it holds now and new vectors."""
    from mess.audio.discover import content_hash

    music = tmp_path / "music"
    paths = _tone_files(music, 3)
    store = FeatureStore(tmp_path / "store")
    model = DspModel()
    assert extract(store, find_audio([music]), model, POLICY).done == 3
    before = store.track(paths[1]).content_hash
    rate = 22050
    other = 0.3 * np.sin(2 * np.pi * 777 * np.arange(3 * rate) / rate)
    sf.write(paths[1], other.astype(np.float32), rate)  # same name, same size, other audio
    os.utime(paths[1], ns=(10**18, 10**18))  # a new mtime whatever the file system's resolution
    again = extract(store, find_audio([music]), model, POLICY)
    assert (again.done, again.skipped) == (1, 2)
    now = store.track(paths[1]).content_hash
    assert now == content_hash(paths[1]) != before
    store.close()
