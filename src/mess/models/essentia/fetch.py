"""`mess models fetch`: download a preset's files (checked against pins) or a MERT snapshot into a folder.

Nothing here runs at import time or in tests against the network; offline, each fetch
fails with one line naming what to copy where.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from mess.models.essentia.presets import PRESETS, PinnedFile

TIMEOUT_S = 30


class FetchError(Exception):
    """A download that failed or did not match its pin; the message is one line."""


def fetchable() -> tuple[str, ...]:
    """Every name `mess models fetch` accepts: the Essentia presets and the MERT checkpoints."""
    from mess.models.mert import CHECKPOINTS

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
    """Download each of ``files`` into ``folder``, keeping copies already there that match their pins."""
    folder.mkdir(parents=True, exist_ok=True)
    return [_fetch_file(pinned, folder, files) for pinned in files]


def verify(path: Path, pinned: PinnedFile) -> None:
    """Check ``path`` against its pin (SHA-256, else byte size, else that it parses as JSON metadata).

    Raises:
        FetchError: the file differs from the pin, naming the file and both values.
    """
    if pinned.sha256 is not None:
        actual = file_sha256(path)
        if actual != pinned.sha256:
            raise FetchError(f"{path} has SHA-256 {actual[:16]}..., expected {pinned.sha256[:16]}... "
                             f"(a different or damaged {pinned.name}); delete it and fetch again")
    elif pinned.size is not None:
        if path.stat().st_size != pinned.size:
            raise FetchError(f"{path} has {path.stat().st_size} bytes, expected {pinned.size} for {pinned.name}; "
                             "delete it and fetch again")
    else:
        try:
            json.loads(path.read_text())["schema"]["inputs"]
        except (ValueError, KeyError, TypeError) as exc:
            raise FetchError(f"{path} is not Essentia model metadata ({exc!r})") from exc


def _fetch_file(pinned: PinnedFile, folder: Path, group: tuple[PinnedFile, ...]) -> Path:
    """Download ``pinned`` into ``folder`` unless a verified copy is there; verify before it takes its name."""
    target = folder / pinned.name
    if target.is_file():
        verify(target, pinned)
        return target
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(pinned.url, timeout=TIMEOUT_S) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        urls = " ".join(p.url for p in group)
        raise FetchError(f"cannot download {pinned.name} ({getattr(exc, 'reason', exc)}); on a machine with "
                         f"internet download {urls} and copy them into {folder}") from exc
    try:
        verify(partial, pinned)
    except FetchError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


def _fetch_mert(name: str, folder: Path) -> list[Path]:
    """``snapshot_download`` of a MERT checkpoint at its pinned revision into ``folder``."""
    from huggingface_hub import snapshot_download

    from mess.models.mert import CHECKPOINTS

    ckpt = CHECKPOINTS[name]
    try:
        snapshot_download(ckpt.repo, revision=ckpt.revision, local_dir=folder)
    except Exception as exc:  # the hub client raises many types (offline mode, HTTP, DNS); all mean "not fetched"
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise FetchError(f"cannot fetch {ckpt.repo}@{ckpt.revision[:8]} ({reason}); on a machine with internet run "
                         f"`mess models fetch {name} DIR` (or huggingface-cli download {ckpt.repo} --revision "
                         f"{ckpt.revision}) and copy DIR to {folder}") from exc
    return sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
