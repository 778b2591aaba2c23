"""`mess models fetch`: pins checked on local files, and the one-line offline failures (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import refusing_port

from conftest import network_waits
from mess.models.checkpoints import CHECKPOINTS
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


Reply = tuple[int, bytes, int, dict[str, str]] | tuple[int, bytes, int, dict[str, str], float]
Routes = dict[str, Reply]


@pytest.fixture()
def server() -> Iterator[tuple[str, Routes]]:
    """A local HTTP server standing in for essentia.upf.edu or the hub: path (no query) -> status, body,
    declared length (above the body's: a download cut short), headers and, optionally, seconds to wait after the
    headers before the body (a download that stalls); GET and HEAD."""
    routes: Routes = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, length, headers, *stall = routes.get(self.path.split("?")[0], (404, b"{}", 2, {}))
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(length)}.items():
                self.send_header(key, value)
            self.end_headers()
            if stall:
                self.wfile.flush()
                time.sleep(stall[0])
            if self.command == "GET":
                self.wfile.write(body)
            self.close_connection = True

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    httpd.shutdown()
    httpd.server_close()


def test_a_failed_download_leaves_nothing_behind(server: tuple[str, Routes], tmp_path: Path) -> None:
    """The graph downloads and verifies, but its JSON is missing, then cut short, then not metadata:
    each time neither file nor the folder is left; once both are right, both land and nothing else."""
    base, routes = server
    graph = bytes(range(256)) * 40
    meta = json.dumps({"schema": {"inputs": [{"name": "melspectrogram"}]}}).encode()
    files = (PinnedFile(f"{base}/m/x-1.onnx", sha256=hashlib.sha256(graph).hexdigest()),
             PinnedFile(f"{base}/m/x-1.json"))
    routes["/m/x-1.onnx"] = (200, graph, len(graph), {})
    folder = tmp_path / "models" / "x"
    with pytest.raises(FetchError, match=f"^cannot download {base}/m/x-1.json \\(HTTP 404 Not Found\\); "):
        fetch_files(files, folder)
    assert not list(tmp_path.iterdir())
    routes["/m/x-1.json"] = (200, meta[:10], len(meta), {})
    with pytest.raises(FetchError, match=f"^{base}/m/x-1.json is not Essentia model metadata .*not kept$"):
        fetch_files(files, folder)
    assert not list(tmp_path.iterdir())
    folder.mkdir(parents=True)
    routes["/m/x-1.json"] = (200, b"<html>moved</html>", 18, {})
    with pytest.raises(FetchError, match="is not Essentia model metadata"):
        fetch_files(files, folder)
    assert not list(folder.iterdir())  # a folder that was there stays, empty
    routes["/m/x-1.json"] = (200, meta, len(meta), {})
    assert fetch_files(files, folder) == [folder / "x-1.onnx", folder / "x-1.json"]
    assert sorted(p.name for p in folder.iterdir()) == ["x-1.json", "x-1.onnx"]
    assert (folder / "x-1.onnx").read_bytes() == graph


def test_unknown_name_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="choose one of discogs-effnet, .*mert-v1-95m, mert-v1-330m"):
        fetch("effnet", tmp_path)


def test_a_folder_that_is_a_file_is_named_so(tmp_path: Path) -> None:
    """`mess models fetch vggish /dev/full` (or a file) said "/dev/full: File exists"."""
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(FetchError, match=f"^cannot fetch into {tmp_path}/file: it is not a folder$"):
        fetch("vggish", tmp_path / "file")
    assert (tmp_path / "file").read_bytes() == b"x"


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env}
    return subprocess.run([sys.executable, "-m", "mess.cli", "models", "fetch", *args], capture_output=True,
                          text=True, env=environ, timeout=120)


@pytest.mark.parametrize("name", list(PRESETS))
def test_offline_essentia_fetch_is_one_line_and_leaves_nothing(name: str, tmp_path: Path) -> None:
    """With no route out (a proxy on a closed local port), one line names the URL, the cause, the
    URLs to copy and the folder, and the folders the fetch created are gone again."""
    folder = tmp_path / "models" / name
    started = time.monotonic()
    with refusing_port() as port:
        closed = f"http://127.0.0.1:{port}"
        done = _cli(name, str(folder), https_proxy=closed, HTTPS_PROXY=closed, no_proxy="", NO_PROXY="")
    assert done.returncode == 1 and time.monotonic() - started < 30
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    first, second = (f.url for f in PRESETS[name].files)
    assert f"error: cannot download {first} (Connection refused); " in done.stderr
    assert f"download {first} {second} and copy them into {folder}" in done.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["mert-v1-95m", "mert-v1-330m"])
def test_mert_fetch_with_the_hub_unreachable_fails_fast_in_one_line(name: str, tmp_path: Path,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """HF_ENDPOINT on a closed port: one line at once (not after the hub client's half minute of retries and
    warnings), naming the endpoint, the cause and the hub command; nothing is left. "At once" is counted, not
    timed (a loaded machine stretches any time): one connection attempt, no sleeping."""
    env, waits = network_waits(tmp_path_factory.mktemp("waits") / "hook")  # beside tmp_path, which must stay empty
    with refusing_port() as port:
        endpoint = f"http://127.0.0.1:{port}"
        done = _cli(name, str(tmp_path / "mert"), HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0", **env)
    assert done.returncode == 1, done.stderr
    assert waits()["connects"] == 1 and waits()["slept"] < 1, waits()
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"error: cannot fetch {CHECKPOINTS[name].repo}@{CHECKPOINTS[name].revision[:8]} " \
           f"({endpoint}: Connection refused); " in done.stderr
    assert f"--revision {CHECKPOINTS[name].revision}) and copy DIR to {tmp_path / 'mert'}" in done.stderr
    assert not list(tmp_path.iterdir())


def test_offline_mert_fetch_is_one_line(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """With HF_HUB_OFFLINE, one line at once: no connection tried, nothing slept (counted, not timed)."""
    env, waits = network_waits(tmp_path_factory.mktemp("waits") / "hook")  # beside tmp_path, which must stay empty
    done = _cli("mert-v1-95m", str(tmp_path / "mert"), HF_HUB_OFFLINE="1", **env)
    assert done.returncode == 1, done.stderr
    assert waits() == {"connects": 0, "slept": 0}, waits()
    assert done.stderr.count("\n") == 1 and "(HF_HUB_OFFLINE is set)" in done.stderr
    message = "".join(done.stderr.split())
    assert "cannotfetchm-a-p/MERT-v1-95M@12af15fe" in message and "Traceback" not in done.stderr
    assert f"copyDIRto{tmp_path / 'mert'}" in message


def test_mert_fetch_is_all_or_nothing(server: tuple[str, Routes], tmp_path: Path) -> None:
    """A local stand-in for the hub (HF_ENDPOINT) lists config.json and the weights: while the weights
    are missing the fetch fails in one line and leaves nothing; once they are there both land, alone."""
    endpoint, routes = server
    ckpt = CHECKPOINTS["mert-v1-95m"]
    files = {"config.json": b'{"hidden_size": 768}', "model.safetensors": bytes(1000)}
    routes[f"/api/models/{ckpt.repo}/tree/{ckpt.revision}"] = _hub_listing(files)
    routes[f"/{ckpt.repo}/resolve/{ckpt.revision}/config.json"] = _hub_file(files["config.json"], ckpt.revision)
    folder = tmp_path / "models" / "mert"
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}
    done = _cli("mert-v1-95m", str(folder), **env)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cannot fetch {ckpt.repo}@{ckpt.revision[:8]} (")
    assert not (tmp_path / "models").exists()
    routes[f"/{ckpt.repo}/resolve/{ckpt.revision}/model.safetensors"] = _hub_file(files["model.safetensors"],
                                                                                 ckpt.revision)
    done = _cli("mert-v1-95m", str(folder), **env)
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_bytes() for p in folder.rglob("*")} == files


def _hub_listing(files: dict[str, bytes]) -> tuple[int, bytes, int, dict[str, str]]:
    listing = json.dumps([{"type": "file", "path": name, "size": len(body), "oid": hashlib.sha1(body).hexdigest()}
                          for name, body in files.items()]).encode()
    return 200, listing, len(listing), {"Content-Type": "application/json"}


def _hub_file(body: bytes, revision: str) -> tuple[int, bytes, int, dict[str, str]]:
    return 200, body, len(body), {"X-Repo-Commit": revision, "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}


def test_a_folder_that_cannot_be_written_is_advised_another_folder_not_a_copy(server: tuple[str, Routes],
                                                                              tmp_path: Path) -> None:
    """A download that could not be written where it goes (a folder standing at its temporary name here; a
    read-only or full folder alike) was said as a failed download: "cannot download URL (...: Is a directory); on
    a machine with internet download ... and copy them into FOLDER", where copying fails the same. The cause is
    the folder's, and the advice is another folder; nothing is left."""
    base, routes = server
    graph = bytes(range(256)) * 4
    files = (PinnedFile(f"{base}/m/x-1.onnx", sha256=hashlib.sha256(graph).hexdigest()),)
    routes["/m/x-1.onnx"] = (200, graph, len(graph), {})
    folder = tmp_path / "models"
    blocker = folder / f".x-1.onnx.{os.getpid()}.part"
    blocker.mkdir(parents=True)
    with pytest.raises(FetchError) as caught:
        fetch_files(files, folder)
    assert str(caught.value) == (f"cannot write into {folder} ({blocker}: Is a directory); give `mess models fetch` "
                                 "a folder that can be written")
    assert [p.name for p in folder.iterdir()] == [blocker.name]


def test_a_file_in_the_way_of_the_folder_is_named_with_the_advice_that_fits(tmp_path: Path) -> None:
    """`mess models fetch vggish NOTES/models` with NOTES a file said "cannot fetch into NOTES/models
    (NOTES/models: Not a directory)": the file in the way is named now, and nothing is created."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    done = _cli("vggish", str(notes / "models"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (f"error: cannot fetch into {notes / 'models'}: {notes} is a file, not a folder; "
                                   "give `mess models fetch` another folder")
    assert notes.read_text() == "mine" and sorted(tmp_path.iterdir()) == [notes]
