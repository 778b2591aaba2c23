"""Defects an MIR researcher met using mess as a Python library in a notebook (notes/api_session31.md): the docs'
examples as written, edge input to the public functions, and the probing flow."""

from __future__ import annotations

import doctest
import hashlib
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mess.artists.discrimination import most_discriminative
from mess.artists.hybrid import blend, load_weights
from mess.artists.profiles import ArtistError, load_artists, load_space
from mess.artists.similarity import artist_vectors, similarity_row, top_k
from mess.artists.validate import evaluate as validate_artists
from mess.audio.decode import load_audio, load_segments, probe
from mess.audio.discover import content_hash
from mess.audio.windows import WindowPolicy
from mess.extract.runs import run_key
from mess.fusion.report import FusionReport
from mess.fusion.report import write_report as write_fusion_report
from mess.models.base import ModelInfo
from mess.probing.probes import ProbeError, ProbeScores
from mess.probing.report import ProbeReport
from mess.probing.report import write_report as write_probe_report
from mess.probing.study import ProbeOptions, probe_run
from mess.probing.target_cache import _write, cache_dir
from mess.probing.targets import TARGET_NAMES
from mess.query import embed_query, external_query, resolve_query
from mess.search.evaluate import evaluate, plot_evaluation, read_label_csv
from mess.search.query import collection_query, similar_tracks
from mess.search.vectors import VectorSet, VectorSpec, load_vectors
from mess.store import FeatureStore, Run, StoreError, TrackVectors
from mess.store.export import export_vectors

SRC = Path(__file__).resolve().parents[1] / "src"
DOCS = Path(__file__).resolve().parents[1] / "docs"


# ---------------------------------------------------------------- the docs' examples


def _doctest_modules() -> list[str]:
    """Every module of the package whose docstrings hold a ``>>>`` example."""
    return sorted(
        ".".join(p.relative_to(SRC).with_suffix("").parts)
        for p in SRC.joinpath("mess").rglob("*.py")
        if ">>>" in p.read_text(encoding="utf-8")
    )


@pytest.mark.parametrize("module", _doctest_modules())
def test_the_docstring_examples_run_as_written(module: str) -> None:
    """Docstring ``Examples:`` (those not marked ``doctest: +SKIP``) print what they claim."""
    found = doctest.DocTestFinder().find(importlib.import_module(module))
    assert any(t.examples for t in found), module
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in found:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0, module


def _python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)


def test_the_docs_python_imports_name_what_the_package_has() -> None:
    """docs/search.md imported ``resolve_query`` from ``mess.search.query``, which has not held it since queries
    moved to ``mess.query``: the first line of the search API example failed with ImportError."""
    imports = [
        line
        for doc in sorted(DOCS.glob("*.md"))
        for block in _python_blocks(doc)
        for line in block.splitlines()
        if line.startswith(("from mess", "import mess"))
    ]
    assert len(imports) >= 15, imports
    for line in imports:
        exec(line.split("#")[0], {})  # noqa: S102 -- the docs' own import lines


