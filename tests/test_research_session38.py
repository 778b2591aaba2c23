"""Session 38, a researcher's walkthrough: figures checked against independent computations (scikit-learn, numpy on
the definitions), and the messages of bad targets files."""

from __future__ import annotations

from pathlib import Path

from mess.store import FeatureStore


def test_a_target_not_probed_counts_its_tracks_and_says_why(extracted_store: Path, tmp_path: Path) -> None:
    """A label column every track shares said "tracks 0" (30 in the file); a column with no value at all said "no
    track with a value has vectors", as if the store lacked them."""
    from mess.probing.study import ProbeOptions
    from mess.probing.user_probe import probe_targets
    from mess.probing.user_targets import read_targets

    store = FeatureStore(extracted_store, readonly=True)
    try:
        run = store.run("dsp")
        ids = [t.id for t in store.tracks(run)]
        (tmp_path / "t.csv").write_text("id,source,blank\n" + "".join(f"{i},render,nan\n" for i in ids))
        report = probe_targets(store, run, read_targets(store, tmp_path / "t.csv"), ProbeOptions(seed=0))
    finally:
        store.close()
    info = {t.name: t for t in report.targets}
    assert (info["source"].n_tracks, info["source"].folds) == (len(ids), "not probed: every track has one label")
    assert info["blank"].n_tracks == 0
    assert info["blank"].folds == "not probed: no value (every cell of the column is empty or nan)"
