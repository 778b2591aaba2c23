"""The learned head: training on real extracted vectors, the shipped weights, and `--learned` end to end."""

from __future__ import annotations

import json
import re
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mess.cli.main import app
from mess.fusion.head import HeadConfig, fit_head, lda_head, load_head_data, pca_head
from mess.fusion.head_eval import bootstrap, score_logo
from mess.models.head import Head, HeadError, shipped_head, shipped_head_path
from mess.search.evaluate import track_labels
from mess.store import FeatureStore

MODEL = "musicnn-msd"


@pytest.fixture(scope="module")
def musicnn_store(extracted_store: Path) -> Path:
    """The session's store: musicnn-msd (and dsp) vectors of the rendered collection (4 composers x 4 pieces)."""
    return extracted_store


@pytest.fixture(scope="module")
def head_data(musicnn_store: Path):  # noqa: ANN201 - HeadData
    """musicnn-msd vectors of the rendered collection, labelled by composer."""
    with closing(FeatureStore(musicnn_store, readonly=True)) as store:
        run = store.run(MODEL)
        return load_head_data(store, run, track_labels(store.tracks(run), "artist"))


def test_trained_head_beats_its_pca_start_on_held_out_composers(head_data, one_torch_thread) -> None:  # noqa: ANN001
    config = HeadConfig(dims=12, anchor=0.1)
    start = score_logo("pca", head_data, lambda d, r: pca_head(d, r, config.dims))
    trained = score_logo("learned", head_data, lambda d, r: fit_head(d, r, config))
    assert trained.ap.mean() >= start.ap.mean() + 0.03, (trained.ap.mean(), start.ap.mean())


def test_head_save_load_and_transform_agree(head_data, tmp_path: Path, one_torch_thread) -> None:  # noqa: ANN001
    rows = np.arange(len(head_data.labels))
    head = fit_head(head_data, rows, HeadConfig(dims=8, hidden=16, steps=5))
    again = Head.load(head.save(tmp_path / "h.npz"))
    out = again.transform(head_data.x)
    assert out.shape == (len(rows), 8)
    np.testing.assert_allclose(out, head.transform(head_data.x), rtol=1e-5, atol=1e-5)
    # a linear head's output on the mean of a track's windows is the mean of its windows' outputs
    lda = lda_head(head_data, rows, 8)
    seg = head_data.seg_x[head_data.seg_row == 0]
    np.testing.assert_allclose(lda.transform(seg.mean(axis=0)), lda.transform(seg).mean(axis=0, keepdims=True),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(HeadError, match="trained on"):
        again.check("dsp", head.layer_names, head.layer_dims)


def test_shipped_head_matches_the_model_and_records_its_figures() -> None:
    from mess.models.registry import load_model

    head = shipped_head(MODEL)
    info = load_model(MODEL).info
    head.check(info.name, info.layer_names, info.layer_dims)
    meta = head.meta
    assert re.fullmatch(r"[0-9a-f]{64}", meta["data_hash"])
    logo = meta["leave_one_label_out"]
    assert logo["queries"] == meta["tracks"] and len(logo["labels"]) == 6
    for iv in [logo["map"], logo["p@5"], logo["ndcg@10"], *logo["map_ratio"].values()]:
        assert iv["low"] <= iv["mean"] <= iv["high"]
    chosen = {"pca": "PCA start", "lda": "LDA", "learned": "learned head"}[meta["method"]]
    assert logo["chosen_from"][chosen] == pytest.approx(logo["map"]["mean"])
    assert logo["map"]["mean"] == max(logo["chosen_from"].values())
    assert shipped_head_path(MODEL).stat().st_size < 4 * 2**20


def test_bootstrap_interval_covers_the_mean_and_pairs_queries() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(200)
    iv = bootstrap(base * 1.5, base)
    assert iv.low == pytest.approx(1.5) and iv.high == pytest.approx(1.5)  # paired: every resample gives 1.5
    one = bootstrap(base)
    assert one.low < base.mean() < one.high


def test_learned_vectors_end_to_end(musicnn_store: Path, rendered_collection: list[Path], tmp_path: Path) -> None:
    import soundfile as sf

    runner = CliRunner()
    common = ["--store", str(musicnn_store), "--model", MODEL, "--json"]
    ev = runner.invoke(app, ["evaluate", *common, "--plot", str(tmp_path / "ev.png")])
    assert ev.exit_code == 0, ev.output
    sets = {s["name"]: s for s in json.loads(ev.output)["sets"]}
    assert "learned" in sets and sets["learned"]["scores"]["map"] > 0
    source = rendered_collection[5]
    audio, rate = sf.read(source)
    query = tmp_path / "excerpt.wav"  # not in the collection: embedded on the fly, then through the head
    sf.write(query, audio[2 * rate:17 * rate], rate)
    sim = runner.invoke(app, ["similar", str(query), "-k", "3", "--learned", *common])
    assert sim.exit_code == 0, sim.output
    out = json.loads(sim.output)
    assert out["vectors"] == "learned" and out["query"]["external"] and len(out["results"]) == 3
    assert Path(out["results"][0]["path"]).name == source.name
    bad = runner.invoke(app, ["similar", "1", "--learned", "--fused", *common])
    assert bad.exit_code != 0 and "at most one" in bad.output


def test_serve_answers_learned_like_the_library(musicnn_store: Path) -> None:
    from fastapi.testclient import TestClient

    from mess.query import resolve_query
    from mess.search.query import similar_tracks
    from mess.serve.app import create_app

    with closing(FeatureStore(musicnn_store, readonly=True)) as store:
        run = store.run(MODEL)
        tid = store.tracks(run)[3].id
        want = [n.track.id for n in similar_tracks(store, run, resolve_query(store, tid, run), 5, learned=True)]
    with TestClient(base_url="http://127.0.0.1", app=create_app(musicnn_store)) as client:
        got = client.get(f"/api/tracks/{tid}/similar", params={"learned": True, "k": 5}).json()
        both = client.get(f"/api/tracks/{tid}/similar", params={"learned": True, "fused": True})
    assert got["vectors"] == "learned" and [r["id"] for r in got["results"]] == want
    assert both.status_code == 400 and "at most one" in both.json()["detail"]
