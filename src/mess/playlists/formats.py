"""Playlist files: extended M3U8 and XSPF, written and read; the format follows the file extension.

Tracks inside the playlist's folder are written with relative paths (so a playlist saved
beside the music keeps working when the folder moves or is mounted elsewhere), and so are the tracks of a playlist
written anywhere inside its music tree (:func:`music_root`: the outermost folder `mess extract` was given that holds
the playlist, ``Music/Playlists/mix.m3u8`` names ``../Artist/a.ogg``) that lie in that tree, on the playlist's file
system; others with absolute paths (M3U8) or file:// URIs
(XSPF), as are all of a playlist written through a symbolic link into another folder (relative entries would name
other files opened through the link than without it). File names round-trip byte for byte, also when they are not
valid UTF-8; tags are cleaned of characters a reader would choke on.
"""

from __future__ import annotations

import codecs
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes, urlparse

from mess.constants import file_title
from mess.playlists.playlist import Playlist, PlaylistError
from mess.store import Track
from mess.store.paths import displayable, one_line, replace_file, replace_files, resolved

FORMATS = {".m3u8": "m3u8", ".m3u": "m3u8", ".xspf": "xspf"}
XSPF_NS = "http://xspf.org/ns/0/"
_CLUSTER_FILE = re.compile(r"\d{2,}-(?P<slug>[\w-]+)\.(?:m3u8|xspf)")  # the names write_cluster_folder gives
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # a URI's scheme and its colon (RFC 3986, 3.1)
CLUSTER_LIST = ".mess-clusters"  # in a clusters folder: the names of the playlists the last run wrote, one a line


def format_named(fmt: str) -> str:
    """The format ``fmt`` names: 'm3u8' (also as 'm3u', as the .m3u extension is) or 'xspf'; PlaylistError
    naming the choices otherwise."""
    named = FORMATS.get(f".{fmt}")
    if named is None:
        raise PlaylistError(f"unknown playlist format {fmt!r}; use m3u8 (or m3u) or xspf")
    return named


