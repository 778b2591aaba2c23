"""`mess artists ...` end to end on a feature store filled with synthetic, known-structure vectors."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from mess.audio.windows import WindowPolicy
from mess.cli.artists import register
from mess.extract.runs import run_key
from mess.models.base import ModelInfo
from mess.store import FeatureStore, TrackVectors

DIM = 24
TRACKS_PER_ARTIST = (6, 5, 4, 4, 3, 3, 1, 5)  # artist 6 has one track: low confidence
GENRES = ("rock", "rock", "jazz", "jazz", "folk", "folk", "pop", "pop")


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    return app


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 artists in 4 pairs of close artists (0~1, 2~3, ...). Layer 'aniso': artist signal under a huge
    shared offset; 'noise': offset plus noise only; 'clean': artist signal alone. Artist 7 has a
    track featuring artist 6."""
    root = tmp_path_factory.mktemp("artists") / "store"
    rng = np.random.default_rng(0)
    fs = FeatureStore(root)
    info = ModelInfo("synthetic", "r1", 16000, ("aniso", "noise", "clean"), (DIM,) * 3)
    run = fs.ensure_run(run_key(info, WindowPolicy()))
    offset = rng.normal(size=DIM) * 10
    centres = rng.normal(size=(8, DIM))
    centres[1::2] = centres[::2] + 0.5 * rng.normal(size=(4, DIM))
    items = []
    for a, count in enumerate(TRACKS_PER_ARTIST):
        for t in range(count):
            digest = hashlib.sha1(f"{a}-{t}".encode()).hexdigest()
            credit = f"Artist {a} feat. Artist 6" if (a, t) == (7, 0) else f"Artist {a}"
            fs.upsert_track(Path(f"/music/{a}/{t}.flac"), digest, 1, 0.0, {"duration": 30.0},
                            {"artist": credit, "album": f"album {t % 2}", "title": f"song {t}",
                             "genre": GENRES[a], "composer": None})
            clean = centres[a] + 0.3 * rng.normal(size=DIM)
            layers = [offset + 0.3 * clean, offset + rng.normal(size=DIM), clean]
            items.append(TrackVectors(digest, [v.astype(np.float32) for v in layers],
                                      [v[None].astype(np.float32) for v in layers], [0.0]))
    fs.write_vectors(run, items)
    fs.close()
    return root