def test_the_search_api_example_runs_as_written(msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    """docs/search.md's example used a ``store`` it never opened; it now opens one, and runs on a real store."""
    fs, _, _ = msd
    (block,) = _python_blocks(DOCS / "search.md")
    code = block.replace('FeatureStore(".mess")', f"FeatureStore({str(fs.root)!r}, readonly=True)")
    code = code.replace('"song.flac"', "1")
    printed: list[tuple] = []
    exec(code, {"print": lambda *a: printed.append(a)})  # noqa: S102 -- the doc's example
    assert len(printed) == 10
    assert all(isinstance(p[0], str) and -1.0 <= p[1] <= 1.0 for p in printed)


# ---------------------------------------------------------------- similar_tracks on a notebook's input


@pytest.mark.parametrize("ranking", ["plain", "auto"])
def test_similar_tracks_refuses_a_negative_or_fractional_k(msd: tuple[FeatureStore, Run, VectorSet],
                                                          ranking: str) -> None:
    """k=-1 gave one track with the plain ranking and all but the last with the augmented one (a slice [:-1]);
    k=2.5 a TypeError from inside faiss or a slice, and a numpy integer (np.int64(3)) a TypeError from faiss. A bad k
    is now a ValueError naming it; a numpy integer is a count like any other."""
    fs, run, _ = msd
    query = collection_query(fs, 1)
    for k in (-1, 2.5, True):
        with pytest.raises(ValueError, match=r"^k must be a whole number of tracks, 0 or more; got "):
            similar_tracks(fs, run, query, k, ranking=ranking)
    assert similar_tracks(fs, run, query, 0, ranking=ranking) == []
    assert len(similar_tracks(fs, run, query, np.int64(3), ranking=ranking)) == 3
    assert len(similar_tracks(fs, run, query, 1000, ranking=ranking)) == len(fs.tracks(run)) - 1


@pytest.mark.parametrize("ranking", ["plain", "auto", "reranked"])
def test_a_raw_query_vector_is_checked_before_it_is_searched(msd: tuple[FeatureStore, Run, VectorSet],
                                                            ranking: str) -> None:
    """A NaN or inf in a raw query vector gave no answer (plain) or one track scored nan (augmented); a scalar
    was broadcast to a vector of ones, two rows searched the first alone, and a vector of the wrong size failed in
    numpy's broadcasting. Each is now a ValueError saying what the vector should be."""
    fs, run, vs = msd
    dim = vs.raw.shape[1]
    good = vs.raw[vs.rows(np.array([3]))[0]].astype(np.float64)
    nan, inf = good.copy(), good.copy()
    nan[5], inf[7] = np.nan, -np.inf
    bad = {
        "NaN": nan, "inf": inf, "scalar": np.float32(1.0), "short": good[:10], "long": np.r_[good, good],
        "two rows": np.stack([good, good]), "3-d": good[None, None], "empty": np.zeros(0), "text": ["a"] * dim,
    }
    for what, vector in bad.items():
        with pytest.raises(ValueError, match=rf"^the query vector .*({dim} numbers|NaN or infinite)"):
            similar_tracks(fs, run, vector, 3, ranking=ranking)
        assert what
    for vector in (good, good[None], good.astype(np.float16), good.tolist()):  # the track's own raw vector
        first = similar_tracks(fs, run, vector, 3, ranking=ranking)[0]
        assert first.track.id == 3
        assert first.score == pytest.approx(1.0, abs=1e-3)


def test_evaluate_refuses_a_k_below_one(msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    """evaluate(k=-1) reported P@-1 = -1.8 (a sum over all but the last result divided by -1) and k=0 a NaN P@0
    with numpy's division warning; each is now a ValueError naming k. k above the collection is P@k by its
    definition: the relevant results among k, over k."""
    fs, run, _ = msd
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match=r"^k must be a whole number of results, 1 or more; got "):
            evaluate(fs, run, "artist", k)
    ev = evaluate(fs, run, "artist", 100)
    n = len(fs.tracks(run))
    same = sum(len([u for u in fs.tracks(run) if u.artist == t.artist]) - 1 for t in fs.tracks(run))
    assert ev.best().scores.precision == pytest.approx(same / n / 100)  # every relevant track is within 100


# ---------------------------------------------------------------- a path as str


PNG = b"\x89PNG\r\n\x1a\n"


def test_public_functions_take_a_path_given_as_str(msd: tuple[FeatureStore, Run, VectorSet],
                                                   rendered_collection: list[Path], tmp_path: Path) -> None:
    """A notebook passes paths as str: plot_evaluation, probing's and fusion's write_report, read_label_csv,
    load_weights, load_audio, load_segments, probe and content_hash failed with AttributeError ('str' object has
    no attribute 'suffix', 'mkdir', 'open', 'name'...), and embed_query with a StoreError 'cannot embed ...:
    'str' object has no attribute 'stat''; each now takes a str as the path it names."""
    fs, run, _ = msd
    rate = 16000
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(1.5 * rate)) / rate)).astype(np.float32)
    wav = tmp_path / "tone.wav"
    sf.write(wav, samples, rate, subtype="FLOAT")
    read, _ = sf.read(wav, dtype="float32")  # libsndfile, not mess's decoder
    np.testing.assert_allclose(load_audio(str(wav), rate), read, atol=1e-6)
    np.testing.assert_allclose(load_segments(str(wav), rate, [0.5], 0.5)[0], read[8000:16000], atol=1e-3)
    assert probe(str(wav)).duration == pytest.approx(1.5)
    assert content_hash(str(wav)) == content_hash(wav)

    song = rendered_collection[0]  # its samples as a float WAV: other content to the store, the same audio
    audio, song_rate = sf.read(song, dtype="float32")
    sf.write(tmp_path / "copy.wav", audio, song_rate, subtype="FLOAT")
    query = embed_query(fs, str(tmp_path / "copy.wav"), run)
    assert query.track is None
    ids, matrix = fs.layer_matrix(run, 0)
    stored = matrix[list(ids).index(fs.track(song).id)]
    got = query.layers[0]
    assert got @ stored / np.linalg.norm(got) / np.linalg.norm(stored) > 0.999

    plotted = plot_evaluation(evaluate(fs, run, "artist"), str(tmp_path / "ev.png"))
    assert plotted.read_bytes().startswith(PNG)
    r2 = np.full((2, len(TARGET_NAMES)), 0.5)
    scores = ProbeScores(("a", "b"), TARGET_NAMES, r2, np.zeros_like(r2))
    probe_report = ProbeReport("synthetic", "r1", 1, {}, 12, "folds", "ridge", 1.0, {"trained": scores},
                               tracks_digest="d")
    written = write_probe_report(probe_report, str(tmp_path / "probe"))
    assert written["png"].read_bytes().startswith(PNG)
    assert json.loads(written["json"].read_text())["model"] == "synthetic"
    fusion = FusionReport(model="m", label="album", k=3, n_test_tracks=4, n_test_labels=2, methods=[],
                          per_layer={"a": 0.5}, layer_weights={"a": 1.0}, verdict="v", caveat="", wilcoxon_p=None,
                          data_hash_matches=True)
    assert Path(write_fusion_report(fusion, str(tmp_path / "fusion"), "x")["png"]).read_bytes().startswith(PNG)
    (tmp_path / "labels.csv").write_text(f"id,label\n{ids[0]},x\n{ids[1]},x\n")
    labels = read_label_csv(fs, str(tmp_path / "labels.csv"), "label")
    assert sorted(labels.labels) == sorted(int(i) for i in ids[:2])
    (tmp_path / "weights.json").write_text(json.dumps({"weights": {"audio": 0.75, "genre": 0.25}}))
    assert load_weights(str(tmp_path / "weights.json")) == {"audio": 0.75, "genre": 0.25}


