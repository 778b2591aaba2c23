"""Edge input of the Python API and CLI left by session 31 (notes/fixes_session32.md): each test failed on the code
before its fix. Expected answers come from numpy on the definition, the geometry built here, or the files made here."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_soundtracks_mutation import apt, debs  # noqa: F401 -- their fixtures: tiny packages, a stand-in apt-get

from conftest import mess_here
from mess.artists.profiles import ArtistError, ArtistProfile, ArtistSet, Space
from mess.artists.similarity import artist_vectors, similarity_matrix, similarity_row


def _artists(n: int, per: int = 2, dim: int = 6, seed: int = 0) -> tuple[ArtistSet, Space]:
    """``n`` artists of ``per`` random tracks each (ids 1..n*per), in one space of ``dim`` dimensions."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n * per + 1)
    profiles = tuple(ArtistProfile(f"a{g}", tuple(int(i) for i in ids[g * per:(g + 1) * per]), per, 1.0, False, False)
                     for g in range(n))
    return ArtistSet(profiles, {}, 0, 0), Space("test", ids, rng.normal(size=(len(ids), dim)).astype(np.float32))


def _means(space: Space, n: int, per: int, center: bool) -> np.ndarray:
    """Unit mean of each artist's unit (centred) track vectors, from the definition."""
    x = space.matrix.astype(np.float64)
    if center:
        x = x - x.mean(axis=0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    m = x.reshape(n, per, -1).sum(axis=1)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# 1. two artists centred: -1 whatever the music, said by the API as the CLI says it


def test_two_centred_artists_score_minus_one_and_the_api_says_why() -> None:
    artists, space = _artists(2, per=1)  # centred, the two tracks are each other's negative: cosine -1
    vectors = artist_vectors(artists, space, center=True)
    with pytest.warns(UserWarning) as said:
        matrix = similarity_matrix(vectors)
    m = _means(space, 2, 1, center=True)
    assert matrix[0, 1] == pytest.approx(m[0] @ m[1], abs=1e-5) and matrix[0, 1] == pytest.approx(-1.0, abs=1e-5)
    text = str(said[0].message)
    assert text.startswith("only 2 artists: centring on the collection's mean makes so few look opposite")
    assert "center=False compares them as they are" in text
    assert said[0].filename == __file__  # pointed at the caller's line, not at mess
    with pytest.warns(UserWarning, match="only 2 artists"):
        similarity_row(vectors, 0, "chamfer")


def test_the_cli_s_note_and_the_api_s_warning_are_one_wording() -> None:
    from mess.artists.analysis import centring_note

    artists, space = _artists(3)
    with pytest.warns(UserWarning) as said:
        similarity_row(artist_vectors(artists, space), 1)
    assert str(said[0].message) == centring_note(3, "center=False")
    assert centring_note(3, "--no-center").replace("--no-center", "center=False") == str(said[0].message)


def test_enough_artists_or_no_centring_say_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        artists, space = _artists(5)
        centred = similarity_matrix(artist_vectors(artists, space), "chamfer")
        two, space2 = _artists(2)
        raw = similarity_matrix(artist_vectors(two, space2, center=False))
    assert centred.shape == (5, 5)
    m = _means(space2, 2, 2, center=False)
    assert raw[0, 1] == pytest.approx(m[0] @ m[1], abs=1e-5) and raw[0, 1] > -0.99


@pytest.mark.filterwarnings("error")  # pytest records warnings: as errors, one reaching the user fails the command
def test_the_cli_says_the_note_once_and_not_python_s_warning_beside_it(tmp_path: Path) -> None:
    from test_artists_library import TWO_ARTISTS, tagged_store

    from conftest import mess_here

    store = str(tagged_store(tmp_path, TWO_ARTISTS))
    got = mess_here("artists", "similar", "alpha", "-l", "mfcc", "--store", store)
    assert got.returncode == 0, got.stderr
    said = " ".join((got.stdout + got.stderr).split())
    assert said.count("only 2 artists: centring") == 1 and "--no-center compares them as they are" in said
    assert "Warning" not in said and "center=False" not in said


# 2. similarity_row's index: an artist's row, not numpy's negative or past-the-end index


@pytest.mark.parametrize("method", ["mean", "chamfer"])
def test_similarity_row_refuses_an_index_that_is_no_artist_s_row(method: str) -> None:
    artists, space = _artists(5)
    vectors = artist_vectors(artists, space, center=False)
    for index in (-1, -5, 5, 99, 1.0, True, "1"):
        with pytest.raises(ArtistError, match=r"^index must be an artist's row, 0 to 4; got "):
            similarity_row(vectors, index, method)  # type: ignore[arg-type]
    m = _means(space, 5, 2, center=False)
    assert similarity_row(vectors, np.int64(4), "mean") == pytest.approx(m @ m[4], abs=1e-5)
    assert similarity_row(vectors, 0, method)[0] == pytest.approx(1.0, abs=1e-5)


# 3. evaluate's seed


def test_evaluate_refuses_a_seed_numpy_would_refuse_in_one_line_naming_seed(msd) -> None:
    from mess.search.evaluate import evaluate

    store, run, _ = msd
    for seed in (-1, 2.5, "1", True):
        with pytest.raises(ValueError, match=r"^seed must be a whole number, 0 or more; got ") as refused:
            evaluate(store, run, "composer", seed=seed)  # type: ignore[arg-type]
        assert "\n" not in str(refused.value)
    assert evaluate(store, run, "composer", seed=np.int64(3)).n_queries > 0


# 4. labels none of whose ids is a track of the store


def test_labels_keyed_by_no_track_of_the_store_say_so_and_name_one(msd) -> None:
    from mess.search.evaluate import LabelError, evaluate

    store, run, _ = msd
    ids = [t.id for t in store.tracks(run)]
    beyond = max(ids) + 1
    as_text = {str(i): "ab"[n % 2] for n, i in enumerate(ids)}  # ids typed from a CSV read by hand
    with pytest.raises(LabelError, match=rf"^none of the {len(ids)} labelled ids is a track of this store with "
                                         rf"musicnn-msd vectors \(e\.g\. '{ids[0]}', a str: a track's id is an int\)"):
        evaluate(store, run, "composer", labels=as_text)
    with pytest.raises(LabelError, match=rf"^none of the 3 labelled ids .* \(e\.g\. {beyond}\); label tracks by"):
        evaluate(store, run, "composer", labels={beyond: "a", beyond + 1: "a", beyond + 2: "b"})
    with pytest.raises(LabelError, match=r"^only 0 labelled track\(s\)"):  # nothing labelled: nothing to name
        evaluate(store, run, "composer", labels={})
    some = evaluate(store, run, "composer", labels={**{i: "ab"[n % 2] for n, i in enumerate(ids)}, beyond: "a"})
    assert some.n_tracks == len(ids)  # one unknown id among known ones is left out, as before


def test_a_label_csv_naming_no_track_of_the_store_is_refused_naming_its_rows(msd, tmp_path: Path) -> None:
    from mess.search.evaluate import LabelError, read_label_csv

    store, run, _ = msd
    beyond = max(t.id for t in store.tracks(run)) + 1
    by_id = tmp_path / "ids.csv"
    by_id.write_text("id,label\n" + "".join(f"{beyond + n},{'ab'[n % 2]}\n" for n in range(5)), encoding="utf-8")
    with pytest.raises(LabelError) as refused:
        read_label_csv(store, by_id, "composer")
    assert str(refused.value) == (f"{by_id}: none of its 5 labelled rows names a track in this store (line 2 "
                                  f"'{beyond}', line 3 '{beyond + 1}', line 4 '{beyond + 2}', ...); an id matches the "
                                  "track of that id in the store (or a file name no other track has)")
    by_path = tmp_path / "paths.csv"
    by_path.write_text("path,label\n/elsewhere/a.flac,x\n", encoding="utf-8")
    with pytest.raises(LabelError, match=r"none of its 1 labelled row names a track in this store \(line 2 "
                                         r"'/elsewhere/a\.flac'\); a path matches only the file's path"):
        read_label_csv(store, by_path, "composer")
    got = mess_here("evaluate", "--labels", str(by_id), "--model", "musicnn-msd", "--store", str(store.root))
    assert got.returncode == 1 and "Traceback" not in got.stderr
    assert "none of its 5 labelled rows names a track in this store" in " ".join((got.stdout + got.stderr).split())


# 5. a link to nothing where a checkpoint's folder or a models folder goes


def test_a_checkpoint_folder_that_is_a_link_to_nothing_is_said_to_be_one(tmp_path: Path) -> None:
    from mess.fusion.train import checkpoint_problem

    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    said = (f"{tmp_path / 'gone'} is a link to {tmp_path / 'nowhere'}, which does not exist (or links back); create "
            "that folder or give the checkpoint another place")
    assert checkpoint_problem(tmp_path / "gone" / "net.pt") == said
    assert checkpoint_problem(tmp_path / "gone" / "deeper" / "net.pt") == said
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert checkpoint_problem(tmp_path / "loop" / "net.pt").startswith(f"{tmp_path / 'loop'} is a link to ")
    (tmp_path / "file").write_text("")  # a file is still a file
    assert checkpoint_problem(tmp_path / "file" / "net.pt") == "its parent is a file"
    from test_fusion_pipeline_mutation import _store

    _store(tmp_path / "store")[0].close()
    got = mess_here("fuse", "train", "--model", "synthetic", "--checkpoint", str(tmp_path / "gone" / "net.pt"),
                    "--store", str(tmp_path / "store"))
    assert got.returncode == 1 and "Traceback" not in got.stderr
    assert f"is a link to {tmp_path / 'nowhere'}, which does not exist" in " ".join(got.stderr.split())


def test_a_network_trained_for_a_folder_that_cannot_take_it_is_saved_in_the_store_not_retried_forever(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train_and_save (the library's; the CLI refuses such a path before training) retried the same free name in a
    folder that was a link to nothing, or below a file, forever once the network was trained."""
    import os
    import signal

    from test_fusion_pipeline_mutation import SMALL, _store

    from mess.fusion.pipeline import free_checkpoint, train_and_save

    store, run = _store(tmp_path / "store")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("")
    fusion = store.root / "fusion"
    assert free_checkpoint(tmp_path / "gone" / "a.pt", store) == fusion / "a-1.pt"
    assert free_checkpoint(tmp_path / "file" / "deeper" / "a.pt", store) == fusion / "a-1.pt"
    assert free_checkpoint(tmp_path / "gone" / "deeper" / "a.pt", store) == fusion / "a-1.pt"
    shut = tmp_path / "shut"
    shut.mkdir()
    real_access = os.access  # as root every folder can be written: this one is refused as to a user

    def access(path: object, mode: int, **kwargs: object) -> bool:
        return False if Path(str(path)) == shut and mode & os.W_OK else real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    assert free_checkpoint(shut / "a.pt", store) == fusion / "a-1.pt"

    def overran(signum: int, frame: object) -> None:
        raise TimeoutError("train_and_save still ran after 60 s")

    old = signal.signal(signal.SIGALRM, overran)
    signal.alarm(60)
    try:
        for n, wanted in enumerate((tmp_path / "gone" / "net.pt", tmp_path / "file" / "sub" / "net.pt",
                                    shut / "net.pt")):
            summary = train_and_save(store, run, SMALL, wanted).summary
            saved = fusion / ("net-1.pt" if n == 0 else f"net-{n + 1}.pt")
            assert summary["checkpoint"] == str(saved) and saved.is_file()
            assert summary["checkpoint_note"].startswith(f"not saved at {wanted}: ")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        store.close()


def test_a_network_whose_folder_and_the_store_s_fusion_folder_refuse_it_goes_to_the_temp_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where STORE/fusion itself was a link to nothing, train_and_save refused there, asked free_checkpoint for the
    next name, got STORE/fusion/NAME-1.pt again and retried it forever; the next place (the temp folder) takes it."""
    import signal
    import tempfile

    from test_fusion_pipeline_mutation import SMALL, _store

    from mess.fusion.pipeline import train_and_save

    store, run = _store(tmp_path / "store")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    (store.root / "fusion").symlink_to(tmp_path / "fusion-moved-away")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def overran(signum: int, frame: object) -> None:
        raise TimeoutError("train_and_save still ran after 60 s")

    old = signal.signal(signal.SIGALRM, overran)
    signal.alarm(60)
    try:
        summary = train_and_save(store, run, SMALL, tmp_path / "gone" / "net.pt").summary
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        store.close()
    saved = tmp_path / "tmp" / "mess-fusion" / "net-1.pt"
    assert summary["checkpoint"] == str(saved) and saved.is_file()
    assert summary["checkpoint_note"].startswith(f"not saved at {tmp_path / 'gone' / 'net.pt'}: ")


def test_a_models_folder_that_is_a_link_to_nothing_is_said_to_be_one(tmp_path: Path) -> None:
    from mess.models.essentia.fetch import FetchError, fetch

    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    for folder in (tmp_path / "gone", tmp_path / "gone" / "deeper"):
        with pytest.raises(FetchError) as refused:
            fetch("vggish", folder)  # refused before any download: nothing here reaches the network
        assert str(refused.value) == (f"cannot fetch into {folder}: {tmp_path / 'gone'} is a link to "
                                      f"{tmp_path / 'nowhere'}, which does not exist (or links back); create that "
                                      "folder or give `mess models fetch` another folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone"] and (tmp_path / "gone").is_symlink()
    got = mess_here("models", "fetch", "vggish", str(tmp_path / "gone"))
    assert got.returncode == 1 and "Traceback" not in got.stderr
    assert f"is a link to {tmp_path / 'nowhere'}, which does not exist" in " ".join(got.stderr.split())


# 7. docstring cross-references name what exists


def _member(obj: object, parts: list[str]) -> bool:
    """Whether ``obj`` has the attribute path ``parts`` (a dataclass field without a default counts)."""
    for part in parts:
        if not hasattr(obj, part):
            return part == parts[-1] and part in getattr(obj, "__dataclass_fields__", {})
        obj = getattr(obj, part)
    return True


def _resolves(target: str, module: object, kind: str) -> bool:
    """Whether a Sphinx target imports: absolute (mess.x.y.Name), or relative to the module it is written in, or
    (``:meth:``, ``:attr:``) a member of one of that module's classes (written inside the class)."""
    import importlib

    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        if _member(found, parts[cut:]):
            return True
        break
    if _member(module, parts):
        return True
    classes = [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__]
    return kind in ("meth", "attr") and len(parts) == 1 and any(_member(c, parts) for c in classes)


def test_every_docstring_cross_reference_in_the_package_names_something_that_exists() -> None:
    import importlib
    import re

    import mess

    root = Path(mess.__file__).parent
    role = re.compile(r":(func|class|meth|mod|data|exc|attr|obj):`~?\.?([\w.]+)(?:\(\))?`")
    missing = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "__main__.py":  # importing it runs the command line
            continue
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        module = importlib.import_module(name)
        missing += [f"{name}: :{kind}:`{target}`" for kind, target in role.findall(path.read_text(encoding="utf-8"))
                    if not _resolves(target, module, kind)]
    assert not missing, missing


# 6. `mess demo soundtracks`: what an earlier set left in the folder


_needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None,
                                 reason="dpkg-deb builds the packages and dpkg unpacks them: Debian or Ubuntu only")


@_needs_dpkg
def test_a_new_set_removes_the_copies_of_the_set_before_it_and_nothing_else(apt: Path, tmp_path: Path) -> None:  # noqa: F811
    """A set fetched over an earlier one left the earlier games' copies in their folders, not in the manifest but
    read by `mess extract DIR` (album tag = their game): an evaluation by album scored games the set does not have."""
    import mutagen

    from mess.audio.discover import find_audio
    from mess.datasets.soundtracks import fetch_soundtracks

    out = tmp_path / "set"
    both = fetch_soundtracks(out, {"alpha-data": "alpha", "beta-data": "beta"})
    alpha = [t.path for t in both if t.game == "alpha"]
    assert len(alpha) == 3 and all(p.is_file() for p in alpha)
    mine = out / "alpha" / "my-own.flac"  # a file of the user's in a game folder: not the command's to remove
    shutil.copyfile(alpha[1], mine)
    retagged = out / "beta" / "kept.ogg"  # one whose album tag is not the game: not a copy the command made
    shutil.copyfile(alpha[0], retagged)
    beta = fetch_soundtracks(out, {"beta-data": "beta"})
    assert [t.path for t in beta] == [out / "beta" / "intro.flac", out / "beta" / "theme.ogg"]
    assert not any(p.exists() for p in alpha) and mine.is_file() and retagged.is_file()
    assert sorted(p.name for p in out.iterdir()) == [".packages.json", "alpha", "beta", "manifest.csv"]
    assert sorted(p.name for p in (out / "alpha").iterdir()) == ["my-own.flac"]
    os.remove(mine)
    fetch_soundtracks(out, {"alpha-data": "alpha"})
    fetch_soundtracks(out, {"beta-data": "beta"})
    assert sorted(p.name for p in out.iterdir()) == [".packages.json", "beta", "manifest.csv"]  # alpha/ emptied: gone
    albums = {str(mutagen.File(p, easy=True).tags["album"][0]) for p in find_audio([out]) if p != retagged}
    assert albums == {"beta"}


@_needs_dpkg
def test_a_set_is_reused_for_the_packages_it_was_fetched_from_and_only_for_them(
        debs: Path, apt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """With packages given, a package without music made the set never match (fetched anew at every call), and two
    packages of one game were taken for one (the set of alpha-data alone answered for alpha-data + beta-data)."""
    from test_soundtracks_mutation import MIN_SECONDS, _deb

    from mess.datasets.debian import FetchError
    from mess.datasets.soundtracks import fetch_soundtracks

    _deb(debs, "hush-data", {"usr/share/doc/hush-data/README": "no music\n",
                             "usr/share/games/hush/sfx/boom.ogg": (MIN_SECONDS + 1, 220.0, None)})
    with_silent = {"alpha-data": "alpha", "hush-data": "hush"}
    out, only_silent = tmp_path / "set", tmp_path / "silent"
    first = fetch_soundtracks(out, with_silent)
    assert fetch_soundtracks(only_silent, {"hush-data": "hush"}) == []
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", "")  # no apt-get: only a set reused answers
    assert fetch_soundtracks(out, with_silent) == first
    assert fetch_soundtracks(only_silent, {"hush-data": "hush"}) == []
    moved = tmp_path / "moved"
    out.rename(moved)  # a set moved with its manifest is still the set of its packages
    assert [(t.path, t.game) for t in fetch_soundtracks(moved, with_silent)] == [
        (moved / t.path.relative_to(out), t.game) for t in first]
    with pytest.raises(FetchError, match="apt-get is not available"):  # another package: fetched, not reused
        fetch_soundtracks(moved, {"alpha-data": "alpha", "beta-data": "alpha"})
    monkeypatch.setenv("PATH", path)
    one_game = fetch_soundtracks(moved, {"alpha-data": "alpha", "beta-data": "alpha"})
    assert {t.path.name for t in one_game} == {t.path.name for t in first} | {"intro.flac"}  # beta's, as alpha's
    assert {t.game for t in one_game} == {"alpha"}
    record = (moved / ".packages.json").read_text(encoding="utf-8")
    fetch_soundtracks(moved, {"beta-data": "beta"})
    (moved / ".packages.json").write_text(record, encoding="utf-8")  # as if killed between manifest and record
    monkeypatch.setenv("PATH", "")
    with pytest.raises(FetchError, match="apt-get is not available"):  # the record is of other files: not trusted
        fetch_soundtracks(moved, {"alpha-data": "alpha", "beta-data": "alpha"})


def test_a_model_folder_that_is_a_link_to_nothing_is_named_as_such(tmp_path: Path) -> None:
    """`mess extract --model LINK` where LINK's folder is gone said 'unknown model ...; choose one of dsp, ...', as
    if a registry name were mistyped."""
    from mess.models.registry import UnknownModel, load_model

    link = tmp_path / "mert-local"
    link.symlink_to(tmp_path / "moved-away")
    with pytest.raises(UnknownModel) as err:
        load_model(str(link))
    assert str(err.value) == f"model {str(link)!r} is a link to {tmp_path / 'moved-away'}, which does not exist"
    with pytest.raises(UnknownModel, match="unknown model 'no-such-model'; choose one of dsp"):
        load_model("no-such-model")  # a name that is no path keeps the list of choices


_QUICK_STOP = """
import sys, threading
from fastapi.testclient import TestClient
from mess.serve.app import create_app
with TestClient(base_url="http://127.0.0.1", app=create_app(sys.argv[1], "synthetic")):  # a str, as a notebook gives it
    pass  # the server stopped as soon as it started
alive = [t.name for t in threading.enumerate() if t.name == "mess-preload"]
print("alive:", alive)
"""


def test_a_server_stopped_as_it_starts_has_finished_its_background_import(tmp_path: Path) -> None:
    """`mess serve` imports scikit-learn in a background thread at start-up; stopped at once (a busy machine, a
    Ctrl-C), the process went down with the import still running, which printed 'RuntimeError: can't register
    atexit after shutdown' tracebacks. The server's shutdown now waits for that import. (create_app given the store
    as a str, as a notebook gives it, ended in AttributeError: 'str' object has no attribute 'resolve'.)"""
    import subprocess
    import sys

    from test_session32_mutation import _synthetic

    root, _ = _synthetic(tmp_path)
    out = subprocess.run([sys.executable, "-c", _QUICK_STOP, str(root)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "alive: []" in out.stdout and "Traceback" not in out.stderr, out.stdout + out.stderr


def test_a_file_named_twice_to_extract_is_embedded_once_and_counted_once(tmp_path: Path) -> None:
    """extract() given one path twice (two overlapping globs of a library caller) counted the second as a copy of
    the first, a byte-identical file: '1 embedded, 1 copy' of one file."""
    import soundfile as sf

    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model
    from mess.store import FeatureStore

    tone = tmp_path / "tone.wav"
    sf.write(tone, 0.3 * np.sin(2 * np.pi * 330 * np.arange(22050 * 4) / 22050), 22050)
    store = FeatureStore(tmp_path / "store")
    try:
        got = extract(store, [tone, tone], load_model("dsp"), WindowPolicy(window_seconds=2.0), workers=1)
        assert (got.done, got.copies, got.skipped, got.failed) == (1, 0, 0, [])
        assert len(store.tracks(store.run("dsp"))) == 1
    finally:
        store.close()


def test_evaluate_counts_a_file_and_its_byte_copies_once(extracted_store: Path, rendered_collection: list[Path],
                                                          tmp_path: Path) -> None:
    """A copy of a labelled file (another folder, a hard link: one content hash, the same tags) ranked first at
    cosine 1 for its twin's query and scored as a correct hit, raising P@k and mAP by the copies a collection holds."""
    from mess.audio.windows import WindowPolicy
    from mess.extract.pipeline import extract
    from mess.models.registry import load_model
    from mess.search.evaluate import evaluate
    from mess.store import FeatureStore

    root = tmp_path / "store"
    shutil.copytree(extracted_store, root)
    copies = []
    for n, src in enumerate(rendered_collection[:3]):
        copies.append(tmp_path / "copies" / f"copy{n}" / src.name)
        copies[-1].parent.mkdir(parents=True)
        shutil.copy2(src, copies[-1])
    # raw cosines ranked plainly: a normalisation's statistics and the augmented ranking's neighbours are the
    # collection's, which holds the copies (as `mess similar` ranks with them)
    plain: dict = {"norm": "none", "ranking": "plain", "expand": 0}
    alone = FeatureStore(extracted_store, readonly=True)
    try:
        want = evaluate(alone, alone.run("dsp"), "composer", k=5, **plain)
    finally:
        alone.close()
    store = FeatureStore(root)
    try:
        got_extract = extract(store, copies, load_model("dsp"), WindowPolicy(), workers=1)
        assert got_extract.skipped == 3 and got_extract.done == 0  # catalogued, sharing the vectors already embedded
        got = evaluate(store, store.run("dsp"), "composer", k=5, **plain)
    finally:
        store.close()
    assert (got.n_tracks, got.n_queries) == (want.n_tracks, want.n_queries)
    for g, w in zip(got.sets, want.sets, strict=True):
        assert g.name == w.name and g.scores == w.scores
    assert "3 byte-identical copies of labelled tracks left out" in " ".join(got.notes)