def invoke(app: typer.Typer, store: Path, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr with the console's line wrapping undone)."""
    result = CliRunner().invoke(app, ["artists", *args, "--store", str(store)])
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


def test_similar_ranks_the_paired_artist_first_with_confidence(app: typer.Typer, store: Path) -> None:
    code, out, _ = invoke(app, store, "similar", "artist 0", "-k", "7", "--layer", "clean", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["artist"] == "Artist 0" and data["space"] == "clean" and data["centered"] is True
    assert [r["rank"] for r in data["results"]] == list(range(1, 8))
    assert data["results"][0]["artist"] == "Artist 1"
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)
    low = {r["artist"]: r["low_confidence"] for r in data["results"]}
    assert low["Artist 6"] and not low["Artist 1"]
    assert next(r for r in data["results"] if r["artist"] == "Artist 6")["confidence"] == pytest.approx(0.2)


def test_similar_defaults_to_a_discriminative_layer_and_can_hide_low_confidence(app: typer.Typer, store: Path) -> None:
    code, out, err = invoke(app, store, "similar", "Artist 7", "--method", "chamfer", "--hide-low", "--json")
    assert code == 0 and "most artist-discriminative" in err
    data = json.loads(out)
    assert data["space"] in ("aniso", "clean")
    assert "Artist 6" not in [r["artist"] for r in data["results"]] and len(data["results"]) == 6
    assert "--hide-low left out every other artist" not in err  # six are left: nothing to say


def test_similar_hybrid_reports_components(app: typer.Typer, store: Path, tmp_path: Path) -> None:
    code, out, said = invoke(app, store, "similar", "Artist 7", "-l", "noise", "--weights", "genre=1,collab=1",
                             "--json")
    assert code == 0
    data = json.loads(out)
    top = data["results"][0]
    assert data["hybrid"] and top["artist"] == "Artist 6"  # same genre and credited together
    assert top["components"]["genre"] == 1.0 and top["components"]["collab"] == 1.0
    unused = ("no information for reference in this collection (no tags / collaborations / --reference); those "
              "weights are unused")
    assert unused not in said
    code, out, err = invoke(app, store, "similar", "Artist 7", "-l", "noise", "--weights", "genre=1,reference=1")
    assert code == 0 and unused in err, err  # no --reference: its weight is said unused, the genre ranks
    code, out, err = invoke(app, store, "similar", "Artist 7", "-l", "noise", "--weights", "genre=1,reference=0")
    assert code == 0 and "no information for" not in err, err  # a weight of 0 asks for nothing
    ref = tmp_path / "ref.json"  # a list that pairs Artist 7 with Artist 2, whom nothing else relates to it
    ref.write_text(json.dumps({"Artist 7": ["Artist 2"]}))
    code, out, err = invoke(app, store, "similar", "Artist 7", "-l", "noise", "--weights", "reference=1",
                            "--reference", str(ref), "--json")
    assert code == 0 and json.loads(out)["results"][0]["artist"] == "Artist 2", err


@pytest.mark.parametrize(("args", "message"), [
    (("similar", "Artst 0"), "did you mean 'Artist 0'"),
    (("similar", "Artist 0", "--layer", "nope"), "unknown layer 'nope'"),
    (("similar", "Artist 0", "--aspect", "timbre"), "unknown aspect 'timbre'"),
    (("similar", "Artist 0", "--fused"), "no 'fused' vectors"),
    (("similar", "Artist 0", "--method", "median"), "unknown method"),
    (("similar", "Artist 0", "--weights", "tempo=1"), "unknown component 'tempo'"),
    (("similar", "Artist 0", "--weights", "audio=1,audio=3"), "weight 'audio' given twice"),  # the last one won
    # every artist scored 0 and the list came back in name order, exit 0, under a note that the weights are unused
    (("similar", "Artist 0", "--weights", "reference=1"), "so every artist would score 0; give weight to audio or "),
    (("similar", "Artist 0", "--model", "mert-v1-95m"), "no vectors for model 'mert-v1-95m'"),
    # it ran as --min-tracks 5: low confidence was judged against the 5 tracks asked for
    (("similar", "Artist 0", "--min-tracks", "8", "--max-tracks", "5"),
     "--min-tracks (8) is larger than --max-tracks (5)"),
    (("matrix", "--min-tracks", "4", "--max-tracks", "2"), "--min-tracks (4) is larger than --max-tracks (2)"),
])
def test_bad_input_gives_one_line_errors(app: typer.Typer, store: Path, args: tuple[str, ...], message: str) -> None:
    code, _, err = invoke(app, store, *args)
    assert code == 1 and message in err and "Traceback" not in err


def test_missing_store_is_a_clean_error(app: typer.Typer, tmp_path: Path) -> None:
    code, _, err = invoke(app, tmp_path / "none", "similar", "Artist 0")
    assert code == 1 and "no feature store" in err


def test_matrix_writes_clustered_csv_and_heatmap(app: typer.Typer, store: Path, tmp_path: Path) -> None:
    code, out, _ = invoke(app, store, "matrix", "-l", "clean", "--out", str(tmp_path / "m"), "--json")
    assert code == 0
    data = json.loads(out)
    with open(data["csv"], newline="") as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    assert sorted(names) == [f"Artist {i}" for i in range(8)] and [r[0] for r in rows[1:]] == names
    matrix = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert np.allclose(matrix, matrix.T, atol=1e-4) and np.allclose(np.diag(matrix), 1.0, atol=1e-4)
    assert abs(names.index("Artist 0") - names.index("Artist 1")) == 1  # clustered order keeps pairs adjacent
    assert Path(data["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_discrimination_flags_compressed_and_useless_layers(app: typer.Typer, store: Path) -> None:
    code, out, _ = invoke(app, store, "discrimination", "--json")
    assert code == 0
    layers = {r["label"]: r for r in json.loads(out)["layers"]}
    assert [r["label"] for r in json.loads(out)["layers"]][-1] == "noise"
    assert layers["noise"]["verdict"] == "useless"
    assert layers["aniso"]["verdict"] == "centre" and layers["aniso"]["raw"]["span"] < 0.1
    assert layers["aniso"]["centered"]["span"] > 0.5
    assert layers["clean"]["verdict"] == "useful"
    code, out, _ = invoke(app, store, "discrimination")  # the table is the result: stdout
    assert code == 0 and "useless" in out and "noise" in out


def test_validate_scores_layers_against_reference(app: typer.Typer, store: Path, tmp_path: Path) -> None:
    pairs = {f"Artist {a}": [f"Artist {a ^ 1}"] for a in range(8)}
    pairs["Artist 0"].append("Not In Collection")
    pairs["Ghost"] = ["Artist 1"]
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(pairs))
    code, out, _ = invoke(app, store, "validate", "--reference", str(ref), "-k", "3", "--json")
    assert code == 0
    data = json.loads(out)
    cov = data["coverage"]
    assert (cov["query_artists"], cov["query_found"], cov["usable_queries"]) == (9, 8, 8)
    assert set(cov["missing"]) == {"Not In Collection", "Ghost"}
    layers = {r["layer"]: r for r in data["layers"]}
    assert layers["clean"]["mrr"] == 1.0 and layers["clean"]["ndcg"] == 1.0
    assert layers["noise"]["ndcg"] < layers["clean"]["ndcg"]
    assert 0 < data["random"]["ndcg"] < layers["clean"]["ndcg"]


def test_validate_rejects_malformed_reference(app: typer.Typer, store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    code, _, err = invoke(app, store, "validate", "--reference", str(bad))
    assert code == 1 and "not valid JSON" in err
    bad.write_text(json.dumps({"Artist 0": "Artist 1"}))
    code, _, err = invoke(app, store, "validate", "--reference", str(bad))
    assert code == 1 and "is not a list" in err


def test_hybrid_learns_saves_and_similar_reuses_weights(app: typer.Typer, store: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({f"Artist {a}": [f"Artist {a ^ 1}"] for a in range(8)}))
    code, out, _ = invoke(app, store, "hybrid", "--reference", str(ref), "-k", "2", "-l", "noise", "--json")
    assert code == 0
    fit = json.loads(out)
    assert fit["train_queries"] + fit["test_queries"] == 8
    assert set(fit["weights"]) == {"audio", "genre", "collab", "reference"}
    assert sum(fit["weights"].values()) == pytest.approx(1.0, abs=1e-3)
    # the audio layer is noise, but genre tags pair the artists: the blend recovers every held-out pair
    assert fit["test"]["hybrid"]["ndcg"] == pytest.approx(1.0)
    assert fit["test"]["audio"]["ndcg"] < 0.9
    saved = json.loads(Path(fit["saved"]).read_text())
    assert saved["weights"] == fit["weights"] and saved["selection"]["layer"] == "noise"
    code, out, _ = invoke(app, store, "similar", "Artist 2", "--hybrid", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["hybrid"] and data["space"] == "noise" and data["results"][0]["artist"] == "Artist 3"


def test_similar_hybrid_compares_artists_as_the_saved_weights_were_learned(app: typer.Typer, store: Path,
                                                                           tmp_path: Path) -> None:
    """Weights learned with --method chamfer --no-center were used with mean, centred matching."""
    own = tmp_path / "store"
    shutil.copytree(store, own)
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({f"Artist {a}": [f"Artist {a ^ 1}"] for a in range(8)}))
    code, out, err = invoke(app, own, "hybrid", "--reference", str(ref), "-k", "2", "-l", "aniso",
                            "--method", "chamfer", "--no-center", "--json")
    assert code == 0, err
    weights = ",".join(f"{c}={w}" for c, w in json.loads(out)["weights"].items())
    code, out, err = invoke(app, own, "similar", "Artist 2", "--hybrid", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["method"], data["centered"], data["space"]) == ("chamfer", False, "aniso")
    code, by_hand, _ = invoke(app, own, "similar", "Artist 2", "-l", "aniso", "--weights", weights,
                              "--method", "chamfer", "--no-center", "--json")
    assert data["results"] == json.loads(by_hand)["results"]
    code, out, err = invoke(app, own, "similar", "Artist 2", "--hybrid", "--method", "mean", "--json")
    assert code == 0 and (json.loads(out)["method"], json.loads(out)["centered"]) == ("mean", False)
    assert "learned with --method chamfer; using --method mean as asked" in err
    code, out, err = invoke(app, own, "similar", "Artist 2", "--hybrid", "--center", "--json")
    assert code == 0 and (json.loads(out)["method"], json.loads(out)["centered"]) == ("chamfer", True)
    assert "learned without centring; using --center as asked" in err


def test_empty_weights_are_refused_not_replaced_by_the_saved_ones(app: typer.Typer, store: Path,
                                                                  tmp_path: Path) -> None:
    """`similar --weights ""` (an empty shell variable) blended with the saved weights, compared as the user asked
    rather than as they were learned, and without saved weights asked for --weights; " " was refused."""
    own = tmp_path / "store"
    shutil.copytree(store, own)
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({f"Artist {a}": [f"Artist {a ^ 1}"] for a in range(8)}))
    assert invoke(app, own, "hybrid", "--reference", str(ref), "-k", "2", "-l", "noise", "--json")[0] == 0
    for weights in ("", " "):
        code, out, err = invoke(app, own, "similar", "Artist 2", "-l", "noise", "--weights", weights)
        assert code == 1 and "weights must be finite, non-negative numbers with a positive sum" in err, out + err


def _solo_store(root: Path, names: tuple[str, ...] = tuple(f"Solo {a}" for a in range(4))) -> Path:
    """Artists of one track each (``names``), 2 layers of random vectors."""
    rng = np.random.default_rng(1)
    fs = FeatureStore(root)
    run = fs.ensure_run(run_key(ModelInfo("synthetic", "r1", 16000, ("a", "b"), (DIM,) * 2), WindowPolicy()))
    for a, name in enumerate(names):
        digest = hashlib.sha1(f"solo-{a}".encode()).hexdigest()
        fs.upsert_track(Path(f"/music/solo{a}.flac"), digest, 1, 0.0, {"duration": 30.0}, {"artist": name})
        layers = [rng.normal(size=DIM).astype(np.float32) for _ in range(2)]
        fs.write_vectors(run, [TrackVectors(digest, layers, [v[None] for v in layers], [0.0])])
    fs.close()
    return root


def test_similar_with_one_track_per_artist_says_why_no_layer_was_chosen(app: typer.Typer, tmp_path: Path) -> None:
    code, _, err = invoke(app, _solo_store(tmp_path / "store"), "similar", "Solo 0", "--min-tracks", "1")
    assert code == 0 and "no artist has two tracks" in err and "nan" not in err, err  # it said "separation nan"


def test_discrimination_with_one_track_per_artist_says_why_and_prints_no_nan(app: typer.Typer,
                                                                            tmp_path: Path) -> None:
    """The within and separation columns read 'nan' when no artist had two tracks."""
    store = _solo_store(tmp_path / "store")
    code, table, err = invoke(app, store, "discrimination", "--min-tracks", "1")
    assert code == 0, err
    assert not re.search(r"\bnan\b", table + err, re.IGNORECASE) and "n/a/" in table
    assert "no artist has two tracks" in err
    code, out, _ = invoke(app, store, "discrimination", "--min-tracks", "1", "--json")
    layers = json.loads(out)["layers"]
    assert "NaN" not in out and len(layers) == 2
    assert all(r["separation"]["within"] is None and r["separation"]["effect"] is None for r in layers)
    assert [r["verdict"] for r in layers] == ["unknown", "unknown"]  # was 'useless': no evidence is not evidence
    assert err.count("useless") == 1 and err.count("unknown") == 1  # the legend's words (stderr)
    assert "useless" not in table and table.count("unknown") == 2  # the two layers' verdicts (the table: stdout)
    assert all(r["separation"]["between"] is not None for r in layers)


@pytest.mark.parametrize(("typed", "suggested"), [
    ("doug", "did you mean 'Doug Kaufman', 'Ann Dougherty-Smith', 'Douglas Adair'?"),  # was no suggestion at all
    ("KAUF", "did you mean 'Doug Kaufman'?"),
    ("doug k", "did you mean 'Doug Kaufman'?"),
    ("kaufman", "did you mean 'Doug Kaufman', 'Klaus Halfmann'?"),  # a surname, then a close spelling
])
def test_an_unknown_first_name_or_surname_suggests_the_artists_it_starts_a_word_of(
        app: typer.Typer, tmp_path: Path, typed: str, suggested: str) -> None:
    store = _solo_store(tmp_path / "store", ("Doug Kaufman", "Klaus Halfmann", "Douglas Adair", "Ann Dougherty-Smith"))
    code, _, err = invoke(app, store, "similar", typed, "--min-tracks", "1")
    assert code == 1 and f"unknown artist {typed!r} (4 artists in the store); {suggested}" in err, err


def test_reference_and_tags_files_saved_with_a_byte_order_mark_are_read(app: typer.Typer, store: Path,
                                                                        tmp_path: Path) -> None:
    """A JSON file saved with a UTF-8 BOM (Windows Notepad's default) was 'not valid JSON (Unexpected UTF-8 BOM)'."""
    ref, tags = tmp_path / "ref.json", tmp_path / "tags.json"
    ref.write_bytes(b"\xef\xbb\xbf" + json.dumps({f"Artist {a}": [f"Artist {a ^ 1}"] for a in range(8)}).encode())
    shared = ["drone", "ambient", "noise"]
    tags.write_bytes(b"\xef\xbb\xbf" + json.dumps({"Artist 0": shared, "Artist 5": shared}).encode())
    code, out, err = invoke(app, store, "validate", "--reference", str(ref), "-k", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["coverage"]["usable_queries"] == 8
    code, out, err = invoke(app, store, "similar", "Artist 0", "-l", "noise", "--weights", "genre=1",
                            "--tags", str(tags), "--json")
    assert code == 0, err
    assert json.loads(out)["results"][0]["artist"] == "Artist 5"  # the tags of the file pair these two


def test_a_tags_file_with_tags_that_are_not_strings_is_refused(app: typer.Typer, store: Path, tmp_path: Path) -> None:
    """[null, 3] passed as tags: 'None' and '3' became genres that paired any two artists listing them."""
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps({"Artist 0": [None, 3], "Artist 5": [None, 3]}))
    code, _, err = invoke(app, store, "similar", "Artist 0", "--weights", "genre=1", "--tags", str(tags))
    assert code == 1 and "must map each artist to a list of tags (strings)" in err and "Traceback" not in err


def test_a_deeply_nested_tags_file_is_a_one_line_error(app: typer.Typer, store: Path, tmp_path: Path) -> None:
    """A tags file of 100000 nested lists ended in a RecursionError traceback (the reference file said why)."""
    tags = tmp_path / "tags.json"
    tags.write_text("[" * 100000 + "]" * 100000)
    code, _, err = invoke(app, store, "similar", "Artist 0", "--weights", "genre=1", "--tags", str(tags))
    assert code == 1 and f"error: tags file {tags} is not valid JSON (nested too deeply)" in err, err
    assert "Traceback" not in err


def _tagged_tones(music: Path, credits: dict[str, list[str]]) -> None:
    """One tone per file name (FLAC or MP3 by its suffix), its ARTIST tag given every value of ``credits``: two
    Vorbis comments in a FLAC, an ID3v2.4 TPE1 of null-separated values in an MP3."""
    from mutagen.easyid3 import EasyID3
    from mutagen.flac import FLAC

    music.mkdir()
    t = np.arange(22050 * 3) / 22050
    for i, (name, artists) in enumerate(credits.items()):
        path = music / name
        sf.write(path, (0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t)).astype(np.float32), 22050)
        if path.suffix == ".flac":
            tags = FLAC(path)
            tags["artist"] = artists
            tags.save()
        else:
            id3 = EasyID3()
            id3["artist"] = artists
            id3.save(path, v2_version=4)


def test_a_multi_valued_artist_tag_keeps_every_value_and_its_first_is_the_artist(tmp_path: Path) -> None:
    """Two ARTIST tags ('Alpha', 'Beta') were stored as 'Alpha' alone: Beta vanished from the catalogue, the
    export and the collaborations `mess artists --hybrid` draws on. Both are kept as 'Alpha; Beta'; Alpha is the
    artist (in `mess artists` and --exclude-same-artist) and Beta a collaborator."""
    from mess.cli.main import app as mess

    music, store = tmp_path / "music", str(tmp_path / "store")
    credits = {"duo0.flac": ["Alpha", "Beta"], "duo1.mp3": ["Alpha", "Beta"], "alpha.flac": ["Alpha"],
               "beta.flac": ["Beta"], "gamma0.flac": ["Gamma"], "gamma1.flac": ["Gamma"]}
    _tagged_tones(music, credits)
    runner = CliRunner()

    def run(*args: str) -> str:
        out = runner.invoke(mess, [*args, "--store", store])
        assert out.exit_code == 0, out.output
        return out.stdout

    run("extract", str(music), "--model", "dsp", "--window", "2")
    with closing(FeatureStore(Path(store), readonly=True)) as fs:
        stored = {Path(t.path).name: t.artist for t in fs.tracks()}
    assert stored == {name: "; ".join(artists) for name, artists in credits.items()}
    found = json.loads(run("artists", "similar", "alpha", "--min-tracks", "1", "--weights", "collab=1", "--json"))
    assert found["artist"] == "Alpha" and found["tracks"] == 3  # duo0, duo1 and alpha: no artist 'Alpha; Beta'
    assert [r["artist"] for r in found["results"]] == ["Beta", "Gamma"] and found["results"][0]["score"] > 0
    similar = json.loads(run("similar", str(music / "alpha.flac"), "--exclude-same-artist", "--json"))
    assert {Path(r["path"]).name for r in similar["results"]} == {"beta.flac", "gamma0.flac", "gamma1.flac"}
    run("export", str(tmp_path / "v.npz"), "--model", "dsp")
    exported = np.load(tmp_path / "v.npz")
    assert {Path(p).name: a for p, a in zip(exported["path"], exported["artist"], strict=True)} == stored


def test_exclude_same_artist_leaves_out_the_composer_credited_tracks_mess_artists_counts_as_the_artist(
        tmp_path: Path) -> None:
    """A track tagged with a composer and no artist is that composer's in `mess artists`, but
    `mess similar --exclude-same-artist` keyed on the artist tag alone: asked from such a track it excluded nothing
    and returned the same composer's other tracks (seen on the widelands soundtrack, composer-only tags)."""
    from mutagen.flac import FLAC

    from mess.cli.main import app as mess

    music, store = tmp_path / "music", str(tmp_path / "store")
    music.mkdir()
    credits = {"c0": {"composer": "Clara"}, "c1": {"composer": "CLARA"}, "c2": {"artist": "Clara feat. Dora"},
               "d0": {"artist": "Dora"}, "d1": {"artist": "Dora"}}
    t = np.arange(22050 * 3) / 22050
    for i, (name, tags) in enumerate(credits.items()):
        sf.write(music / f"{name}.flac", (0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t)).astype(np.float32), 22050)
        flac = FLAC(music / f"{name}.flac")
        flac.update(tags)
        flac.save()
    runner = CliRunner()

    def run(*args: str) -> dict:
        out = runner.invoke(mess, [*args, "--store", store, "--json"])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)

    extracted = runner.invoke(mess, ["extract", str(music), "--model", "dsp", "--window", "2", "--store", store])
    assert extracted.exit_code == 0, extracted.output
    assert run("artists", "similar", "clara", "--min-tracks", "1")["tracks"] == 3  # c0, c1, c2 are Clara's
    for seed in ("c0", "c2"):
        found = run("similar", str(music / f"{seed}.flac"), "--exclude-same-artist")["results"]
        assert {Path(r["path"]).stem for r in found} == {"d0", "d1"}, (seed, found)
    outside = tmp_path / "new.flac"  # a file outside the collection, composer-credited too (it excluded nothing)
    sf.write(outside, (0.3 * np.sin(2 * np.pi * 700 * t)).astype(np.float32), 22050)
    flac = FLAC(outside)
    flac.update({"composer": "Clara"})
    flac.save()
    found = run("similar", str(outside), "--exclude-same-artist")["results"]
    assert {Path(r["path"]).stem for r in found} == {"d0", "d1"}, found


