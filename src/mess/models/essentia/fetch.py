"""`mess models fetch`: download a preset's files (checked against pins) or a MERT snapshot into a folder.

Nothing here runs at import time or in tests against the network; offline, each fetch
fails with one line naming what to copy where, and a failed fetch leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mess.models.base import FILE_REVISION
from mess.models.checkpoints import CHECKPOINTS
from mess.models.essentia.presets import PRESETS, PinnedFile
from mess.models.hub import hub_unreachable, quiet, reason

if TYPE_CHECKING:
    import onnx

TIMEOUT_S = 30
ANOTHER_FOLDER = "give `mess models fetch`"  # the advice where the folder is the cause: its FOLDER argument


class FetchError(Exception):
    """A download that failed or did not match its pin; the message is one line."""


def fetchable() -> tuple[str, ...]:
    """Every name `mess models fetch` accepts: the Essentia presets and the MERT checkpoints."""
    return (*PRESETS, *CHECKPOINTS)


def fetch(name: str, folder: Path) -> list[Path]:
    """Fetch the files of ``name`` (a preset or a MERT checkpoint) into ``folder``; return what lies there."""
    folder = Path(folder).expanduser()
    if name in PRESETS:
        return fetch_files(PRESETS[name].files, folder)
    if name in fetchable():
        return _fetch_mert(name, folder)
    raise FetchError(f"unknown model {name!r}; choose one of {', '.join(fetchable())}")


def fetch_files(files: tuple[PinnedFile, ...], folder: Path) -> list[Path]:
    """Download each of ``files`` into ``folder``, keeping copies already there that match their pins.

    All or nothing: each download goes to a temporary name in ``folder`` and takes its own name only
    once every file is complete and verified; a failure leaves nothing behind.
    """
    _in_the_way(folder / pinned.name for pinned in files)
    with _all_or_nothing(folder) as temps:
        downloaded: dict[Path, Path] = {}
        for pinned in files:
            target = folder / pinned.name
            if target.is_file():
                verify(target, pinned)
                continue
            temp = folder / f".{pinned.name}.{os.getpid()}.part"
            _download(pinned, temp, files, folder)
            temps.append(temp)  # only once it is ours: a folder of the user's at that name is not removed
            downloaded[temp] = target
        for temp, target in downloaded.items():
            temp.replace(target)
    return [folder / pinned.name for pinned in files]


def _in_the_way(targets: Iterable[Path]) -> None:
    """Refuse a folder standing at the name of a file to be written, before any download or move (the rename over it
    failed at the end, naming the temporary file)."""
    for target in targets:
        if target.is_dir() and not target.is_symlink():  # a link is replaced, as a file is
            raise FetchError(f"cannot write {target}: a folder stands there ({os.strerror(errno.EISDIR)}); move it "
                             f"away or {ANOTHER_FOLDER} another folder")


def verify(path: Path, pinned: PinnedFile) -> None:
    """Check ``path`` against its pin (SHA-256, else byte size, else that it parses as JSON metadata).

    Raises:
        FetchError: the file differs from the pin, naming the file and both values.
    """
    problem = _mismatch(path, pinned)
    if problem:
        raise FetchError(f"{path} {problem}; delete it and fetch again")


def _mismatch(path: Path, pinned: PinnedFile) -> str | None:
    """How ``path`` differs from its pin ("has 10 bytes, expected 12 for X.json"), or None if it matches."""
    if pinned.sha256 is not None:
        actual = file_sha256(path)
        if actual != pinned.sha256:
            return (f"has SHA-256 {actual[:16]}..., expected {pinned.sha256[:16]}... "
                    f"(a different or damaged {pinned.name})")
    elif pinned.size is not None:
        if path.stat().st_size != pinned.size:
            return f"has {path.stat().st_size} bytes, expected {pinned.size} for {pinned.name}"
    else:
        try:
            json.loads(path.read_text())["schema"]["inputs"]
        except (ValueError, KeyError, TypeError) as exc:
            return f"is not Essentia model metadata ({exc!r})"
    return None


def _download(pinned: PinnedFile, temp: Path, group: tuple[PinnedFile, ...], folder: Path) -> None:
    """Download ``pinned`` into ``temp`` and check it against its pin; failures name the URL and the cause (the
    folder where it cannot be written), and remove ``temp`` where it was opened."""
    def offline(exc: BaseException) -> FetchError:
        urls = " ".join(p.url for p in group)
        return FetchError(f"cannot download {pinned.url} ({reason(exc)}); on a machine with internet download "
                          f"{urls} and copy them into {folder}")

    def unwritable(exc: OSError) -> FetchError:  # this machine's side (a folder not writable, a full disk)
        return FetchError(f"cannot write into {folder} ({reason(exc)}); {ANOTHER_FOLDER} a folder that can be "
                          "written")

    try:
        out = temp.open("wb")
    except OSError as exc:  # not the network's
        raise unwritable(exc) from exc
    try:
        with out:
            try:
                response = urllib.request.urlopen(pinned.url, timeout=TIMEOUT_S)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise offline(exc) from exc
            with response:
                while True:
                    try:
                        chunk = response.read(1 << 20)
                    except (OSError, http.client.HTTPException, ValueError) as exc:
                        raise offline(exc) from exc
                    if not chunk:
                        break
                    out.write(chunk)
        if problem := _mismatch(temp, pinned):
            raise FetchError(f"{pinned.url} {problem}; the download was not kept")
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # writing (a full disk), not reading: the network's are FetchErrors above
            raise unwritable(exc) from exc
        raise


@contextlib.contextmanager
def _all_or_nothing(folder: Path) -> Iterator[list[Path]]:
    """Create ``folder`` (and missing parents) for a fetch that records its temporaries in the list yielded.

    The temporaries are always removed; on a failure so are the folders created here (where empty),
    and an OSError becomes a one-line FetchError.
    """
    if folder.exists() and not folder.is_dir():  # mkdir said "File exists"
        raise FetchError(f"cannot fetch into {folder}: it is not a folder")
    broken = next((p for p in (folder, *folder.parents) if p.is_symlink() and not p.exists()), None)
    if broken is not None:  # mkdir said "File exists" of a link to nothing
        raise FetchError(f"cannot fetch into {folder}: {broken} is a link to {os.readlink(broken)}, which does not "
                         f"exist (or links back); create that folder or {ANOTHER_FOLDER} another folder")
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    above = next((p for p in folder.parents if p.exists()), None)
    if above is not None and not above.is_dir():  # mkdir said "folder: Not a directory", of the folder to be made
        raise FetchError(f"cannot fetch into {folder}: {above} is a file, not a folder; {ANOTHER_FOLDER} another "
                         "folder")
    temps: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield temps
    except BaseException as exc:
        _remove(temps)
        for path in created:
            with contextlib.suppress(OSError):
                path.rmdir()
        if isinstance(exc, OSError):
            raise FetchError(f"cannot fetch into {folder} ({reason(exc)})") from exc
        raise
    _remove(temps)


def _remove(temps: list[Path]) -> None:
    """Delete a fetch's temporary files and folders."""
    for temp in temps:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)


