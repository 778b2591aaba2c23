"""Artist matrix export: cluster-ordered CSV and heatmap PNG."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

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
    """Square CSV: header row and first column are artist names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["artist", *names])
        for name, row in zip(names, sim, strict=False):
            writer.writerow([name, *(f"{v:.4f}" for v in row)])


def write_heatmap(path: Path, names: list[str], sim: np.ndarray, title: str) -> None:
    """Heatmap PNG of an artist matrix, colour range from the off-diagonal values."""
    from matplotlib.figure import Figure  # no pyplot: the process's backend stays the caller's

    off = sim[~np.eye(len(sim), dtype=bool)]
    size = min(4 + 0.25 * len(names), 24)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    image = ax.imshow(sim, cmap="viridis", vmin=float(off.min()), vmax=float(off.max()))
    if len(names) <= LABELLED_MAX:  # parse_math off: '$uicideboy$' is a name, not TeX ('Ke$ha $_^$' failed)
        labels = [_short(name) for name in names]
        ax.set_xticks(range(len(names)), labels, rotation=90, fontsize=8, parse_math=False)
        ax.set_yticks(range(len(names)), labels, fontsize=8, parse_math=False)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, parse_math=False)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="similarity")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def _short(name: str) -> str:
    """``name`` cut to :data:`LABEL_CHARS` characters: one long credit ('Berliner Philharmoniker, Herbert von
    Karajan, ...') left no room for the plot's layout, and every other label was cut off at the figure's edge."""
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1].rstrip() + "…"
