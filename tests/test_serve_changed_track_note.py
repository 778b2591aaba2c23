"""`GET /api/tracks/{id}/similar` of a track whose file was overwritten by other audio since extraction answers from
the vectors of what the file held before: `mess similar ID` warns so ("answering from what it held then"), the API's
answer said nothing. Its ``notes`` now say it, naming the file without its folder; a file only touched (same audio)
and an unchanged one get no such note, as the CLI (``resolve_query``'s warnings, the independent check here) says.

A real dsp store of rendered tones in ``tmp_path``; the app in-process."""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path

from fastapi.testclient import TestClient
from test_store_faults import _tones

from mess.audio.windows import WindowPolicy
from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.query import resolve_query
from mess.serve.app import create_app
from mess.store import FeatureStore


def test_similar_of_a_track_whose_file_changed_says_it_answers_from_its_stored_vectors(tmp_path: Path) -> None:
    paths = _tones(tmp_path / "music", 4)
    with closing(FeatureStore(tmp_path / "store")) as store:
        extract(store, paths, DspModel(), WindowPolicy(4.0, 3))
        changed, touched, same = (store.track(p) for p in paths[:3])
    os.utime(touched.path, (1_000_000_000, 1_000_000_000))  # the same audio, another stamp
    _tones(tmp_path / "other", 1, offset=5)[0].replace(changed.path)  # another song written over it
    with closing(FeatureStore(tmp_path / "store", readonly=True)) as store:
        run = store.run("dsp")
        cli: dict[int, list[str]] = {}
        for track in (changed, touched, same):
            resolve_query(store, str(track.id), run, on_warning=cli.setdefault(track.id, []).append)
    assert [len(cli[t.id]) for t in (changed, touched, same)] == [1, 0, 0], cli
    with TestClient(create_app(tmp_path / "store"), base_url="http://127.0.0.1") as client:
        answers = {t.id: client.get(f"/api/tracks/{t.id}/similar", params={"k": 2}) for t in (changed, touched, same)}
    for answer in answers.values():
        assert answer.status_code == 200, answer.text
    notes = answers[changed.id].json()["notes"]
    said = [n for n in notes if "changed since it was extracted" in n]
    assert len(said) == 1, notes
    assert Path(changed.path).name in said[0] and str(tmp_path) not in said[0], said
    assert "answering from what it held then" in said[0], said
    for track in (touched, same):
        assert not any("changed" in n for n in answers[track.id].json()["notes"]), answers[track.id].json()["notes"]
