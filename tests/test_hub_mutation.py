"""mess.models.hub in-process: why a URL cannot be reached, the hub's offline switch and cache, quiet loggers.

Expected answers come from the exceptions and servers built here (a local HTTP server, a port closed on purpose) and
from a hub cache laid out by hand in huggingface_hub's documented form (models--ORG--NAME/snapshots/REV/FILE).
"""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import pytest
from huggingface_hub import constants
from ports import refusing_port
from test_onnx_fetch import Routes, server  # noqa: F401  (the fixture)

from mess.models.hub import hub_cached, hub_unreachable, offline, quiet, reason, unreachable


def test_reason_in_a_few_words() -> None:
    assert reason(urllib.error.HTTPError("http://x/", 404, "Not Found", {}, None)) == "HTTP 404 Not Found"  # type: ignore[arg-type]
    assert reason(urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))) == "Connection refused"
    assert reason(urllib.error.URLError("no host given")) == "<urlopen error no host given>"
    assert reason(FileNotFoundError(2, "No such file or directory", "/m/x")) == "/m/x: No such file or directory"
    assert reason(OSError()) == "OSError"
    assert reason(TimeoutError("timed out")) == "timed out"
    assert reason(ValueError("  first line\nsecond line")) == "first line"


def test_unreachable_is_none_for_any_answer_and_the_cause_otherwise(server: tuple[str, Routes]) -> None:  # noqa: F811
    base, routes = server
    routes["/ok"] = (200, b"", 0, {})
    assert unreachable(f"{base}/ok") is None
    assert unreachable(f"{base}/missing") is None  # 404: the endpoint is there
    with refusing_port() as port:
        assert unreachable(f"http://127.0.0.1:{port}/") == "Connection refused"
    assert unreachable("not a url") == "unknown url type: 'not a url'"


def test_hub_unreachable_names_the_offline_switch_or_the_endpoint(server: tuple[str, Routes],  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    base, _ = server
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", base)
    assert hub_unreachable() == "HF_HUB_OFFLINE is set"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub_unreachable() is None
    with refusing_port() as port:
        closed = f"http://127.0.0.1:{port}"
        monkeypatch.setattr(constants, "ENDPOINT", closed)
        assert hub_unreachable() == f"{closed}: Connection refused"


def test_hub_cached_looks_for_the_file_at_the_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    revision = "a" * 40
    snapshot = tmp_path / "models--org--net" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert hub_cached("org/net", revision)
    assert not hub_cached("org/net", revision, "model.safetensors")
    assert hub_cached("org/net", revision, "config.json")
    assert not hub_cached("org/net", "b" * 40)
    assert not hub_cached("org/other", revision)


def test_offline_switches_the_hub_client_for_the_block_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with offline():
        assert constants.HF_HUB_OFFLINE is True
    assert constants.HF_HUB_OFFLINE is False
    with offline(False):
        assert constants.HF_HUB_OFFLINE is False
    with pytest.raises(RuntimeError), offline(True):
        raise RuntimeError
    assert constants.HF_HUB_OFFLINE is False
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with offline(False):
        assert constants.HF_HUB_OFFLINE is True  # set by the user: kept
    assert constants.HF_HUB_OFFLINE is True


def test_quiet_keeps_errors_only_for_the_block() -> None:
    log = logging.getLogger("mess.test.hub.quiet")
    log.setLevel(logging.INFO)
    with quiet("mess.test.hub.quiet"):
        assert log.level == logging.ERROR
        assert not log.isEnabledFor(logging.WARNING) and log.isEnabledFor(logging.ERROR)
    assert log.level == logging.INFO
    with pytest.raises(KeyError), quiet("mess.test.hub.quiet"):
        raise KeyError
    assert log.level == logging.INFO
