"""Artist matrix export: cluster-ordered CSV and heatmap PNG."""

from __future__ import annotations

import csv
import io
import warnings
from functools import cache
from pathlib import Path

import numpy as np

from mess.store.paths import replace_file

LABELLED_MAX = 80  # above this many artists, tick labels are left off the heatmap
LABEL_CHARS = 40  # a longer name is cut to this many characters on the heatmap (the CSV has it whole)


def cluster_order(sim: np.ndarray) -> np.ndarray:
    """Row order that puts similar artists next to each other (average-linkage leaves)."""
    from scipy.cluster.hierarchy import leaves_list, linkage  # here: the CLI starts without scipy
    from scipy.spatial.distance import squareform

    if len(sim) < 3:
        return np.arange(len(sim))
    dist = np.clip(1.0 - (sim + sim.T) / 2, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


def write_csv(path: Path, names: list[str], sim: np.ndarray) -> None:
    """Square CSV: header row and first column are artist names; replaced whole (an interrupted write leaves the
    file before it, or none)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["artist", *names])
    for name, row in zip(names, sim, strict=False):
        writer.writerow([name, *(f"{v:.4f}" for v in row)])
    replace_file(path, text.getvalue().encode("utf-8"))


def write_heatmap(path: Path, names: list[str], sim: np.ndarray, title: str) -> str:
    """Heatmap PNG of an artist matrix, colour range from the off-diagonal values; the characters of the names that
    no installed font draws (shown as boxes), empty when none."""
    from matplotlib.figure import Figure  # no pyplot: the process's backend stays the caller's

    off = sim[~np.eye(len(sim), dtype=bool)]
    size = min(4 + 0.25 * len(names), 24)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    image = ax.imshow(sim, cmap="viridis", vmin=float(off.min()), vmax=float(off.max()))
    missing = ""
    if len(names) <= LABELLED_MAX:  # parse_math off: '$uicideboy$' is a name, not TeX ('Ke$ha $_^$' failed)
        labels = [_short(name) for name in names]
        families, missing = label_fonts(labels)
        ax.set_xticks(range(len(names)), labels, rotation=90, fontsize=8, parse_math=False, fontfamily=families)
        ax.set_yticks(range(len(names)), labels, fontsize=8, parse_math=False, fontfamily=families)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, parse_math=False)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="similarity")
    with warnings.catch_warnings():  # one warning per missing glyph and drawing: the caller says it once
        warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
        fig.tight_layout()
        png = io.BytesIO()  # whole before it is written, as the CSV
        fig.savefig(png, dpi=120, format="png")
    replace_file(path, png.getvalue())
    return missing


def label_fonts(labels: list[str]) -> tuple[list[str], str]:
    """Font families for ``labels``: matplotlib's default, then installed fonts that draw the characters it lacks
    (Japanese, Korean, Chinese names: matplotlib falls back to no other font by itself); and the characters that
    no installed font draws."""
    from matplotlib import font_manager

    default = font_manager.findfont(font_manager.FontProperties())
    lacking = {c for label in labels for c in label if c.isprintable()} - _charset(default)
    families = [font_manager.FontProperties(fname=default).get_name()]
    for font in sorted(font_manager.fontManager.ttflist, key=lambda f: f.name):
        if not lacking:
            break
        if not font.name.startswith("Last Resort") and font.name not in families and lacking & _charset(font.fname):
            families.append(font.name)
            lacking -= _charset(font.fname)
    return families, "".join(sorted(lacking))


@cache
def _charset(path: str) -> frozenset[str]:
    """The characters a font file draws."""
    from matplotlib.ft2font import FT2Font

    return frozenset(map(chr, FT2Font(path).get_charmap()))


def _short(name: str) -> str:
    """``name`` cut to :data:`LABEL_CHARS` characters: one long credit ('Berliner Philharmoniker, Herbert von
    Karajan, ...') left no room for the plot's layout, and every other label was cut off at the figure's edge."""
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1].rstrip() + "…"
