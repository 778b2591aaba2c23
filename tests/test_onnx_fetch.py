"""`mess models fetch`: pins checked on local files, and the one-line offline failures (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mess.models.essentia.fetch import FetchError, fetch, fetch_files, verify
from mess.models.essentia.presets import PRESETS, PinnedFile

URL = "https://essentia.upf.edu/models/feature-extractors/discogs-effnet/"


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "discogs-effnet-bsdynamic-1.onnx"
    path.write_bytes(bytes(range(256)) * 40)
    return path


def test_verify_checks_sha256_then_size_then_json(weights: Path) -> None:
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    verify(weights, PinnedFile(URL + weights.name, sha256=digest, size=1))  # the digest wins over the size
    verify(weights, PinnedFile(URL + weights.name, size=10240))
    data = bytearray(weights.read_bytes())
    data[5000] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(FetchError, match=f"{weights} has SHA-256 .* expected {digest[:16]}"):
        verify(weights, PinnedFile(URL + weights.name, sha256=digest))
    with pytest.raises(FetchError, match="has 10240 bytes, expected 10241"):
        verify(weights, PinnedFile(URL + weights.name, size=10241))
    meta = weights.with_suffix(".json")
    meta.write_text(json.dumps({"schema": {"inputs": [{"name": "melspectrogram"}]}}))
    verify(meta, PinnedFile(URL + meta.name))
    meta.write_text("<html>not found</html>")
    with pytest.raises(FetchError, match="is not Essentia model metadata"):
        verify(meta, PinnedFile(URL + meta.name))


def test_files_already_in_place_are_verified_not_downloaded(weights: Path) -> None:
    pinned = PinnedFile(URL + weights.name, sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    assert fetch_files((pinned,), weights.parent) == [weights]
    weights.write_bytes(b"truncated")
    with pytest.raises(FetchError, match="delete it and fetch again"):
        fetch_files((pinned,), weights.parent)


def test_every_preset_file_is_pinned_or_checked_as_metadata() -> None:
    for preset in PRESETS.values():
        assert [f.name.rsplit(".", 1)[1] for f in preset.files] == ["onnx", "json"]
        onnx = preset.files[0]
        assert onnx.sha256 is not None or onnx.size is not None, preset.name
        assert onnx.sha256 is None or len(onnx.sha256) == 64


def test_unknown_name_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="choose one of discogs-effnet, .*mert-v1-95m, mert-v1-330m"):
        fetch("effnet", tmp_path)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env}
    return subprocess.run([sys.executable, "-m", "mess.cli", "models", "fetch", *args], capture_output=True,
                          text=True, env=environ, timeout=120)


def test_offline_essentia_fetch_says_what_to_copy_where(tmp_path: Path) -> None:
    """With no route out (a proxy on a closed local port), one line names the URLs and the folder."""
    closed = "http://127.0.0.1:9"
    done = _cli("discogs-effnet", str(tmp_path / "models"), https_proxy=closed, HTTPS_PROXY=closed, no_proxy="",
                NO_PROXY="")
    assert done.returncode == 1
    message = "".join(done.stderr.split())  # the console wraps the line at the terminal width
    assert "cannotdownloaddiscogs-effnet-bsdynamic-1.onnx" in message
    assert f"{URL}discogs-effnet-bsdynamic-1.onnx{URL}discogs-effnet-bsdynamic-1.json" in message
    assert f"copytheminto{tmp_path / 'models'}" in message and "Traceback" not in done.stderr
    assert not list((tmp_path / "models").iterdir())


def test_offline_mert_fetch_is_one_line(tmp_path: Path) -> None:
    done = _cli("mert-v1-95m", str(tmp_path / "mert"), HF_HUB_OFFLINE="1")
    assert done.returncode == 1
    message = "".join(done.stderr.split())
    assert "cannotfetchm-a-p/MERT-v1-95M@12af15fe" in message and "Traceback" not in done.stderr
    assert f"copyDIRto{tmp_path / 'mert'}" in message