def playlist_format(path: Path) -> str:
    """'m3u8' or 'xspf' from the extension; PlaylistError naming the choices otherwise."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise PlaylistError(f"unknown playlist extension {Path(path).suffix or '(none)'!r} of {path}; "
                            "use .m3u8 or .xspf")
    return fmt


Locate = Callable[[Track], str]


def music_tree(paths: Iterable[str]) -> Path | None:
    """The deepest folder holding every file of ``paths`` (a collection's), None when there are none or only the
    file system's root holds them all."""
    folders = [os.path.dirname(p) for p in paths]
    tree = Path(os.path.commonpath(folders)) if folders else None
    return None if tree is None or tree == Path(tree.anchor) else tree


def collection_roots(recorded: Sequence[str], paths: Iterable[str]) -> list[str]:
    """The folders a playlist's relative entries may stay within: those extractions were given (``recorded``, see
    :meth:`~mess.store.FeatureStore.extract_roots`), else, in a store from before they were recorded, the music tree
    of the collection's ``paths`` (:func:`music_tree`)."""
    if recorded:
        return list(recorded)
    tree = music_tree(paths)
    return [] if tree is None else [str(tree)]


def music_root(roots: Iterable[str], folder: Path) -> Path | None:
    """The music tree of a playlist written in ``folder``: the outermost of ``roots`` (:func:`collection_roots`)
    holding it; its entries inside that root are relative (:func:`_location`), the others absolute. None when no
    root holds the folder (a playlist on the desktop of a collection spread over ~/Music and ~/Downloads: '../Music'
    entries would break when the playlist alone moves)."""
    here = resolved(Path(folder).expanduser())
    holding = [Path(r) for r in roots if here.is_relative_to(r)]
    return min(holding, key=lambda r: len(r.parts)) if holding else None


def _location(track_path: str, folder: Path | None, tree: Path | None = None) -> tuple[str, bool]:
    """(path, is_relative): relative to ``folder`` when the track lies inside it, or when ``folder`` and the track
    both lie inside the music ``tree`` (:func:`music_tree`), the track on ``folder``'s file system ('../' entries into
    another disk would break when one of them is mounted elsewhere)."""
    p = Path(track_path)
    if folder is not None and p.is_relative_to(folder):
        return p.relative_to(folder).as_posix(), True
    if folder is not None and tree is not None and folder.is_relative_to(tree) and p.is_relative_to(tree) \
            and _device(p) == _device(folder):
        return Path(os.path.relpath(p, folder)).as_posix(), True
    return str(p), False


def _device(path: Path) -> int | None:
    """The file system of ``path``, or of the nearest folder above it that exists (a file gone from disk); None when
    none can be read."""
    for p in (path, *path.parents):
        try:
            return os.stat(p).st_dev
        except OSError:
            continue
    return None


def _m3u8_entry(track_path: str, folder: Path | None, tree: Path | None = None) -> str:
    """The line naming a track: its path, './' before a relative one starting with '#' (else read as a
    comment) or with a first folder or name read as a URI scheme ('file:x/a.ogg', 'http:y/b.ogg': RFC 3986, 4.2);
    a file:// URI when the name would not survive as one whole line (line breaks, outer spaces)."""
    loc, relative = _location(track_path, folder, tree)
    if loc != loc.strip() or loc.splitlines() != [loc]:
        return Path(track_path).as_uri()
    return f"./{loc}" if relative and (loc.startswith("#") or _SCHEME.match(loc)) else loc


def render_m3u8(playlist: Playlist, folder: Path | None = None, locate: Locate | None = None,
                tree: Path | None = None, note: str | None = None) -> str:
    """Extended M3U (UTF-8): #EXTM3U, #PLAYLIST, a ``note`` as a comment line ('# ...', which players skip), and
    #EXTINF:seconds,Artist - Title before each path.

    ``locate`` (e.g. a track's URL on a server) replaces the file path of each entry (relative to ``folder`` as
    :func:`_location` says, with the music ``tree``). A file name that is
    not valid UTF-8 keeps its surrogate escapes: :func:`write_playlist` writes its bytes.
    """
    lines = ["#EXTM3U", f"#PLAYLIST:{one_line(playlist.title)}", *([f"# {one_line(note)}"] if note else [])]
    for t in playlist.tracks:
        seconds = -1 if t.duration is None else round(t.duration)
        lines += [f"#EXTINF:{seconds},{one_line(t.name)}", locate(t) if locate else _m3u8_entry(t.path, folder, tree)]
    return "\n".join(lines) + "\n"


def render_xspf(playlist: Playlist, folder: Path | None = None, locate: Locate | None = None,
                tree: Path | None = None, note: str | None = None) -> str:
    """XSPF 1: title, a ``note`` as the playlist's annotation, and per track title, creator, album, duration (ms)
    and location (relative URI, file:// URI, or ``locate``'s URI)."""
    ET.register_namespace("", XSPF_NS)
    root = ET.Element(f"{{{XSPF_NS}}}playlist", version="1")
    ET.SubElement(root, f"{{{XSPF_NS}}}title").text = displayable(playlist.title)
    if note:
        ET.SubElement(root, f"{{{XSPF_NS}}}annotation").text = displayable(note)
    tracklist = ET.SubElement(root, f"{{{XSPF_NS}}}trackList")
    for t in playlist.tracks:
        el = ET.SubElement(tracklist, f"{{{XSPF_NS}}}track")
        loc, relative = _location(t.path, folder, tree)
        uri = locate(t) if locate else quote(os.fsencode(loc)) if relative else Path(loc).as_uri()
        ET.SubElement(el, f"{{{XSPF_NS}}}location").text = uri
        ET.SubElement(el, f"{{{XSPF_NS}}}title").text = displayable(t.title or file_title(t.path))
        for tag, value in (("creator", t.artist), ("album", t.album)):
            if value:
                ET.SubElement(el, f"{{{XSPF_NS}}}{tag}").text = displayable(value)
        if t.duration is not None:
            ET.SubElement(el, f"{{{XSPF_NS}}}duration").text = str(round(t.duration * 1000))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render(playlist: Playlist, fmt: str, folder: Path | None = None, locate: Locate | None = None,
           tree: Path | None = None, note: str | None = None) -> str:
    """The playlist as text in ``fmt`` (:func:`format_named`), paths relative to ``folder`` where inside it (or
    inside the music ``tree`` with it: :func:`_location`), a ``note`` for its reader as a comment (M3U8) or the
    annotation (XSPF)."""
    return (render_m3u8 if format_named(fmt) == "m3u8" else render_xspf)(playlist, folder, locate, tree, note)


def output_format(path: Path, fmt: str | None = None) -> str:
    """The format to write ``path`` in: its extension's, else ``fmt``'s (:func:`format_named`: /dev/stdout has no
    extension); PlaylistError when neither names one or they name two."""
    fmt = None if fmt is None else format_named(fmt)
    named = FORMATS.get(Path(path).suffix.lower())
    if named is not None and fmt is not None and named != fmt:
        raise PlaylistError(f"the extension of {path} says {named} but the format asked for is {fmt}; "
                            "drop one or make them agree")
    chosen = named or fmt
    if chosen is None:
        raise PlaylistError(f"unknown playlist extension {Path(path).suffix or '(none)'!r} of {path}; "
                            "use .m3u8 or .xspf, or give the format (--format m3u8 or xspf)")
    return chosen


def write_playlist(playlist: Playlist, path: Path, fmt: str | None = None, tree: Path | None = None) -> Path:
    """Write ``playlist`` to ``path`` in :func:`output_format`'s format (a device or a pipe, such as /dev/stdout,
    is written into), relative entries as :func:`_location` says with the music ``tree``; returns the path."""
    path = Path(path).expanduser()
    if path.is_dir():  # its name has no extension: it was called an unknown playlist extension '(none)'
        raise PlaylistError(f"{path} is a folder; give the playlist file to write, such as {path / 'mix.m3u8'} "
                            "(`mess playlist clusters -o FOLDER` writes into a folder)")
    replace_file(path, _content(playlist, path, output_format(path, fmt), tree))
    return path


def streamed(playlist: Playlist, path: Path, fmt: str | None = None) -> bytes:
    """The bytes of ``playlist`` for a stream (stdout) named ``path``, in :func:`output_format`'s format: absolute
    entries, as no folder holds a stream."""
    return render(playlist, output_format(path, fmt)).encode("utf-8", "surrogateescape")


def _content(playlist: Playlist, path: Path, fmt: str, tree: Path | None = None) -> bytes:
    """The bytes of the playlist file ``path``: UTF-8, file names as their file-system bytes (surrogate escapes
    undone, as :mod:`mess.store.paths` stores them). Entries are relative only when the file's folder is the same
    however it is opened: a player resolves them against the folder of the path it opened, so a ``path`` that is a
    symbolic link to a file in another folder (written through) gets absolute ones, right through the link and
    without it. ``tree``: the music tree (:func:`_location`)."""
    folder = resolved(path.parent)
    return render(playlist, fmt, folder if resolved(path).parent == folder else None, tree=tree).encode(
        "utf-8", "surrogateescape")


def read_playlist(path: Path) -> list[Path | str]:
    """The absolute track paths of an M3U/M3U8 or XSPF file (relative entries resolved against its folder, for a
    symbolic link the link's, as players resolve them: '..' taken off as URIs resolve, symbolic links in the entries
    kept, so that 'linked/x.ogg' stays MPD's song of that name); URLs of streams (such as `mess serve`'s playlists
    hold) as they are, strings."""
    path = Path(path).expanduser()
    if path.is_dir():  # was 'no such playlist file', which it is, as a folder
        raise PlaylistError(f"{path} is a folder; give a playlist file in it (.m3u8, .m3u or .xspf)")
    if not path.is_file():
        raise PlaylistError(f"no such playlist file: {path}")
    folder = resolved(path.parent)
    if playlist_format(path) == "m3u8":
        entries = [ln.strip() for ln in _m3u_lines(path)]
        tracks = (_resolve(e, folder) for e in entries if e and not e.startswith("#"))
        return [t for t in tracks if t is not None]
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise PlaylistError(f"{path} is not valid XSPF: {exc}") from exc
    locations = (el.text.strip() for el in root.iter(f"{{{XSPF_NS}}}location") if el.text)
    tracks = (_resolve(loc, folder, uri=True) for loc in locations if loc)  # a blank one names no file (not the folder)
    return [t for t in tracks if t is not None]


def _m3u_lines(path: Path) -> list[str]:
    """The lines of an M3U file: its bytes as file names are (a UTF-8 byte-order mark dropped), or text in UTF-16
    when it starts with that byte-order mark (Windows tools save "Unicode" text so); PlaylistError when not valid."""
    data = path.read_bytes()
    if not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return [os.fsdecode(ln) for ln in data.removeprefix(codecs.BOM_UTF8).splitlines()]
    try:
        return re.split(r"\r\n|\r|\n", data.decode("utf-16"))
    except UnicodeDecodeError as exc:
        raise PlaylistError(f"{path} starts as UTF-16 text but is not valid UTF-16 ({exc.reason})") from None


def _resolve(entry: str, folder: Path, uri: bool = False) -> Path | str | None:
    """An entry (a path or a file:// URI; with ``uri`` a percent-encoded relative or file: URI, in any of RFC 8089's
    forms: file:///x, file://localhost/x, file:/x, as Java writes them, the scheme in any case) as an absolute path;
    a URL of another scheme (http://...) as it is; None for a file: URI without a path, which names no file."""
    try:
        parsed = urlparse(entry)
    except ValueError:  # no URL: a path such as '//[x/y.ogg' ('Invalid IPv6 URL')
        parsed = urlparse("")
    if parsed.scheme == "file" and (uri or parsed.netloc or entry[5:7] == "//"):  # urlparse lowercases the scheme
        return Path(_unquote(parsed.path)) if parsed.path else None  # 'file://' was Path('.'), the working folder
    if len(parsed.scheme) > 1 and parsed.netloc:  # 'scheme://host...' (one letter: a Windows drive, C:/x)
        return entry
    entry = _unquote(entry) if uri else entry
    return Path(entry) if os.path.isabs(entry) else Path(os.path.normpath(folder / entry))


def _unquote(text: str) -> str:
    """A percent-encoded path as a file name: the bytes it spells, decoded as :func:`os.fsdecode` does."""
    return os.fsdecode(unquote_to_bytes(os.fsencode(text)))


def write_cluster_folder(playlists: list[Playlist], folder: Path, fmt: str = "m3u8",
                         tree: Path | None = None) -> list[Path]:
    """One file per playlist in ``folder`` (created), named ``NN-title.EXT``, entries as :func:`_location` says
    with the music ``tree``; returns the paths.

    The cluster playlists an earlier run wrote there and not written now are removed, once the new ones are
    written: left beside them, they read as more clusters, some tracks in two. Earlier runs' playlists are those
    listed in its ``.mess-clusters`` and those :func:`_earlier_cluster_file` recognises (written before the list
    was). Other files, such as the user's own ``01-favourites.m3u8``, are left alone; PlaylistError, nothing
    written, when one of them has the name of a new cluster playlist.
    """
    fmt = format_named(fmt)
    folder = Path(folder).expanduser()
    contents = {}
    for i, p in enumerate(playlists, start=1):
        path = folder / f"{i:02d}-{_slug(p.title)}.{fmt}"
        contents[path] = _content(p, path, fmt, tree)
    listed = folder / CLUSTER_LIST
    earlier = set(os.fsdecode(listed.read_bytes()).splitlines()) if listed.is_file() else set()
    by_path = {t.path: t for p in playlists for t in p.tracks}
    unlisted = {f.name for f in folder.iterdir() if _earlier_cluster_file(f, by_path, tree)} if folder.is_dir() \
        else set()
    theirs = [p for p in contents if os.path.lexists(p) and p.name not in earlier | unlisted]
    if theirs:
        raise PlaylistError(f"{theirs[0]} is there already and is no cluster playlist mess wrote; move it, or write "
                            "the clusters into another folder")
    # all built, then all written before any replaces its target: a failure or Ctrl-C leaves the folder as it was
    replace_files({**contents, listed: b"".join(os.fsencode(p.name) + b"\n" for p in contents)})
    for name in sorted((earlier | unlisted) - {p.name for p in contents}):
        if _CLUSTER_FILE.fullmatch(name) and (folder / name).is_file():
            (folder / name).unlink()
    return list(contents)


def _slug(title: str) -> str:
    """The file-name part of a cluster playlist's title: letters, digits, '_' and single '-', at most 60."""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in title.casefold()).strip("-")
    return "-".join(part for part in slug.split("-") if part)[:60] or "cluster"


