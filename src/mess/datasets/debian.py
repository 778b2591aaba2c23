"""Fetch a Debian package's files without installing it: ``apt-get download`` then ``dpkg -x``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class FetchError(Exception):
    """The package could not be downloaded or unpacked."""


def unpack_package(package: str, work_dir: Path) -> Path:
    """Download ``package`` into ``work_dir`` and unpack it there; return the unpacked root folder.

    Raises :class:`FetchError` where apt-get or dpkg is missing or either step fails.
    """
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise FetchError(f"{tool} is not available: fetching {package} needs Debian or Ubuntu")
    work_dir.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", "download", package], cwd=work_dir, capture_output=True, text=True)
    debs = sorted(work_dir.glob(f"{package}_*.deb"))
    if got.returncode != 0 or not debs:
        raise FetchError(f"apt-get download {package} failed (try apt-get update first): {got.stderr.strip()[-300:]}")
    root = work_dir / f"{package}-root"
    unpacked = subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], capture_output=True, text=True)
    if unpacked.returncode != 0:
        raise FetchError(f"dpkg -x {debs[0].name} failed: {unpacked.stderr.strip()[-300:]}")
    debs[0].unlink()
    return root
