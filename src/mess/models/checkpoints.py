"""The MERT checkpoints mess knows, pinned to hub commits (no torch or transformers import, so fetch starts fast)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HubCheckpoint:
    """A MERT checkpoint on the Hugging Face hub at a pinned commit."""

    repo: str
    revision: str


CHECKPOINTS = {
    "mert-v1-95m": HubCheckpoint("m-a-p/MERT-v1-95M", "12af15fef9d0ac838c3f475bfbbf26d2060dd4f5"),
    "mert-v1-330m": HubCheckpoint("m-a-p/MERT-v1-330M", "0e06c986db0527c0fd1b47181c40f006805e3de0"),
}
