"""Songs MPD streams from `mess serve` (``http://HOST:PORT/api/tracks/ID/audio``, as the page's downloads and the
API's playlists name them): which track of which server, and whether that server serves this store's collection."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from mess.store import Track
from mess.store.paths import printable

_SERVED = re.compile(r"(?P<base>https?://[^/?#\s]+)/api/tracks/(?P<id>[1-9]\d*)/audio")
TIMEOUT = 10.0  # seconds to wait for the server's answer
DURATION_SLACK = 0.01  # seconds: the server's duration of a track is this store's, written as JSON


def served_track(uri: str) -> tuple[str, int] | None:
    """(the server's base URL, the track id) of a `mess serve` audio URL; None for any other URI."""
    match = _SERVED.fullmatch(uri)
    return None if match is None else (match["base"], int(match["id"]))


def served_uri(base: str, track: Track) -> str:
    """The audio URL of ``track`` on the server at ``base``."""
    return f"{base}/api/tracks/{track.id}/audio"


def served_problem(base: str, track_id: int, track: Track | None, token: str | None = None) -> str | None:
    """Why the server at ``base`` may not be taken to serve this store (``track``: this store's track ``track_id``,
    None when it has none): it cannot be reached or refuses, or its track of that id is another file (name or
    duration). None when it is the same track. ``token``: the server's, when it asks for one."""
    headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{base}/api/tracks/{track_id}", headers=headers),
                                    timeout=TIMEOUT) as answer:
            served = json.load(answer)
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code == 401:
            return f"the server at {base} asks for a token ({detail}); set MESS_TOKEN to it"
        return f"the server at {base} answered {exc.code} for track {track_id}: {detail}"
    except (OSError, ValueError) as exc:  # refused, timed out, not JSON
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return (f"cannot read track {track_id} from the server at {base} ({reason}); start its `mess serve` again, "
                "or play a file of the collection")
    name = None if track is None else printable(Path(track.path).name)
    duration = served.get("duration") if isinstance(served, dict) else None
    if track is not None and served.get("file") == name and (track.duration is None) == (duration is None) \
            and (duration is None or abs(float(duration) - float(track.duration or 0)) <= DURATION_SLACK):
        return None
    file = served.get("file") if isinstance(served, dict) else None
    return (f"the server at {base} serves another collection than this store: its track {track_id} is {file!r}, "
            f"this store's is {name!r}; give the store it serves with --store")


def _detail(exc: urllib.error.HTTPError) -> str:
    """The ``detail`` of a `mess serve` error answer, else the status's reason."""
    try:
        detail = json.loads(exc.read()).get("detail")
    except (OSError, ValueError, AttributeError):
        detail = None
    return detail if isinstance(detail, str) else str(exc.reason)
