"""`mess probe` on a feature store extracted from real rendered music: report, aspect map, controls, errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor
from typer.testing import CliRunner

from mess.cli import probe as probe_cli
from mess.extract.pipeline import extract
from mess.extract.runs import run_policy
from mess.models.registry import load_model
from mess.probing.controls import ControlError, randomized
from mess.probing.target_cache import track_targets
from mess.probing.targets import ASPECTS, TARGET_NAMES
from mess.store import FeatureStore

app = typer.Typer()
probe_cli.register(app)
runner = CliRunner()


@pytest.fixture(scope="module")
def store_copy(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: probing writes targets, reports, an aspect map and control runs."""
    target = tmp_path_factory.mktemp("probe") / "store"
    shutil.copytree(extracted_store, target)
    return target


@pytest.fixture(scope="module")
def dsp_report(store_copy: Path) -> dict:
    result = runner.invoke(app, ["probe", "--model", "dsp", "--store", str(store_copy), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_report_covers_every_layer_and_target_and_is_written_as_json_csv_png(store_copy: Path,
                                                                              dsp_report: dict) -> None:
    store = FeatureStore(store_copy, readonly=True)
    run = store.run("dsp")
    assert dsp_report["n_tracks"] == len(store.tracks(run)) >= 8
    assert dsp_report["window_policy"]["window_seconds"] == run_policy(run).window_seconds
    assert "GroupKFold" in dsp_report["folds"] and "album" in dsp_report["folds"]
    for condition in ("trained", "shuffled"):
        r2 = dsp_report["conditions"][condition]["r2"]
        assert list(r2) == list(run.layer_names)
        assert all(list(row) == list(TARGET_NAMES) for row in r2.values())
    files = {k: Path(v) for k, v in dsp_report["files"].items()}
    assert all(p.is_file() and p.parent == store.reports_dir for p in files.values())
    assert json.loads(files["json"].read_text())["aspects"] == dsp_report["aspects"]
    with files["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(run.layer_names) * len(TARGET_NAMES)
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dsp_layers_are_found_for_the_descriptors_they_contain(store_copy: Path, dsp_report: dict) -> None:
    """The dsp 'spectral' and 'mfcc' layers describe the spectral envelope and 'rhythm' holds tempo, onset
    rate and level: probing must find them, which also proves targets align with the track vectors.
    (With 16 tracks the MFCC layer often predicts the centroid best: its first coefficients are the spectral tilt.)"""
    best = {a["aspect"]: a for a in dsp_report["aspects"]}
    assert set(best) == set(ASPECTS)
    assert best["brightness"]["layer"] in ("spectral", "mfcc") and best["brightness"]["score"] > 0.5
    assert best["rhythm"]["layer"] == "rhythm" and best["rhythm"]["margin"] > 0.1
    assert best["harmony"]["layer"] == "chroma"
    store = FeatureStore(store_copy, readonly=True)
    assert store.aspect_map(store.run("dsp")) == {a: best[a]["layer"] for a in ASPECTS}


def test_shuffled_targets_score_nothing_while_trained_layers_do(dsp_report: dict) -> None:
    trained = dsp_report["conditions"]["trained"]["aspect_score"]
    shuffled = dsp_report["conditions"]["shuffled"]["aspect_score"]
    best_shuffled = max(v for row in shuffled.values() for v in row.values() if v is not None)
    # the best of 24 chance scores on 16 tracks: 0.0 to 0.29 over seeds 0-19 (median 0.09; seed 0: 0.12), a
    # scratch probe_run per seed in session 32; the probe takes rows in content order, so the order the store
    # numbered the tracks in leaves the permutation alone
    assert best_shuffled < 0.3
    assert max(row["brightness"] for row in trained.values()) > best_shuffled + 0.4
    assert "random-init" not in dsp_report["conditions"]


def test_targets_are_cached_per_content_hash(store_copy: Path, dsp_report: dict) -> None:
    store = FeatureStore(store_copy, readonly=True)
    run = store.run("dsp")
    again = track_targets(store.root, store.tracks(run), run_policy(run), workers=1)
    assert again.computed == 0 and len(again.track_ids) == dsp_report["n_tracks"]


def test_random_init_control_is_explained_for_a_model_without_weights(store_copy: Path) -> None:
    result = runner.invoke(app, ["probe", "-m", "dsp", "-s", str(store_copy), "--control", "random-init",
                                 "--layers", "spectral,rhythm", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report["conditions"]) == ["trained"]
    assert "no learned weights" in report["notes"]["random-init"]
    assert list(report["conditions"]["trained"]["r2"]) == ["spectral", "rhythm"]
    with pytest.raises(ControlError):
        randomized(load_model("dsp"))


def test_trained_musicnn_middle_layers_carry_what_its_random_init_twin_loses(store_copy: Path) -> None:
    """musicnn-msd with the weights shipped in the musicnn package, against the same network re-initialised.

    The front end (``timbral``: wide filters over the mel spectrogram) keeps the spectral envelope even with
    random filters, so brightness there is given for free by the architecture; the trained mid-end and pooled
    layers keep brightness and rhythm, which the random mid-end scrambles. That gap is what training learned.
    """
    layers = ("timbral", "cnn2", "cnn3", "mean_pool")
    result = runner.invoke(app, ["probe", "-m", "musicnn-msd", "-s", str(store_copy), "--control", "random-init",
                                 "--layers", ",".join(layers), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report["conditions"]) == ["trained", "random-init"]
    store = FeatureStore(store_copy, readonly=True)
    twin = store.run("musicnn-msd-random-init")
    assert len(store.tracks(twin)) == report["n_tracks"] == len(store.tracks(store.run("musicnn-msd")))
    trained = report["conditions"]["trained"]["aspect_score"]
    random = report["conditions"]["random-init"]["aspect_score"]
    assert list(trained) == list(random) == list(layers)
    for aspect in ("brightness", "rhythm"):
        learned = np.mean([trained[layer][aspect] for layer in layers[1:]])
        free = np.mean([random[layer][aspect] for layer in layers[1:]])
        assert learned > free + 0.3, f"{aspect}: trained {learned:.2f} vs random-init {free:.2f}"
    assert random["timbral"]["brightness"] > 0.5  # what the architecture gives without training


def test_random_init_twin_of_a_hugging_face_model_is_rebuilt_from_its_config(store_copy: Path,
                                                                            tmp_path: Path) -> None:
    """The control's plumbing for a local Hugging Face folder (``--source``): a tiny HuBERT with arbitrary weights
    is rebuilt from its config with seed 0, extracted into its own run and probed. (Whether training helps is the
    musicnn test's question: these weights carry nothing.)"""
    torch.manual_seed(1234)
    folder = tmp_path / "tiny-mert"
    config = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    HubertModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=24000, do_normalize=True).save_pretrained(folder)
    tiny = load_model(str(folder))
    twin, again = randomized(tiny), randomized(tiny)
    saved, fresh = tiny.network.state_dict(), twin.network.state_dict()
    assert twin.info.name == tiny.info.name + "-random-init" and "random-init-seed0" in twin.info.revision
    assert all(torch.equal(fresh[n], again.network.state_dict()[n]) for n in fresh)  # seeded
    changed = [n for n in saved if n.endswith("weight") and not torch.equal(saved[n], fresh[n])]
    assert len(changed) > len([n for n in saved if n.endswith("weight")]) // 2
    store = FeatureStore(store_copy)
    half = [Path(t.path) for t in store.tracks(store.run("dsp"))[::2]]  # 8 of the 16 tracks: plumbing, not quality
    extract(store, half, tiny, run_policy(store.run("dsp")))
    result = runner.invoke(app, ["probe", "-m", tiny.info.name, "-s", str(store_copy), "--source", str(folder),
                                 "--control", "random-init", "--control", "shuffled", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report["conditions"]) == ["trained", "shuffled", "random-init"]
    run_twin = store.run(f"{tiny.info.name}-random-init")
    assert len(store.tracks(run_twin)) == report["n_tracks"] == len(half)
    ids_a, a = store.layer_matrix(store.run(tiny.info.name), -1)
    ids_b, b = store.layer_matrix(run_twin, -1)
    assert np.array_equal(ids_a, ids_b) and not np.allclose(a, b)


@pytest.mark.parametrize("args,message", [
    (["--model", "dsp", "--layers", "nope"], "unknown layer"),
    (["--model", "dsp", "--layers", " , "], "--layers names no layer"),  # probed every layer before
    (["--model", "no-such-model"], "no vectors for model"),
    (["--model", "dsp", "--control", "bogus"], "unknown control"),
    # 'none' beside other controls ran none of them, and let an unknown name through
    (["--model", "dsp", "--control", "none,shuffled"], "--control none runs no control, and shuffled asks for one"),
    (["--model", "dsp", "-c", "none", "-c", "bogus"], "unknown control 'bogus'"),
    (["--model", "dsp", "--probe", "forest"], "unknown probe"),
])
def test_bad_input_is_a_one_line_error(store_copy: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["probe", "--store", str(store_copy), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args,message", [
    (["--factor", "tempo"], "at least two factors"),
    (["--factor", "tempo,loudness"], "unknown factor"),
    (["--model", "no-such-model", "--factor", "tempo,transpose"], "unknown model"),
])
def test_bad_validation_input_is_a_one_line_error(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["probe-validate", "--store", str(tmp_path), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_missing_store_is_a_clean_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["probe", "--model", "dsp", "--store", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "no feature store" in result.output
    assert not (tmp_path / "nowhere").exists()


def test_random_twin_of_musicnn_is_seeded_and_leaves_the_trained_model_alone() -> None:
    pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")
    model = load_model("musicnn-msd")
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    a, b, c = randomized(model, seed=0), randomized(model, seed=0), randomized(model, seed=1)
    assert a.info.name == "musicnn-msd-random-init" and "seed0" in a.info.revision
    state_a, state_b, state_c = (m.network.state_dict() for m in (a, b, c))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert any(not torch.equal(state_a[k], state_c[k]) for k in state_a)
    assert all(torch.equal(before[k], v) for k, v in model.network.state_dict().items())
    assert any(not torch.equal(before[k], state_a[k]) for k in before if before[k].is_floating_point())
    window = np.random.default_rng(0).standard_normal((1, 16000 * 4)).astype(np.float32) * 0.1
    assert not np.allclose(model.embed(window)[-2], a.embed(window)[-2])


def test_similar_says_when_tracks_were_added_since_the_aspect_map_was_probed(store_copy: Path, dsp_report: dict,
                                                                             tmp_path: Path) -> None:
    import sqlite3

    import soundfile as sf
    from fastapi.testclient import TestClient

    from mess.audio.windows import WindowPolicy
    from mess.cli.main import app as mess
    from mess.serve.app import create_app

    root = tmp_path / "store"
    shutil.copytree(store_copy, root)
    args = ["similar", "1", "-k", "3", "--model", "dsp", "--aspect", "brightness", "--store", str(root)]

    def note() -> str | None:
        out = runner.invoke(mess, [*args, "--json"])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)["stale_aspect_map"]

    assert note() is None  # probed just now
    t = np.arange(22050 * 5) / 22050
    for i in range(3):
        sf.write(tmp_path / f"new{i}.wav", (0.3 * np.sin(2 * np.pi * 150 * (i + 1) * t)).astype(np.float32), 22050)
    store = FeatureStore(root)
    extract(store, sorted(tmp_path.glob("new*.wav")), load_model("dsp"), WindowPolicy())
    n = len(store.tracks(store.run("dsp")))
    store.close()
    assert n == dsp_report["n_tracks"] + 3
    want = f"aspect map from a probe of {n - 3} tracks; {n} now: rerun `mess probe --model dsp`"
    assert note() == want
    table = runner.invoke(mess, args)
    assert table.exit_code == 0 and f"note: {want}" in " ".join(table.output.split()), table.output
    aspect = ["--model", "dsp", "--aspect", "brightness", "--store", str(root)]
    for other in (["artists", "similar", "bach"], ["artists", "matrix", "-o", str(tmp_path / "m")],
                  ["playlist", "radio", "1", "-n", "3"], ["playlist", "path", "1", "2", "-n", "3"],
                  ["playlist", "clusters", "-k", "2", "--json"]):  # they used the map without a word
        out = runner.invoke(mess, [*other, *aspect])
        assert out.exit_code == 0 and f"note: {want}" in " ".join(out.output.split()), out.output
    plain = runner.invoke(mess, ["playlist", "radio", "1", "-n", "3", "--model", "dsp", "--store", str(root)])
    assert plain.exit_code == 0 and "aspect map" not in plain.output, plain.output  # no aspect used: no note
    with TestClient(create_app(root), base_url="http://127.0.0.1") as client:  # the server said nothing either
        query = "model=dsp&aspect=brightness"
        for url in (f"/api/tracks/1/similar?k=3&{query}", f"/api/artists/similar?name=bach&{query}",
                    f"/api/playlists/radio?seed=1&n=3&{query}", f"/api/playlists/path?start=1&end=2&n=3&{query}"):
            answer = client.get(url)
            assert answer.status_code == 200 and answer.json()["stale_aspect_map"] == want, (url, answer.text)
        assert client.get("/api/playlists/radio?seed=1&n=3&model=dsp").json()["stale_aspect_map"] is None
    with sqlite3.connect(root / "catalog.sqlite") as db:  # a catalog from before the probe's track count and digest
        db.execute("ALTER TABLE aspect_map DROP COLUMN n_tracks")
        db.execute("ALTER TABLE aspect_map DROP COLUMN tracks_digest")
    unknown = (f"aspect map from an older mess, which recorded no digest of its tracks: whether it was probed on "
               f"the {n} tracks there are now is unknown: rerun `mess probe --model dsp`")
    assert note() == unknown  # read-only: not migrated, still read
    FeatureStore(root).close()  # migrated: the columns are back, the old map's count and tracks unknown
    assert note() == unknown


def test_an_aspect_map_of_as_many_other_tracks_is_said_stale_by_its_readers_and_mess_check(
        store_copy: Path, dsp_report: dict, tmp_path: Path) -> None:
    """The stale check counted tracks only: one track removed and another added (as many tracks, not the same) and
    `mess similar --aspect`, the server and `mess check` said nothing. The map now records a digest of the track set;
    a map from an older mess, which recorded none, is said to be unknown."""
    import sqlite3

    import soundfile as sf
    from fastapi.testclient import TestClient

    from mess.audio.windows import WindowPolicy
    from mess.cli.main import app as mess
    from mess.serve.app import create_app

    root = tmp_path / "store"
    shutil.copytree(store_copy, root)
    similar = ["similar", "1", "-k", "3", "--model", "dsp", "--aspect", "brightness", "--store", str(root), "--json"]

    def note() -> str | None:
        out = runner.invoke(mess, similar)
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)["stale_aspect_map"]

    def checked() -> list[str]:  # of the dsp run (other tests of this module probe other runs of the store)
        out = runner.invoke(mess, ["check", "--store", str(root), "--json"])
        assert out.exit_code == 0, out.output  # not damage: answers are right, the map is only out of date
        return [p["message"] for p in json.loads(out.stdout)["problems"]
                if p["kind"] == "stale-aspect-map" and p["message"].startswith("dsp (run ")]

    assert note() is None and checked() == []
    assert len(dsp_report["tracks_digest"]) == 16
    store = FeatureStore(root)
    run = store.run("dsp")
    n = len(store.tracks(run))
    assert store.aspect_map_digest(run) == store.tracks_digest(run) == dsp_report["tracks_digest"]
    assert store.remove_tracks([store.tracks(run)[-1].path]) == 1
    t = np.arange(22050 * 5) / 22050
    sf.write(tmp_path / "new.wav", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 22050)
    extract(store, [tmp_path / "new.wav"], load_model("dsp"), WindowPolicy())
    assert len(store.tracks(run)) == n and store.tracks_digest(run) != dsp_report["tracks_digest"]
    store.close()
    want = f"aspect map from a probe of other tracks than the {n} there are now (some were replaced): rerun `mess " \
           "probe --model dsp`"
    assert note() == want
    assert checked() == [f"dsp (run {run.id}): {want}"]
    with TestClient(create_app(root), base_url="http://127.0.0.1") as client:
        answer = client.get("/api/tracks/1/similar?k=3&model=dsp&aspect=brightness")
        assert answer.status_code == 200 and answer.json()["stale_aspect_map"] == want, answer.text
    out = runner.invoke(mess, ["check", "--store", str(root)])
    said = " ".join(out.output.split())
    assert out.exit_code == 0 and f"stale-aspect-map: dsp (run {run.id}): {want}" in said, said
    assert runner.invoke(app, ["probe", "--model", "dsp", "--control", "none", "--store", str(root)]).exit_code == 0
    assert note() is None and checked() == []
    with sqlite3.connect(root / "catalog.sqlite") as db:  # a map stored by an older mess: no digest of its tracks
        db.execute("UPDATE aspect_map SET tracks_digest = NULL")
    unknown = (f"aspect map from an older mess, which recorded no digest of its tracks: whether it was probed on "
               f"the {n} tracks there are now is unknown: rerun `mess probe --model dsp`")
    assert note() == unknown and checked() == [f"dsp (run {run.id}): {unknown}"]


def test_one_recording_in_five_formats_maps_no_aspect_and_byte_copies_are_refused(tmp_path: Path) -> None:
    """Every proxy target is constant over one recording (here in five lossless formats: five content hashes), so no
    aspect maps: the probe used to store that empty map over a good one and print 'aspect map stored'; `mess similar
    --aspect` then asked for a probe. Byte copies of one file (one content hash) cannot be split into folds at all
    (a copy would predict its twin): a one-line error, the stored map kept."""
    import soundfile as sf

    from mess.audio.discover import find_audio
    from mess.audio.windows import WindowPolicy
    from mess.models.dsp import DspModel

    t = np.arange(22050 * 3) / 22050
    pcm = np.round(0.3 * np.sin(2 * np.pi * 220 * t) * 32767) / 32768  # exact in 16 and 24 bits
    formats = [("wav", "PCM_16"), ("wav", "PCM_24"), ("flac", "PCM_16"), ("flac", "PCM_24"), ("aiff", "PCM_16")]
    args = ["probe", "--model", "dsp", "--control", "none", "--folds", "2", "--json"]
    for name, files in (("formats", formats), ("copies", [("wav", "PCM_16")] * 5)):
        music = tmp_path / name / "music"
        music.mkdir(parents=True)
        for i, (ext, subtype) in enumerate(files):
            sf.write(music / f"take{i}.{ext}", pcm, 22050, subtype=subtype)
        root = tmp_path / name / "store"
        store = FeatureStore(root)
        extract(store, find_audio([music]), DspModel(), WindowPolicy(window_seconds=4.0))
        run = store.run("dsp")
        assert len(store.tracks(run)) == 5 and len({t.content_hash for t in store.tracks(run)}) == 5 - 4 * (
            name == "copies")
        store.set_aspect_map(run, [("timbre", "mfcc", 0.7, 0.1)])  # a map from an earlier, real probe
        store.close()
        out = runner.invoke(app, [*args, "--store", str(root)])
        if name == "formats":
            assert out.exit_code == 0, out.output
            assert json.loads(out.stdout)["aspect_map_stored"] is False
        else:
            assert out.exit_code == 1 and "Traceback" not in out.output
            assert out.stderr.strip() == ("error: probing needs at least 4 different files, got 1 (the 5 tracks are "
                                          "copies of them)")
        kept = FeatureStore(root, readonly=True)
        assert kept.aspect_map(kept.run("dsp")) == {"timbre": "mfcc"}
        kept.close()


def test_a_probe_of_some_layers_keeps_the_map_and_report_of_every_layer(store_copy: Path, dsp_report: dict) -> None:
    """`--layers rhythm` mapped every aspect to rhythm (the best of one layer) over the full probe's map, and wrote
    over its report: `mess similar --aspect brightness` then searched the rhythm layer without a word."""
    store = FeatureStore(store_copy, readonly=True)
    run = store.run("dsp")
    full_map, full_report = store.aspect_map(run), Path(dsp_report["files"]["json"]).read_text()
    store.close()
    assert len(set(full_map.values())) > 1
    out = runner.invoke(app, ["probe", "--model", "dsp", "--layers", "rhythm", "--control", "none",
                              "--store", str(store_copy), "--json"])
    assert out.exit_code == 0, out.output
    partial = json.loads(out.stdout)
    assert partial["aspect_map_stored"] is False and "covered 1 of" in partial["aspect_map_note"]
    assert list(partial["conditions"]["trained"]["r2"]) == ["rhythm"]
    assert Path(partial["files"]["json"]).name.endswith("-partial.json") and Path(partial["files"]["json"]).is_file()
    assert Path(dsp_report["files"]["json"]).read_text() == full_report
    kept = FeatureStore(store_copy, readonly=True)
    assert kept.aspect_map(kept.run("dsp")) == full_map
    kept.close()


def test_a_file_changed_or_removed_since_extraction_is_skipped_and_its_targets_never_cached(tmp_path: Path) -> None:
    """A file replaced after extraction was probed with the new audio's targets against the old audio's vectors, and
    those targets were cached under the old content hash: once the original came back, every probe read them."""
    import soundfile as sf

    from mess.audio.discover import find_audio
    from mess.audio.windows import WindowPolicy
    from mess.models.dsp import DspModel
    from mess.probing.target_cache import cache_dir, file_targets

    changed_since, removed_since = "changed since it was extracted", "removed since it was extracted"
    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(22050 * 3) / 22050
    for i in range(7):
        tone = np.sin(2 * np.pi * 110 * (i + 2) * t) * (1 + np.sign(np.sin(2 * np.pi * (i + 1) * t)))
        sf.write(music / f"t{i}.wav", (0.2 * tone).astype(np.float32), 22050)
    root = tmp_path / "store"
    store = FeatureStore(root)
    extract(store, find_audio([music]), DspModel(), WindowPolicy(window_seconds=4.0))
    run = store.run("dsp")
    policy = run_policy(run)
    changed, removed = store.track(str(music / "t0.wav")), store.track(str(music / "t6.wav"))
    store.close()
    original = (music / "t0.wav").read_bytes()
    shutil.copy(music / "t3.wav", music / "t0.wav")  # replaced by other audio
    (music / "t6.wav").unlink()
    args = ["probe", "--model", "dsp", "--control", "none", "--folds", "2", "--store", str(root), "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["n_tracks"] == 5
    assert report["missing_tracks"] == [{"path": changed.path, "reason": changed_since},
                                        {"path": removed.path, "reason": removed_since}]
    said = " ".join(out.stderr.split())
    assert f"warning: {changed.path} {changed_since}: probed without it (`mess extract` updates the collection)" in said
    assert f"{removed.path} {removed_since}" in said and "2 of 7 tracks skipped" in said
    assert not (cache_dir(root, policy) / f"{changed.content_hash}.npz").exists()
    (music / "t0.wav").write_bytes(original)  # the original is back: its targets are its own, not t3's
    store = FeatureStore(root)
    extract(store, [music / "t0.wav"], DspModel(), policy)
    store.close()
    assert runner.invoke(app, args).exit_code == 0
    with np.load(cache_dir(root, policy) / f"{changed.content_hash}.npz") as cached:
        np.testing.assert_allclose(cached["values"], file_targets(str(music / "t0.wav"), policy.to_json())[1])


def test_a_probe_killed_between_its_report_and_its_map_is_said_by_the_maps_readers(store_copy: Path,
                                                                                   dsp_report: dict,
                                                                                   tmp_path: Path) -> None:
    """`mess probe` writes its reports, then the aspect map; killed between the two, the old map stood beside the
    new report until the next probe and nothing said so. Here the test holds the store's write lock, so a real probe
    writes its report and waits for the lock to store the map; it is killed there."""
    import os
    import signal
    import subprocess
    import sys

    from mess.cli.main import app as mess
    from mess.store.lock import StoreLock

    root = tmp_path / "store"
    shutil.copytree(store_copy, root)
    similar = ["similar", "1", "-k", "3", "--model", "dsp", "--aspect", "brightness", "--store", str(root)]
    report = Path(dsp_report["files"]["json"].replace(str(store_copy), str(root)))
    before = report.read_text()

    def note() -> str | None:
        out = runner.invoke(mess, [*similar, "--json"])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)["stale_aspect_map"]

    assert note() is None
    probe = [sys.executable, "-m", "mess.cli", "probe", "--model", "dsp", "--control", "none", "--folds", "3",
             "--store", str(root)]
    with StoreLock(root).hold("test"):
        proc = subprocess.Popen(probe, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            assert proc.stderr is not None
            waited = next((line for line in proc.stderr if "waiting for the store lock" in line), None)
            assert waited is not None, "the probe ended without waiting to store its map"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert report.read_text() != before  # the new report (3 folds, not 5), beside the old map
    want = (f"the aspect map is from an older probe than the report {report.name} (a probe stopped before storing "
            "its map): rerun `mess probe --model dsp`")
    assert note() == want
    for args in (similar, ["playlist", "radio", "1", "-n", "3", "--model", "dsp", "--aspect", "brightness",
                           "--store", str(root)]):
        out = runner.invoke(mess, args)
        assert out.exit_code == 0 and f"note: {want}" in " ".join(out.output.split()), out.output
    again = runner.invoke(app, ["probe", "--model", "dsp", "--control", "none", "--folds", "3", "--store", str(root)])
    assert again.exit_code == 0, again.output
    assert note() is None


def test_an_aspect_shuffled_targets_score_nearly_as_well_is_mapped_as_not_encoded(tmp_path: Path) -> None:
    """On 5 real soundtrack tracks dsp's spectral layer scored dynamics 0.34 and shuffled targets 0.27: the map stored
    0.34 (above ENCODED_R2), and `mess similar --aspect dynamics` ranked by that layer as if it encoded loudness."""
    import soundfile as sf

    from mess.audio.discover import find_audio
    from mess.audio.windows import WindowPolicy
    from mess.models.dsp import DspModel
    from mess.probing.probes import ProbeScores
    from mess.probing.report import ProbeReport
    from mess.probing.study import save_aspect_map
    from mess.probing.targets import TARGETS
    from mess.search.vectors import aspect_layer
    from mess.store import StoreError

    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(22050 * 2) / 22050
    for i in range(5):
        sf.write(music / f"t{i}.wav", (0.1 * (i + 1) * np.sin(2 * np.pi * 110 * (i + 1) * t)).astype(np.float32), 22050)
    store = FeatureStore(tmp_path / "store")
    extract(store, find_audio([music]), DspModel(), WindowPolicy(window_seconds=2.0))
    run = store.run("dsp")
    layers = tuple(run.layer_names)

    def scores(cells: dict[tuple[str, str], float]) -> ProbeScores:
        r2 = np.zeros((len(layers), len(TARGETS)))
        for (layer, aspect), value in cells.items():
            r2[layers.index(layer), [j for j, tt in enumerate(TARGETS) if tt.aspect == aspect]] = value
        return ProbeScores(layers, TARGET_NAMES, r2, np.zeros_like(r2))

    trained = scores({("spectral", "dynamics"): 0.34, ("rhythm", "rhythm"): 0.67})
    shuffled = scores({("rhythm", "dynamics"): 0.27, ("mfcc", "rhythm"): 0.10})
    report = ProbeReport("dsp", run.revision, run.id, {}, 5, "KFold(5)", "ridge", 1.0,
                         {"trained": trained, "shuffled": shuffled})
    assert save_aspect_map(store, run, report)
    stored = store.aspect_scores(run)
    assert stored["dynamics"] == pytest.approx(0.07) and stored["rhythm"] == pytest.approx(0.57)
    with pytest.raises(StoreError, match="encodes dynamics"):
        aspect_layer(store, run, "dynamics")
    assert aspect_layer(store, run, "rhythm") == "rhythm"
    store.close()


def test_folds_by_artist_keep_every_spelling_guest_credit_and_composer_tag_of_one_artist_together(
        tmp_path: Path) -> None:
    """Folds grouped by artist took the raw artist tag: 'Ann', 'ANN', 'Ann feat. Bo' and a track credited to Ann only
    as composer were four groups, so Ann's tracks sat on both sides of a split (the 11 composer-only tracks of
    Nikola Whallon in the widelands soundtrack were 11 groups). They are one artist, as in `mess artists`."""
    import soundfile as sf
    from mutagen.flac import FLAC

    from mess.cli.main import app as mess_app

    music = tmp_path / "music"
    music.mkdir()
    credits = [{"artist": "Ann"}, {"artist": "ANN"}, {"artist": "Ann feat. Bo"}, {"composer": "Ann"},
               {"artist": "Cy"}, {"artist": "Cy"}, {"artist": "Cy"}, {"artist": "Di"}, {"artist": "Di"},
               {"artist": "Di"}]
    t = np.arange(22050 * 2) / 22050
    for i, tags in enumerate(credits):
        path = music / f"t{i}.flac"
        sf.write(path, (0.05 * (i % 4 + 1) * np.sin(2 * np.pi * 110 * (i + 1) * t)).astype(np.float32), 22050)
        flac = FLAC(path)
        flac.update(tags)
        flac.save()
    store = tmp_path / "store"
    assert runner.invoke(mess_app, ["extract", str(music), "--model", "dsp", "--window", "2",
                                    "--store", str(store)]).exit_code == 0
    out = runner.invoke(app, ["probe", "--model", "dsp", "--control", "none", "--folds", "3", "--store", str(store),
                              "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["folds"] == "GroupKFold(3) by artist (3 groups)"


def test_probe_without_model_probes_the_model_commands_use(tmp_path: Path) -> None:
    """`mess probe` without --model (as the README's "Use it on your own music" runs it) stopped at "Missing option
    '--model'", where every other command takes the store's default model."""
    import soundfile as sf

    from mess.audio.discover import find_audio
    from mess.audio.windows import WindowPolicy
    from mess.models.dsp import DspModel

    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(22050 * 3) / 22050
    for i, hz in enumerate((110, 165, 220, 330, 440, 660)):
        sf.write(music / f"tone{i}.wav", (0.1 * (i + 1) * np.sin(2 * np.pi * hz * t)).astype(np.float32), 22050)
    store = FeatureStore(tmp_path / "store")
    extract(store, find_audio([music]), DspModel(), WindowPolicy(window_seconds=4.0))
    store.close()
    out = runner.invoke(app, ["probe", "--control", "none", "--folds", "2", "--store", str(tmp_path / "store"),
                              "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["model"] == "dsp"


def test_advice_to_probe_names_the_run_when_the_model_name_alone_picks_another(store_copy: Path,
                                                                                tmp_path: Path) -> None:
    """With two runs of dsp, `mess similar --model dsp@2 --aspect ...`, its stale-map note and the server's missing
    report said `mess probe --model dsp`, which probes the other run (the one the name picks): the advice never
    helped. They name the run now."""
    from fastapi.testclient import TestClient

    from mess.audio.windows import WindowPolicy
    from mess.cli.main import app as mess
    from mess.serve.app import create_app

    root = tmp_path / "store"
    shutil.copytree(store_copy, root)
    store = FeatureStore(root)
    first = store.run("dsp")
    paths = [Path(t.path) for t in store.tracks(first)[:5]]
    extract(store, paths, load_model("dsp"), WindowPolicy(window_seconds=10.0))  # a second run, of 5 tracks
    second = next(r for r in store.runs() if r.model == "dsp" and r.id != first.id)
    assert store.run("dsp").id == first.id and store.model_option(second) == f"dsp@{second.id}"
    assert store.model_option(first) == "dsp"
    store.close()
    similar = ["similar", paths[0].name, "-k", "2", "--model", f"dsp@{second.id}", "--aspect", "brightness",
               "--store", str(root)]
    out = runner.invoke(mess, similar)
    assert out.exit_code == 1 and f"run `mess probe --model dsp@{second.id}` first" in out.output, out.output
    with TestClient(create_app(root), base_url="http://127.0.0.1") as client:
        answer = client.get(f"/api/probe?model=dsp@{second.id}")
        assert answer.status_code == 404 and f"`mess probe --model dsp@{second.id}`" in answer.text, answer.text
    store = FeatureStore(root)
    store.set_aspect_map(second, [("brightness", "spectral", 0.9, 0.1)], n_tracks=4,
                         tracks_digest=store.tracks_digest(second))
    store.close()
    out = runner.invoke(mess, [*similar, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["stale_aspect_map"] == (f"aspect map from a probe of 4 tracks; 5 now: rerun "
                                                         f"`mess probe --model dsp@{second.id}`")


def test_a_layer_named_twice_counts_once_so_a_probe_of_some_layers_never_passes_for_all(store_copy: Path,
                                                                                        dsp_report: dict) -> None:
    """`--layers 0,mfcc,chroma,spectral` names mfcc twice: 4 names for dsp's 4 layers passed for a probe of every
    layer, so the map of 3 layers (rhythm never probed) replaced the full probe's, and its report too."""
    store = FeatureStore(store_copy, readonly=True)
    run = store.run("dsp")
    full_map, names = store.aspect_map(run), run.layer_names
    store.close()
    full_report = Path(dsp_report["files"]["json"]).read_text()
    out = runner.invoke(app, ["probe", "--model", "dsp", "--layers", f"0,{names[0]}", "--layers", ",".join(names[1:3]),
                              "--control", "none", "--store", str(store_copy), "--json"])
    assert out.exit_code == 0, out.output
    partial = json.loads(out.stdout)
    assert list(partial["conditions"]["trained"]["r2"]) == list(names[:3])
    assert partial["aspect_map_stored"] is False and f"covered 3 of {len(names)} layers" in partial["aspect_map_note"]
    assert Path(partial["files"]["json"]).name.endswith("-partial.json")
    assert Path(dsp_report["files"]["json"]).read_text() == full_report
    kept = FeatureStore(store_copy, readonly=True)
    assert kept.aspect_map(kept.run("dsp")) == full_map
    kept.close()


def test_a_track_removed_while_probing_is_a_clear_error_not_misaligned_rows(store_copy: Path, tmp_path: Path) -> None:
    """Layer rows were looked up by track id with searchsorted: a track forgotten meanwhile (`mess extract --prune`
    in another shell) shifted every row after it onto the next track's targets without a word (or raised IndexError
    for the last). The probe now stops with one line, and no report or map comes from it."""
    from mess.probing.probes import ProbeError
    from mess.probing.study import ProbeOptions, probe_run

    root = tmp_path / "store"
    shutil.copytree(store_copy, root)
    store, other = FeatureStore(root), FeatureStore(root)
    run = store.run("dsp")
    n = len(store.tracks(run))
    middle = store.tracks(run)[n // 2].path
    removed: list[int] = []

    def prune_once(stage: str, done: int, total: int) -> None:  # after the targets, as the first layer is probed
        if stage == "dsp" and not removed:
            removed.append(other.remove_tracks([middle]))

    try:
        with pytest.raises(ProbeError, match=r"^tracks of dsp were removed or extracted again while it was probed: "
                                             r"run `mess probe` again$"):
            probe_run(store, run, ProbeOptions(controls=(), workers=1), on_progress=prune_once)
        assert removed == [1]
        report = probe_run(store, run, ProbeOptions(controls=(), workers=1))  # again: the tracks there now
        assert report.n_tracks == len(store.tracks(run)) == n - 1
    finally:
        store.close()
        other.close()


def _msd_tones(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """``n`` 4 s tones of different pitch and pulse (tmp_path/music/t{i}.wav), extracted with musicnn-msd into
    tmp_path/store; (music folder, store folder)."""
    import soundfile as sf

    from mess.audio.discover import find_audio
    from mess.audio.windows import WindowPolicy

    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(16000 * 4) / 16000
    for i in range(n):
        tone = np.sin(2 * np.pi * 110 * (i + 2) * t) * (1 + np.sign(np.sin(2 * np.pi * (i + 1) * t)))
        sf.write(music / f"t{i}.wav", (0.2 * tone).astype(np.float32), 16000)
    root = tmp_path / "store"
    store = FeatureStore(root)
    extract(store, find_audio([music]), load_model("musicnn-msd"), WindowPolicy(window_seconds=4.0))
    store.close()
    return music, root


def test_the_random_init_control_leaves_a_file_changed_since_extraction_alone(tmp_path: Path) -> None:
    """The trained probe skipped a file changed since extraction, but the random-init control extracted every file on
    disk: the changed one was catalogued again under its new content, so the probed run lost the track (and the
    rows then no longer matched the targets). The twin now embeds only files as catalogued."""
    music, root = _msd_tones(tmp_path, 6)
    store = FeatureStore(root)
    changed = store.track(str(music / "t0.wav"))
    store.close()
    shutil.copy(music / "t3.wav", music / "t0.wav")  # other audio since extraction
    out = runner.invoke(app, ["probe", "--model", "musicnn-msd", "--layers", "timbral", "--control", "random-init",
                              "--folds", "2", "--workers", "1", "--store", str(root), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert "random-init" in report["conditions"], report["notes"]
    assert report["missing_tracks"] == [{"path": changed.path, "reason": "changed since it was extracted"}]
    store = FeatureStore(root, readonly=True)
    assert store.known_file(Path(changed.path))[0] == changed.content_hash  # still catalogued as extracted
    assert len(store.tracks(store.run("musicnn-msd"))) == 6
    assert len(store.tracks(store.run("musicnn-msd-random-init"))) == 5
    store.close()


def test_a_random_init_twin_of_too_few_files_on_disk_is_a_note_and_the_trained_probe_is_kept(tmp_path: Path) -> None:
    """Targets cached by an earlier probe keep tracks whose files went since in the trained probe, but the twin can
    only embed the files still there: with 3 of 5 left, `mess probe --control random-init` ended in 'error: probing
    needs at least 4 tracks, got 3' and threw the trained probe away (with none left the control was a note)."""
    music, root = _msd_tones(tmp_path, 5)
    args = ["probe", "--model", "musicnn-msd", "--layers", "timbral", "--folds", "2", "--workers", "1",
            "--store", str(root), "--json"]
    assert runner.invoke(app, [*args, "--control", "none"]).exit_code == 0  # caches every track's targets
    for i in (0, 1):
        (music / f"t{i}.wav").unlink()
    out = runner.invoke(app, [*args, "--control", "random-init"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["n_tracks"] == 5 and list(report["conditions"]) == ["trained"]
    assert report["notes"]["random-init"] == "not run: the random-init twin's probing needs at least 4 tracks, got 3"