# ---------------------------------------------------------------- the probing flow


def _planted_run(root: Path, n_tracks: int) -> tuple[FeatureStore, Run]:
    """A store whose run has layers 'low' and 'high' (4 dims each) over ``n_tracks`` tracks with cached targets: the
    'low' layer holds every target's value (plus a little noise), 'high' is noise. The files are not on disk."""
    store = FeatureStore(root / "store")
    run = store.ensure_run(run_key(ModelInfo("planted", "r1", 16000, ("low", "high"), (4, 4)), WindowPolicy()))
    rng = np.random.default_rng(0)
    folder = cache_dir(store.root, WindowPolicy())
    for i in range(n_tracks):
        digest = hashlib.sha1(f"planted-{i}".encode()).hexdigest()[:32]
        store.upsert_track(root / f"t{i}.wav", digest, 1, 0.0, {"duration": 30.0},
                           {"artist": f"A{i}", "album": f"B{i % 6}"})
        source = rng.normal(size=4)
        targets = np.resize(source, len(TARGET_NAMES))  # target j reads dimension j % 4 of the 'low' layer
        low = (source + rng.normal(scale=0.01, size=4)).astype(np.float32)
        high = rng.normal(size=4).astype(np.float32)
        store.write_vectors(run, [TrackVectors(digest, [low, high], [low[None], high[None]], [0.0])])
        _write(folder / f"{digest}.npz", np.zeros(1), targets[None])
    return store, run


