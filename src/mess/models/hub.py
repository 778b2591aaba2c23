"""Network checks shared by downloads: why a URL cannot be reached, in a few words and a few seconds.

The Hugging Face client retries an unreachable hub for half a minute, logging a warning
each time; one short request first tells the user at once, in one line.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator

REACH_TIMEOUT_S = 5  # the one request that tells an unreachable hub before the download


def reason(exc: BaseException) -> str:
    """Why a request failed, in a few words: "HTTP 404 Not Found", "Connection refused", "timed out"."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    text = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)).strip()
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {text}"
    return text.splitlines()[0] if text else type(exc).__name__


def unreachable(url: str) -> str | None:
    """Why ``url`` cannot be reached ("Connection refused", "timed out"), or None when it answers at all."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=REACH_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # an answer, even 404 or 401, means the endpoint is there
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return reason(exc)
    return None


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be used now (HF_HUB_OFFLINE, or the HF_ENDPOINT's cause), found at
    once; None when it answers."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    cause = unreachable(constants.ENDPOINT)
    return f"{constants.ENDPOINT}: {cause}" if cause else None


def hub_cached(repo: str, revision: str, filename: str = "config.json") -> bool:
    """Whether ``filename`` of ``repo`` at ``revision`` lies in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename, revision=revision), str)


@contextlib.contextmanager
def offline(on: bool = True) -> Iterator[None]:
    """The hub client (and transformers through it) in offline mode while the block runs, when ``on``: once
    :func:`hub_unreachable` has answered, its user-agent registry and transformers' safetensors check each tried the
    hub again, and on a network that drops packets would each have waited out a time-out of their own."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or on
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Only errors from ``logger`` (and its children) while the block runs."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
