"""Where a run's reports go: file names made safe, a fusion checkpoint's names, a probe that stopped between files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mess.store.reports import fusion_stem, newer_probe, report_paths, slug


def test_a_slug_keeps_letters_digits_and_dot_dash_underscore_and_makes_every_other_run_one_underscore() -> None:
    assert slug("MERT-v1_95M.pt") == "MERT-v1_95M.pt"
    assert slug("/models/my model:é!") == "_models_my_model_"
    assert slug("a  //  b") == "a_b"


def test_a_fusion_stem_hashes_where_the_checkpoint_is_relative_to_a_store_that_holds_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "nets").mkdir(parents=True)
    inside = store / "nets" / "my net.pt"
    want = hashlib.sha256(b"nets/my net.pt").hexdigest()[:10]
    assert fusion_stem(store, inside) == f"fusion-my_net-{want}"
    moved = tmp_path / "moved"
    store.rename(moved)
    assert fusion_stem(moved, moved / "nets" / "my net.pt") == f"fusion-my_net-{want}"  # a moved store keeps names
    outside = tmp_path / "elsewhere" / os.fsdecode(b"caf\xe9.pt")
    want = hashlib.sha256(os.fsencode(outside.resolve())).hexdigest()[:10]  # the name's own bytes
    assert fusion_stem(moved, outside) == f"fusion-caf_-{want}"
    assert fusion_stem(moved, tmp_path / "b" / "x.pt") != fusion_stem(moved, tmp_path / "c" / "x.pt")


def test_report_paths_name_the_model_run_probe_and_a_partial_probe(tmp_path: Path) -> None:
    assert report_paths(tmp_path, "/m/MERT v1", 3, "ridge") == {
        ext: tmp_path / f"probe-_m_MERT_v1-run3.{ext}" for ext in ("json", "csv", "png")}
    assert report_paths(tmp_path, "dsp", 12, "mlp", partial=True)["csv"] == tmp_path / "probe-dsp-run12-mlp-partial.csv"
    assert report_paths(tmp_path, "dsp", 12, "ridge", partial=True)["png"] == tmp_path / "probe-dsp-run12-partial.png"


def test_a_newer_report_of_every_layer_that_mapped_aspects_is_found(tmp_path: Path) -> None:
    def write(probe: str, report: object, partial: bool = False) -> Path:
        path = report_paths(tmp_path, "dsp", 2, probe, partial=partial)["json"]
        path.write_text(json.dumps(report), encoding="utf-8")
        return path

    assert newer_probe(tmp_path, "dsp", 2, 100.0) is None  # no report at all
    ridge = write("ridge", {"probed_at": 100.0, "aspects": {"tempo": 0.5}})
    assert newer_probe(tmp_path, "dsp", 2, 100.0) is None  # the probe that made the map
    assert newer_probe(tmp_path, "dsp", 2, 99.0) == ridge
    assert newer_probe(tmp_path, "dsp", 2, None) is None  # a map of an older mess: no stamp to compare
    assert newer_probe(tmp_path, "dsp", 3, 99.0) is None  # another run's
    write("ridge", {"probed_at": 200.0, "aspects": {}})  # mapped nothing
    assert newer_probe(tmp_path, "dsp", 2, 100.0) is None
    write("ridge", ["probed_at", 200.0])
    write("ridge", {"probed_at": 200.0, "aspects": {"tempo": 0.5}}, partial=True)  # of some layers only
    mlp = write("mlp", {"probed_at": 150, "aspects": {"tempo": 0.4}})
    assert newer_probe(tmp_path, "dsp", 2, 100.0) == mlp  # the ridge report is not a report: the mlp one counts
    ridge.write_text("{cut", encoding="utf-8")
    assert newer_probe(tmp_path, "dsp", 2, 100.0) == mlp
    write("mlp", {"probed_at": "later", "aspects": {"tempo": 0.4}})
    assert newer_probe(tmp_path, "dsp", 2, 100.0) is None