def _fetch_mert(name: str, folder: Path) -> list[Path]:
    """``snapshot_download`` of a MERT checkpoint at its pinned revision into ``folder``.

    The snapshot downloads into a temporary folder inside ``folder`` and its files move into
    place only once all have arrived; a failure leaves nothing behind. Offline it fails at once:
    HF_HUB_OFFLINE is honoured and an unreachable hub endpoint (HF_ENDPOINT) is found with one
    short request, not the client's minute of retries, whose warnings are silenced.
    """
    from huggingface_hub import snapshot_download

    ckpt = CHECKPOINTS[name]
    hint = (f"on a machine with internet run `mess models fetch {name} DIR` (or huggingface-cli download "
            f"{ckpt.repo} --revision {ckpt.revision}) and copy DIR to {folder}")
    cause = hub_unreachable()
    if cause:
        raise FetchError(f"cannot fetch {ckpt.repo}@{ckpt.revision[:8]} ({cause}); {hint}")
    with _all_or_nothing(folder) as temps:
        temps.append(Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}-", suffix=".part")))
        try:
            with quiet("huggingface_hub"):
                snapshot_download(ckpt.repo, revision=ckpt.revision, local_dir=temps[0])
        except Exception as exc:  # the hub client raises many types (offline mode, HTTP, DNS); all mean "not fetched"
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise FetchError(f"cannot fetch {ckpt.repo}@{ckpt.revision[:8]} ({why}); {hint}") from exc
        return _move_into(temps[0], folder)


def _move_into(snapshot: Path, folder: Path) -> list[Path]:
    """Move a complete snapshot's files (not the hub client's .cache) into ``folder``; return where they lie."""
    files = [path for path in sorted(snapshot.rglob("*"))
             if path.is_file() and path.relative_to(snapshot).parts[0] != ".cache"]
    _in_the_way(folder / path.relative_to(snapshot) for path in files)
    moved = []
    for path in files:
        target = folder / path.relative_to(snapshot)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        moved.append(target)
    return moved


def file_revision(path: Path) -> str:
    """An ``.onnx`` model's revision: ``sha256:`` and the first 16 hex digits of the file's SHA-256, or where its
    weights lie in external data files, of the file's and theirs (the graph alone stayed the same as they changed)."""
    digest = file_sha256(path)
    data = external_data(path)
    if data:
        digest = hashlib.sha256(" ".join([digest, *(file_sha256(f) for f in data)]).encode()).hexdigest()
    return f"{FILE_REVISION}{digest[:16]}"


def external_data(path: Path) -> list[Path]:
    """The external data files an ``.onnx`` graph keeps tensors in, in order, those not there left out (ONNX Runtime
    refuses the graph then); none for a file that is no graph."""
    return [f for f in (path.parent / place for place in sorted(external_places(path))) if f.is_file()]


def external_places(path: Path) -> set[str]:
    """Where an ``.onnx`` graph says its external data files lie, relative to it, there or not; none for a file that is
    no graph."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # protobuf's DecodeError and others: opening the session says what is wrong with the file
        return set()
    return {str(entry.value) for tensor in _tensors(graph) if tensor.data_location == onnx.TensorProto.EXTERNAL
            for entry in tensor.external_data if entry.key == "location"}


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of an ONNX graph: its initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
