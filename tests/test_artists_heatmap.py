"""The artist matrix's files, in-process: cluster order, CSV and heatmap PNG checked against what they must hold."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mess.artists.heatmap import LABEL_CHARS, _short, cluster_order, label_fonts, write_csv, write_heatmap


def test_cluster_order_puts_each_group_of_similar_artists_next_to_each_other() -> None:
    """Artists 0, 3, 6, 9 of group A, 1, 4, 7 of B, 2, 5, 8 of C: cosine 0.9 inside a group, 0.1 or 0.4 across."""
    groups = np.array([0, 1, 2] * 3 + [0])
    for across in (0.1, 0.4):
        noise = np.random.default_rng(0).uniform(0, 0.02, (10, 10))
        sim = np.where(groups[:, None] == groups[None, :], 0.9, across) + noise
        order = cluster_order(sim.astype(np.float32))
        assert sorted(order) == list(range(10))
        runs = [g for i, g in enumerate(groups[order]) if i == 0 or g != groups[order][i - 1]]
        assert sorted(runs) == [0, 1, 2], across  # each group one run
    assert list(cluster_order(np.eye(2))) == [0, 1] and list(cluster_order(np.eye(1))) == [0]


def test_cluster_order_of_similarities_above_one_or_not_symmetric() -> None:
    """A float32 1.0000002 is a distance of -2e-7 (clipped to 0), and a matrix that is not symmetric is read as the mean
    of both directions."""
    sim = np.array([[1, 1.0000002, 0.1, 0.2], [1.0000002, 1, 0.1, 0.2], [0.1, 0.1, 1, 0.8], [0.2, 0.2, 0.8, 1]])
    order = list(cluster_order(sim))
    assert {frozenset(order[:2]), frozenset(order[2:])} == {frozenset({0, 1}), frozenset({2, 3})}
    lopsided = np.array([[1, 0.9, 0.5], [-0.9, 1, 0.3], [0.5, 0.3, 1]])  # 0 ~ 1: 0.9 one way, -0.9 the other
    where = {artist: i for i, artist in enumerate(cluster_order(lopsided))}
    assert abs(where[0] - where[2]) == 1 and where[1] in (0, 2)  # 0 ~ 2 (0.5) the closest pair, 1 apart


def test_the_csv_holds_every_name_whole_and_every_similarity_to_four_decimals(tmp_path: Path) -> None:
    names = ["A, B & C", 'The "Quoted"', "Ünïcødé\nnewline", "x" * 60]
    sim = np.random.default_rng(1).uniform(-1, 1, (4, 4))
    path = tmp_path / "m.csv"
    write_csv(path, names, sim)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["artist", *names] and [r[0] for r in rows[1:]] == names
    np.testing.assert_allclose(np.array([r[1:] for r in rows[1:]], dtype=float), sim, atol=5e-5)
    assert all(len(v.split(".")[1]) == 4 for r in rows[1:] for v in r[1:])


@pytest.mark.parametrize(("n", "inches"), [(3, (6.25, 4.75)), (10, (8.0, 6.5)), (90, (25.5, 24.0))])
def test_the_heatmap_grows_with_the_artists_up_to_a_cap(tmp_path: Path, n: int, inches: tuple[float, float]) -> None:
    """Side 4 + 0.25 inch per artist, at most 24, and 1.5 inch more across for the colour bar, at 120 dpi."""
    sim = np.random.default_rng(n).uniform(0, 1, (n, n))
    path = tmp_path / "m.png"
    assert write_heatmap(path, [f"artist {i}" for i in range(n)], sim, "title") == ""
    with Image.open(path) as image:
        assert image.size == (round(inches[0] * 120), round(inches[1] * 120))


def test_the_heatmaps_colours_span_the_off_diagonal_values(tmp_path: Path) -> None:
    """Off the diagonal 0.2 and 0.4: the two colours are viridis' ends, whatever the diagonal's 1."""
    from matplotlib import colormaps

    sim = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.4], [0.2, 0.4, 1.0]])
    path = tmp_path / "m.png"
    write_heatmap(path, ["a", "b", "c"], sim, "t")
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    for end in (0.0, 1.0):
        colour = np.round(np.array(colormaps["viridis"](end)[:3]) * 255).astype(int)
        assert (np.abs(pixels - colour).max(axis=1) <= 2).sum() > 1000, end


def test_a_long_name_is_cut_to_the_label_width_with_an_ellipsis() -> None:
    exact = "y" * LABEL_CHARS
    assert _short(exact) == exact
    long = "Berliner Philharmoniker, Herbert von Karajan, Anne-Sophie Mutter"
    assert _short(long) == long[: LABEL_CHARS - 1].rstrip() + "…" and len(_short(long)) <= LABEL_CHARS
    assert _short("a" * (LABEL_CHARS - 2) + "  b") == "a" * (LABEL_CHARS - 2) + "…"


def test_label_fonts_of_ascii_names_are_the_default_font_alone() -> None:
    from matplotlib import font_manager

    families, missing = label_fonts(["Abc", "x y"])
    default = font_manager.FontProperties(fname=font_manager.findfont(font_manager.FontProperties())).get_name()
    assert families == [default] and missing == ""