def _partly_fused(store: Path, root: Path, unfused: tuple[str, ...]) -> Path:
    """A copy of ``store`` whose fused vectors (the 'clean' layer) miss the tracks at ``unfused`` paths, as tracks
    extracted after `mess fuse apply` do."""
    shutil.copytree(store, root)
    with closing(FeatureStore(root)) as fs:
        run = fs.run()
        ids, clean = fs.layer_matrix(run, "clean")
        keep = [j for j, i in enumerate(ids) if fs.track(int(i)).path not in unfused]
        fs.write_derived(run, "fused", [fs.track(int(ids[j])).content_hash for j in keep], clean[keep], {"note": "c"})
    return root


def test_fused_artists_count_only_the_tracks_with_fused_vectors_and_say_how_many_are_left_out(
        app: typer.Typer, store: Path, tmp_path: Path) -> None:
    """Artist 4 showed 3/3 tracks and confidence 0.6 though one of its tracks had no fused vector, without a word;
    Artist 6, whose only track had none, ended every --fused command ("has no vectors in fused")."""
    root = _partly_fused(store, tmp_path / "store", ("/music/4/0.flac", "/music/6/0.flac"))
    said = "2 tracks have no fused vectors yet and were left out; `mess fuse apply` adds them"
    code, out, err = invoke(app, root, "similar", "Artist 0", "-k", "7", "--fused", "--json")
    assert code == 0, err
    data = json.loads(out)
    rows = {r["artist"]: r for r in data["results"]}
    assert data["tracks_without_fused_vectors"] == 2 and "Artist 6" not in rows and len(rows) == 6
    assert (rows["Artist 4"]["tracks"], rows["Artist 4"]["total_tracks"]) == (2, 3)
    assert rows["Artist 4"]["confidence"] == pytest.approx(0.4) and rows["Artist 4"]["low_confidence"]
    assert err.count(said) == 1, err
    code, out, err = invoke(app, root, "similar", "Artist 0", "-k", "7", "--fused")
    table = " ".join(out.split())  # the table is the result: stdout
    assert code == 0 and err.count(said) == 1 and re.search(r"Artist 4 \(low\) │ \S+ │ 2/3 │ 0\.40", table), out
    code, out, err = invoke(app, root, "similar", "Artist 7", "-k", "7", "--fused", "--json")  # after Artist 6
    data = json.loads(out)
    assert code == 0 and data["artist"] == "Artist 7" and data["tracks"] == 5, err
    assert sorted(r["artist"] for r in data["results"]) == [f"Artist {a}" for a in range(6)]
    code, _, err = invoke(app, root, "similar", "Artist 6", "--fused")
    assert code == 1 and "Artist 6 has no fused vectors" in err and "`mess fuse apply`" in err, err
    code, out, err = invoke(app, root, "matrix", "--fused", "--out", str(tmp_path / "m"), "--json")
    assert code == 0 and "Artist 6" not in json.loads(out)["artists"] and err.count(said) == 1, err
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({f"Artist {a}": [f"Artist {a ^ 1}"] for a in range(8)}))
    code, out, err = invoke(app, root, "hybrid", "--reference", str(ref), "-k", "2", "--fused", "--no-save", "--json")
    assert code == 0 and json.loads(out)["space"] == "fused" and err.count(said) == 1, err
    left_out = "fused row left out: 2 tracks have no fused vectors yet; `mess fuse apply` adds them"
    for args in (("validate", "--reference", str(ref), "-k", "2"), ("discrimination",)):
        code, out, err = invoke(app, root, *args, "--json")
        spaces = [r.get("layer", r.get("label")) for r in json.loads(out)["layers"]]
        assert code == 0 and "fused" not in spaces and len(spaces) == 3 and err.count(left_out) == 1, err
