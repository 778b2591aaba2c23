"""What the session-33 walkthrough found and left to the files' owners: each a message that misled (a traceback, a
figure named for another, a command that fails as advised, a negative zero)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import mess_here

ENCODED = 0.3  # the docs' threshold of an encoded aspect (docs/probing.md, docs/serve.md)


@pytest.fixture(scope="module")
def fresh(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the rendered collection's store (dsp and musicnn-msd), never probed: read only."""
    root = tmp_path_factory.mktemp("left-fresh") / "store"
    shutil.copytree(extracted_store, root)
    return root


@pytest.fixture(scope="module")
def probed(extracted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the store with its dsp run probed (an aspect map stored)."""
    root = tmp_path_factory.mktemp("left-probed") / "store"
    shutil.copytree(extracted_store, root)
    out = mess_here("probe", "--model", "dsp", "--store", str(root))
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture
def one_file(rendered_collection: list[Path], tmp_path: Path) -> Path:
    """A folder holding one rendered piece."""
    folder = tmp_path / "music"
    folder.mkdir()
    shutil.copy(rendered_collection[0], folder)
    return folder


@pytest.mark.parametrize("device", ["cuda:0", "mps"])
def test_extract_on_a_device_torch_lacks_is_one_line(device: str, one_file: Path, tmp_path: Path) -> None:
    """`mess extract DIR --model musicnn-msd --device cuda:0` (or mps) on a CPU-only torch ended in torch's traceback
    ('Torch not compiled with CUDA enabled', 'PyTorch is not linked with support for mps devices'): only plain
    `cuda` was checked. It is now one line naming the device, as `mess probe --control random-init` says it."""
    import torch

    if torch.cuda.is_available() if device.startswith("cuda") else torch.backends.mps.is_available():
        pytest.skip(f"{device} is there on this machine")
    out = mess_here("extract", str(one_file), "--model", "musicnn-msd", "--device", device,
                    "--store", str(tmp_path / "store"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 and f"--device {device} asked for, but" in lines[0], out.stderr