def test_probe_options_take_one_layer_or_control_given_as_str(tmp_path: Path) -> None:
    """ProbeOptions(layers="low") was read letter by letter: 'unknown layer 'l''; controls="shuffled" said
    'unknown control 'd''. A str is now one name, as the CLI's single --layers / --control value."""
    store, run = _planted_run(tmp_path, 12)
    report = probe_run(store, run, ProbeOptions(layers="low", controls="shuffled", workers=1))
    trained = report.conditions["trained"]
    assert trained.layers == ("low",)
    assert set(report.conditions) == {"trained", "shuffled"}
    assert np.nanmin(trained.r2) > 0.9  # the planted layer predicts every target
    assert np.nanmax(report.conditions["shuffled"].r2) < 0.5
    store.close()


def test_a_probe_refuses_fewer_than_two_folds(tmp_path: Path) -> None:
    """ProbeOptions(folds=1), 0 or -3 probed with 2 folds, unsaid but in the report's fold scheme; each is now a
    ProbeError naming the option. More folds than tracks are as many folds as tracks, said in the scheme."""
    store, run = _planted_run(tmp_path, 6)
    for folds in (1, 0, -3):
        with pytest.raises(ProbeError, match=rf"^folds must be 2 or more; got {folds}$"):
            probe_run(store, run, ProbeOptions(folds=folds, controls=(), workers=1))
    report = probe_run(store, run, ProbeOptions(folds=20, controls=(), workers=1))
    assert "KFold(6)" in report.folds  # 20 asked, one track a fold
    assert report.n_tracks == 6
    store.close()


# ---------------------------------------------------------------- artists


