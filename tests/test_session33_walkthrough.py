"""A new user's walk through the README and docs on a real library: what the commands said that the docs promised
and they did not."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import mess_here
from mess.store import FeatureStore

ENCODED = 0.3  # the docs' threshold of an encoded aspect (docs/probing.md, docs/serve.md)


@pytest.fixture(scope="module")
def store(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the rendered collection's store (16 tracks, 4 composers; dsp and musicnn-msd)."""
    root = tmp_path_factory.mktemp("walk") / "store"
    shutil.copytree(extracted_store, root)
    return root


def _best(table: dict[str, dict[str, float | None]], aspect: str) -> tuple[float, str]:
    """The best layer's aspect score of one condition's layer x aspect table in the probe's JSON report."""
    return max((scores[aspect] or 0.0, layer) for layer, scores in table.items())


def beyond_shuffled(report: dict) -> dict[str, tuple[float, str]]:
    """Per aspect of a probe's JSON report: (the best layer's score less the shuffled control's best, the figure the
    aspect map stores (docs/probing.md), and that layer), computed from the report's own tables."""
    trained = report["conditions"]["trained"]["aspect_score"]
    shuffled = report["conditions"]["shuffled"]["aspect_score"]
    scores = {}
    for aspect in next(iter(trained.values())):
        score, layer = _best(trained, aspect)
        scores[aspect] = (max(0.0, score - max(0.0, _best(shuffled, aspect)[0])), layer)
    return scores


def test_probe_says_which_aspects_similar_can_use(store: Path) -> None:
    """`mess probe` said 'aspect map stored for `mess similar --aspect`' and nothing of the aspects it stored as not
    encoded: `mess similar --aspect rhythm` then refused an aspect the probe had just mapped. It now names the
    aspects the map offers (with their layer) and those it cannot, with the score it stores for them: the best
    layer's aspect score less the shuffled control's best, as the report's own tables give them."""
    out = mess_here("probe", "--model", "dsp", "--store", str(store))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    report = json.loads((store / "reports" / "probe-dsp-run1.json").read_text())
    usable, weak = [], {}
    for aspect, (beyond, layer) in beyond_shuffled(report).items():
        if beyond < ENCODED:
            weak[aspect] = beyond
        else:
            usable.append(f"{aspect} ({layer})")
    assert weak, "the rendered collection's probe maps some aspect as not encoded"
    line = " ".join(out.stderr.split())
    said = re.search(r"aspect map stored for `mess similar --aspect` and 'why': (.*?); not encoded \(best score less "
                     r"the shuffled control's below 0\.3\), so not used: (.*?) report:", line)
    assert said, line
    assert said[1] == (", ".join(usable) or "no aspect")
    assert said[2] == ", ".join(f"{a} {s:.2f}" for a, s in sorted(weak.items(), key=lambda x: -x[1]))
    refused = mess_here("similar", "1", "--model", "dsp", "--aspect", min(weak, key=weak.get), "--store", str(store))
    assert refused.returncode == 1 and "below 0.3" in refused.stderr  # what the line warned of
    answer = json.loads(mess_here("probe", "--model", "dsp", "--store", str(store), "--json").stdout)
    assert answer["weak_aspects"] == pytest.approx(weak, abs=1e-4)


def test_hybrid_names_the_components_it_leaves_out(store: Path, tmp_path: Path) -> None:
    """docs/artists.md: components with no information in the collection 'are left out and reported'. `mess
    artists hybrid` left them out of its weights and table without a word. Every rendered piece is tagged
    'classical' and no credit names a second artist, so genre and collab set no pair of artists apart here."""
    fs = FeatureStore(store, readonly=True)
    tracks = fs.tracks(fs.run("dsp"))
    fs.close()
    assert len({t.genre for t in tracks}) == 1
    assert not any(re.search(r"feat\.|ft\.|&|,| x | vs | and ", t.artist or "") for t in tracks)
    artists = sorted({t.artist for t in tracks if t.artist})
    reference = tmp_path / "similar.json"
    reference.write_text(json.dumps({a: [b for b in artists if b != a][:2] for a in artists}))
    out = mess_here("artists", "hybrid", "--reference", str(reference), "--model", "dsp", "-k", "2", "--no-save",
                    "--store", str(store))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    said = " ".join(out.stderr.split())
    assert ("note: left out of the blend, with no information in this collection: genre (the genre tags, of the "
            "tracks and --tags, set no pair of artists apart); collab (no collaborations in the credits)") in said, said
    weights = json.loads(mess_here("artists", "hybrid", "--reference", str(reference), "--model", "dsp", "-k", "2",
                                   "--no-save", "--json", "--store", str(store)).stdout)["weights"]
    assert set(weights) == {"audio", "reference"}