def _earlier_cluster_file(path: Path, by_path: dict[str, Track], tree: Path | None) -> bool:
    """Whether ``path`` is a cluster playlist mess wrote: named ``NN-`` and its title's slug, a title no radio or
    path has, tracks all of ``by_path`` (the collection's, by path), and byte for byte what mess writes for that
    title and those tracks (with the music ``tree``). A playlist the user made or edited differs in some byte and is
    never taken for one."""
    match = _CLUSTER_FILE.fullmatch(path.name)
    if match is None or not path.is_file():
        return False
    try:
        data = path.read_bytes()
        tracks = tuple(by_path[str(p)] for p in read_playlist(path))
        title = _title(data, playlist_format(path))
    except (KeyError, PlaylistError, OSError, ET.ParseError):
        return False
    if title is None or title.startswith(("radio: ", "path: ")) or _slug(title) != match["slug"]:
        return False
    return _content(Playlist(title, tracks, (0.0,) * len(tracks)), path, playlist_format(path), tree) == data


def _title(data: bytes, fmt: str) -> str | None:
    """The playlist title a file's bytes hold (M3U8's ``#PLAYLIST:`` second line, XSPF's title), if any."""
    if fmt == "m3u8":
        lines = data.split(b"\n", 2)
        line = lines[1] if len(lines) > 1 else b""
        return line.removeprefix(b"#PLAYLIST:").decode("utf-8", "surrogateescape") if line.startswith(b"#PLAYLIST:") \
            else None
    return ET.fromstring(data).findtext(f"{{{XSPF_NS}}}title")