def test_artist_top_k_refuses_a_negative_k_and_most_discriminative_no_spaces(
        msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    """top_k(row, i, -1) gave every other artist (its loop stops at len == k, never reached); most_discriminative
    of no spaces said 'max() arg is an empty sequence'. Both are now ArtistErrors (ValueErrors) naming the cause."""
    fs, run, _ = msd
    artists = load_artists(fs, run)
    space = load_space(fs, run, layer="penultimate")
    with pytest.warns(UserWarning, match=rf"^only {len(artists.profiles)} artists: centring"):  # few, centred
        row = similarity_row(artist_vectors(artists, space), 0)
    with pytest.raises(ArtistError, match=r"^k must be 0 or more; got -1$"):
        top_k(row, 0, -1)
    others = [j for j in np.argsort(-row) if j != 0]
    assert top_k(row, 0, 2) == others[:2]
    assert top_k(row, 0, 0) == []
    with pytest.raises(ArtistError, match=r"^no spaces to compare"):
        most_discriminative(artists, [])
    best, effect = most_discriminative(artists, [space])
    assert best is space
    assert np.isfinite(effect)


def test_a_track_reference_of_another_type_is_named_as_such(msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    """store.track(None) and resolve_query(store, None or 3.0, run) (a pandas id column with a gap holds floats)
    failed in posixpath with 'expected str, bytes or os.PathLike object, not NoneType'; each is now a TypeError
    saying what names a track. A numpy integer names a track as an int does."""
    fs, run, _ = msd
    for ref in (None, 3.0, True, [1]):
        with pytest.raises(TypeError, match=r"^a track is named by its id, path or file name; got "):
            fs.track(ref)
        with pytest.raises(TypeError, match=r"^a track is named by its id, path or file name; got "):
            resolve_query(fs, ref, run)
    first = fs.tracks(run)[0]
    assert fs.track(np.int64(first.id)) == first
    assert resolve_query(fs, np.int64(first.id), run).track == first
    assert fs.track(Path(first.path)) == first


# ---------------------------------------------------------------- opening a store


def test_a_store_path_with_a_tilde_is_in_the_home_folder_and_an_empty_one_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FeatureStore("~/music-store") made a folder literally named '~' in the working folder (and an empty store
    in it, where a notebook meant the one in its home); FeatureStore("") (an unset variable) made a catalog in the
    working folder itself. '~' is now the home folder, as for a query's path, and an empty path a StoreError."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    made = FeatureStore(home / "music-store")
    made.close()
    store = FeatureStore("~/music-store", readonly=True)
    assert store.root == home / "music-store"
    store.close()
    with pytest.raises(StoreError, match=r"^the store path is empty"):
        FeatureStore("")
    assert list(cwd.iterdir()) == []


def test_an_outside_query_of_a_researchers_own_vectors_is_checked(msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    """external_query takes per-layer vectors computed elsewhere: one layer short gave an IndexError from deep in
    the search, a layer of the wrong size a numpy broadcasting error, and NaN vectors no answer (plain) or one
    track scored nan (augmented). Each is now a StoreError naming the layer and what it should be."""
    fs, run, _ = msd
    track = fs.tracks(run)[2]
    own = []  # the track's own vectors, layer by layer
    for layer in run.layer_names:
        ids, matrix = fs.layer_matrix(run, layer)
        own.append(matrix[list(ids).index(track.id)])
    nan = [v.copy() for v in own]
    nan[1][0] = np.nan
    wrong = [own[0][:-1], *own[1:]]
    cases = {
        "short": (own[:-1], rf"^{len(run.layer_names) - 1} layer vectors for {run.model}'s {len(run.layer_names)}"),
        "size": (wrong, rf"^layer {run.layer_names[0]} of {run.model} has {run.layer_dims[0]} values; got an "
                        rf"array of shape \({run.layer_dims[0] - 1},\)"),
        "nan": (nan, rf"^layer {run.layer_names[1]}'s vector holds NaN or infinite values"),
    }
    for what, (layers, message) in cases.items():
        with pytest.raises(StoreError, match=message):
            external_query(fs, run, what, "0" * 32, layers)
    query = external_query(fs, run, "mine", "0" * 32, [v[None] for v in own])  # [1, dim] rows are vectors too
    first = similar_tracks(fs, run, query, 3, ranking="plain")[0]
    assert first.track.id == track.id
    assert first.score == pytest.approx(1.0, abs=1e-3)


def test_a_vector_spec_of_an_unknown_kind_or_normalisation_is_refused(
        msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    """VectorSpec("layers", "cnn1") (one letter too many) was read as an aspect: 'unknown aspect 'cnn1'', naming
    aspects when the kind was wrong; VectorSpec("all", norm="zcore") was built and failed later. Both are now a
    ValueError on construction naming the choices. The kinds load as before."""
    fs, run, _ = msd
    with pytest.raises(ValueError, match=r"^unknown vector kind 'layers'; choose one of layer, group, aspect, fused, "
                                         r"learned, all$"):
        VectorSpec("layers", "cnn1")
    with pytest.raises(ValueError, match=r"^unknown normalisation 'zcore'; choose one of "):
        VectorSpec("all", norm="zcore")
    ids, cnn1 = fs.layer_matrix(run, "cnn1")
    vs = load_vectors(fs, run, VectorSpec("layer", "cnn1", "none"))
    np.testing.assert_allclose(vs.raw[vs.rows(ids)], cnn1, rtol=1e-6)


def test_export_takes_one_layer_given_as_str(msd: tuple[FeatureStore, Run, VectorSet], tmp_path: Path) -> None:
    """export_vectors(layers="cnn1") was read letter by letter: 'unknown layer 'c''. A str is one layer's name."""
    fs, run, _ = msd
    summary = export_vectors(fs, run, tmp_path / "cnn1.npz", layers="cnn1")
    assert summary.layers == ("cnn1",)
    ids, cnn1 = fs.layer_matrix(run, "cnn1")
    with np.load(tmp_path / "cnn1.npz") as data:
        order = np.argsort(data["track_id"])
        assert np.array_equal(data["track_id"][order], np.sort(ids))
        np.testing.assert_array_equal(data["vectors_cnn1"][order], cnn1[np.argsort(ids)])


@pytest.mark.parametrize("ranking", ["plain", "auto"])
def test_a_negative_or_fractional_expansion_is_refused(msd: tuple[FeatureStore, Run, VectorSet], ranking: str) -> None:
    """expand=-1 ranked as expand=0, unsaid, in similar_tracks and evaluate, and expand=2.5 raised a TypeError from a
    slice; each is now a ValueError naming expand."""
    fs, run, _ = msd
    query = collection_query(fs, 1)
    for expand in (-1, 2.5):
        with pytest.raises(ValueError, match=r"^expand must be a whole number of neighbours, 0 or more; got "):
            similar_tracks(fs, run, query, 3, expand=expand, ranking=ranking)
        with pytest.raises(ValueError, match=r"^expand must be a whole number of neighbours, 0 or more; got "):
            evaluate(fs, run, "artist", expand=expand, ranking=ranking)
    got = similar_tracks(fs, run, query, 3, expand=0, ranking="plain", norm="none")
    cosines = []  # expand=0 is the plain cosine: the mean over layers of each layer's cosine to track 1
    for layer in run.layer_names:
        ids, matrix = fs.layer_matrix(run, layer)
        unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        cosines.append(unit @ unit[list(ids).index(1)])
    mean = np.mean(cosines, axis=0)
    expected = [int(i) for i in ids[np.argsort(-mean)] if i != 1][:3]
    assert [n.track.id for n in got] == expected
    np.testing.assert_allclose([n.score for n in got], np.sort(mean[ids != 1])[::-1][:3], atol=1e-4)


def test_a_query_resolved_in_another_store_is_refused(msd: tuple[FeatureStore, Run, VectorSet], tmp_path: Path) -> None:
    """A notebook with two stores open resolved a track in one and searched the other: track 1 there is another
    piece, and the answer was that piece's neighbours under the query's name. A query whose track is not this
    store's track of that id (another store's, or one extracted again since) is now a StoreError saying so."""
    fs, run, _ = msd
    other, other_run = _planted_run(tmp_path, 4)
    foreign = collection_query(other, 1)
    assert foreign.track is not None and fs.track(1).content_hash != foreign.track.content_hash
    for ranking in ("plain", "auto"):
        with pytest.raises(StoreError, match=r"is not track 1 of .*: resolve it in this store"):
            similar_tracks(fs, run, foreign, 3, ranking=ranking)
    mine = similar_tracks(fs, run, collection_query(fs, 1), 3)
    assert len(mine) == 3 and 1 not in [n.track.id for n in mine]
    other.close()


def test_artist_validation_refuses_a_k_below_one() -> None:
    """artists.validate.evaluate(k=0) gave NaN overlap and nDCG, k=-1 numpy's 'operands could not be broadcast';
    both are now an ArtistError naming k. k=2 on a hand-ranked case gives the textbook numbers."""
    scores = np.array([[1.0, 0.9, 0.5, 0.1]] * 4)  # artist 0 ranks 1, 2, 3
    matched = {0: [2, 1]}  # the reference lists 2 then 1: gains 1 and 0.5
    for k in (0, -1):
        with pytest.raises(ArtistError, match=rf"^k must be 1 or more; got {k}$"):
            validate_artists(scores, matched, k)
    got = validate_artists(scores, matched, 2)
    dcg = 0.5 + 1.0 / np.log2(3)
    ideal = 1.0 + 0.5 / np.log2(3)
    assert (got.overlap, got.recall, got.mrr) == (1.0, 1.0, 1.0)
    assert got.ndcg == pytest.approx(dcg / ideal)


def test_a_hybrid_blend_refuses_a_misspelt_or_nan_weight() -> None:
    """blend(parts, {"audoi": 1.0}) (a misspelt component) returned all zeros, every artist equally similar, and a
    NaN weight a matrix of NaN; both are now an ArtistError. Known weights give the weighted sum."""
    rng = np.random.default_rng(0)
    parts = {"audio": rng.random((3, 3)), "genre": rng.random((3, 3))}
    with pytest.raises(ArtistError, match=r"^unknown component 'audoi'; choose from audio, "):
        blend(parts, {"audoi": 1.0})
    with pytest.raises(ArtistError, match=r"^weights must be finite numbers"):
        blend(parts, {"audio": float("nan"), "genre": 1.0})
    np.testing.assert_allclose(blend(parts, {"audio": 0.6, "genre": 0.4, "collab": 0.5}),
                               0.6 * parts["audio"] + 0.4 * parts["genre"])