def test_config_usage_brackets_the_arguments_it_runs_without(store: Path) -> None:
    """`mess config --help` read 'Usage: mess config [OPTIONS] KEY VALUE', as if both were required, while `mess
    config` alone shows the settings (README: `mess config`)."""
    shown = mess_here("config", "--store", str(store))
    assert shown.returncode == 0 and "default-model = " in shown.stdout, shown.stderr
    usage = mess_here("config", "--help", env={"COLUMNS": "100"}).stdout
    assert "config [OPTIONS] [KEY] [VALUE]" in " ".join(usage.split()), usage


def test_clusters_into_a_file_names_it_before_clustering(store: Path, tmp_path: Path) -> None:
    """`mess playlist clusters -o radio.m3u8` (a playlist, not a folder) clustered the collection, then said 'cannot
    write the playlists into radio.m3u8: ...: File exists' (the system's words). It now says at once that -o takes a
    folder; the file is left as it was."""
    playlist = tmp_path / "radio.m3u8"
    playlist.write_bytes(b"#EXTM3U\nsong.flac\n")
    out = mess_here("playlist", "clusters", "--model", "dsp", "-o", str(playlist), "--store", str(store))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"error: cannot write the cluster playlists into {playlist}: it is a file, and -o " \
                                 "takes a folder"
    assert playlist.read_bytes() == b"#EXTM3U\nsong.flac\n" and out.stdout == ""


def test_export_counts_one_layer_as_one(store: Path, tmp_path: Path) -> None:
    """`mess export x.npz --layers mfcc` printed '16 tracks of 16 tracks x 1 layers of dsp'. The counts come from
    the file it wrote."""
    import numpy as np

    out = mess_here("export", str(tmp_path / "x.npz"), "--model", "dsp", "--layers", "mfcc", "--store", str(store))
    assert out.returncode == 0, out.stderr
    n = len(np.load(tmp_path / "x.npz")["track_id"])
    assert f"{n} tracks of {n} tracks x 1 layer of dsp -> " in out.stderr, out.stderr


def test_fuse_train_refusing_its_labels_prints_the_error_alone(store: Path) -> None:
    """`mess fuse train --label genre` on a collection of one genre printed an empty progress bar ('fuse dsp by genre
    0/110 0:00:00') above its error, as if training had begun."""
    fs = FeatureStore(store, readonly=True)
    genres = {t.genre for t in fs.tracks(fs.run("dsp"))}
    fs.close()
    assert len(genres) == 1  # one label: nothing to train on
    out = mess_here("fuse", "train", "--model", "dsp", "--label", "genre", "--store", str(store))
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: need at least 4 labels"), out.stderr


def test_probe_random_init_on_a_device_not_here_is_one_line(store: Path) -> None:
    """`mess probe --control random-init --device cuda` on a machine without that GPU computed every target, then
    ended in a traceback (torch's 'Torch not compiled with CUDA enabled') when it built the random-init model. The
    device asked for is one index past the GPUs torch sees, so no machine has it."""
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = mess_here("probe", "--model", "musicnn-msd", "--control", "random-init", "--device", f"cuda:{visible}",
                    "--store", str(store))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    seen = "no CUDA GPU is visible" if not visible else f"{visible} CUDA GPU(s) are visible"
    assert out.stderr.strip().splitlines()[-1] == f"error: --device cuda:{visible} asked for, but {seen}" + (
        f" (cuda:0..cuda:{visible - 1})" if visible else "")
    assert not list((store / "reports").glob("probe-musicnn-msd*"))


def test_hybrid_says_when_k_takes_every_other_artist(store: Path, tmp_path: Path) -> None:
    """`mess artists hybrid -k 10` over fewer than 11 artists reported overlap@10 and recall@10 of 1.000 for every
    row, true by construction, without the note `mess artists validate` gives for such a k; a smaller k gets none."""
    fs = FeatureStore(store, readonly=True)
    artists = sorted({t.artist for t in fs.tracks(fs.run("dsp")) if t.artist})
    fs.close()
    reference = tmp_path / "similar.json"
    reference.write_text(json.dumps({a: [b for b in artists if b != a][:2] for a in artists}))
    note = f"covers all {len(artists) - 1} other artists, so overlap@k and recall@k are 1 by construction"
    for k, noted in ((len(artists) - 1, True), (2, False)):
        out = mess_here("artists", "hybrid", "--reference", str(reference), "--model", "dsp", "-k", str(k),
                        "--no-save", "--store", str(store))
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert (note in " ".join(out.stderr.split())) is noted, (k, out.stderr)
