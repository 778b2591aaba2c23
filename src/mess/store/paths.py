"""File paths in the catalog and in messages, lossless for names that are not valid UTF-8; whole-file writes."""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, cast

# C0 but tab and line feed, DEL, C1, non-chars, and the bidirectional overrides and isolates (a tag's U+202E would
# show the rest of a table row or the file name after it reversed)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufffe\uffff]")
_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")  # surrogates surrogateescape does not make
_BREAK = re.compile(r"\s*[\t\n\u2028\u2029]\s*")  # what is left of a line break or tab after _CONTROL, with its spaces
STDOUT_NAMES = frozenset({Path("/dev/stdout"), Path("/dev/fd/1"), Path("/proc/self/fd/1")})  # `-` is the first


def to_db_path(path: str | Path) -> str | bytes:
    """A path as stored: text, or its raw bytes when the name is not valid UTF-8 (lossless)."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text)


def from_db_path(value: str | bytes) -> str:
    """The inverse of :func:`to_db_path` (non-UTF-8 bytes come back as surrogate escapes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def expanded(path: str | Path) -> Path:
    """``Path(path).expanduser()``, but a ``~user`` naming no user (or ``~`` with no home) stays as written, as the
    shell leaves it, where pathlib raised RuntimeError ('Could not determine home directory')."""
    return Path(os.path.expanduser(path))


def resolved(path: str | Path) -> Path:
    """``Path(path).resolve()``, but a symbolic link loop on the way is an OSError naming ``path`` (as the system
    reports it: "Too many levels of symbolic links") rather than Python 3.11's RuntimeError."""
    try:
        return Path(path).resolve()
    except RuntimeError as exc:  # "Symlink loop from ..."
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)) from exc


def inside_store(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` (a file to write) lies in the feature store folder ``root``, whose files only mess writes
    (through a link or a relative name too): an output written there can replace the catalog or a row file."""
    return resolved(expanded(path)).is_relative_to(resolved(expanded(root)))


def look(path: str | Path) -> bool | OSError | None:
    """True where ``path`` is on disk, None where it is not (no such file, or a file where a folder of it was), the
    error where it cannot be looked at (a folder above it unreadable: ``os.path.lexists`` says False there, though
    the file may well be on disk)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return exc
    return True


def printable(text: str) -> str:
    """``text`` safe to print and store as text: undecodable file-name bytes become escapes (caf\\xe9), as does a
    lone surrogate that escapes no byte (\\ud800, which only JSON text can carry)."""
    text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")  # what printable makes of a byte UTF-8 cannot decode


def unprinted(text: str) -> str:
    """:func:`printable`'s escapes of file-name bytes turned back into those bytes (as surrogate escapes): the name a
    user pastes as mess printed it (caf\\xe9.flac) as the file's name."""
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


def displayable(text: str) -> str:
    """:func:`printable` without control characters: what a terminal or an XML file is given of a tag or name
    (an escape sequence in a tag must not reach the terminal, nor a right-to-left override that shows what follows
    reversed, and XML 1.0 forbids these characters)."""
    return _CONTROL.sub("", printable(text))


def one_line(text: str) -> str:
    """:func:`displayable` on one line: a line break or tab (and the spaces around it) becomes one space, so a tag
    cannot split a table row or a playlist entry."""
    return _BREAK.sub(" ", displayable(text))


_TEMP = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # the names temp_path gives
# a temp file untouched this long belongs to no live write: replace_file writes, syncs and renames it in one go
TEMP_GRACE_SECONDS = 60.0


def temp_path(target: Path) -> Path:
    """The temp file :func:`replace_file` writes ``target`` through: ``.NAME.XXXXXXXX.tmp`` beside it, NAME cut to
    the 255 bytes a file name may have (whole, a target named near that limit could not be written)."""
    name = os.fsdecode(os.fsencode(target.name)[:255 - len(".XXXXXXXX.tmp") - 1])
    return target.with_name(f".{name}.{secrets.token_hex(4)}.tmp")


def leftover_temps(root: Path, grace: float = TEMP_GRACE_SECONDS) -> list[Path]:
    """Temp files of :func:`replace_file` under ``root`` untouched for ``grace`` seconds (left by killed writes), and
    those stamped more than ``grace`` seconds ahead of the clock (written while it was ahead, then set back: no live
    write's, and they were passed over until the clock caught up)."""
    now = time.time()
    out = []
    for p in sorted(Path(root).rglob(".*.tmp")):
        try:
            if _TEMP.fullmatch(p.name) and p.is_file() and abs(p.stat().st_mtime - now) > grace:
                out.append(p)
        except OSError:  # renamed or removed meanwhile: a live write's
            continue
    return out


def is_device_or_pipe(path: Path) -> bool:
    """Whether ``path`` (links followed) is something other than a file or a folder: a device, a pipe, a socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing (to be created), or unreachable: the write says why
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file beside ``path`` and rename it over ``path`` (atomic: an existing file is
    replaced whole or left untouched, its permissions kept; a symbolic link is written through; a device or a
    pipe is written into, see :func:`replacing`)."""
    with replacing(path) as f:
        f.write(data)


def create_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path``; FileExistsError, nothing there changed, where anything is (a file
    that came a moment ago included). Written and synced beside it, then hard-linked to its name, which fails where
    the name is taken (on a file system without hard links, FAT: created exclusively at its name, then written)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where its folder should be: not its name taken
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)) from None
    tmp = temp_path(path)
    try:
        _write_new(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            _write_new(path, data)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
    except OSError as exc:
        raise _naming(exc, path) from None
    finally:
        _discard(tmp)


def _write_new(path: Path, data: bytes) -> None:
    """``data`` into a file created exclusively at ``path``, removed again where writing it fails."""
    with open(path, "xb") as f:
        try:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            _discard(path)
            raise


def replace_files(contents: Mapping[Path, bytes]) -> None:
    """:func:`replace_file` for several files at once: each is written and synced beside its target first, and only
    then are they renamed over their targets, one after another: an error or Ctrl-C while they are written leaves
    every target as it was (the new files removed)."""
    with ExitStack() as stack:
        for path, data in contents.items():
            f = stack.enter_context(replacing(path))
            f.write(data)
            synced(f)  # now, so the renames follow each other closely


def synced(f: BinaryIO) -> None:
    """Flush ``f`` (a file :func:`replacing` opened) and sync it to disk where it is a file (not a device or a
    pipe): what a write refused by the system (a full disk) raises, it raises before any rename."""
    f.flush()
    try:
        fd = f.fileno()
    except (OSError, ValueError):  # stdout with no descriptor (a test runner's buffer): nothing to sync
        return
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.fsync(fd)


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A new file beside ``path``, renamed over it once the block ends (as :func:`replace_file`; an error in the
    block leaves ``path`` untouched and removes the new file). A ``path`` that is a device or a pipe (a FIFO) is written
    into, not replaced: renaming over it would remove it (as root, /dev/null). A name of this process's stdout
    (:data:`STDOUT_NAMES`) is written into stdout itself, after what was printed there (:class:`_IntoStdout`)."""
    stdout = getattr(sys.stdout, "buffer", None)  # a raw file where Python runs unbuffered (-u)
    if path in STDOUT_NAMES and stdout is not None:
        sys.stdout.flush()
        try:
            with _IntoStdout(stdout) as out:
                yield cast("BinaryIO", out)
        except OSError as exc:
            raise _naming(exc, path) from None
        return
    if is_device_or_pipe(path):
        try:
            with open(path, "wb") as out:  # by the name given: /dev/stderr resolves to a pipe: name no one can open
                yield out
        except OSError as exc:
            raise _naming(exc, path) from None
        return
    target = resolved(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            shutil.copymode(target, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        _discard(tmp)
        raise _naming(exc, path, tmp) from None
    except BaseException:
        _discard(tmp)
        raise


class _IntoStdout(io.RawIOBase):
    """Writes into stdout's buffer, as a stream that cannot seek (a pipe's kind), flushed when closed, stdout left
    open. Stdout redirected to a file was replaced whole by a renamed new file (`>>` lost the lines before; and
    opening /dev/stdout again by its name truncates the file): written where stdout is, ``>>`` appends and ``>``
    writes after what the shell's command printed before. A stream that cannot seek: a zip (npz) written into a
    file opened to append seeks back to finish each member, and those writes went to the end. A test runner's
    stdout (typer's CliRunner: a buffer without a descriptor) gets the bytes too."""

    def __init__(self, out: BinaryIO) -> None:
        """Write into ``out`` (``sys.stdout.buffer``, buffered or raw)."""
        super().__init__()
        self._out = out

    def writable(self) -> bool:
        """Yes."""
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        """Write all of ``data`` into stdout (a raw stdout may take part of it at a time); its length."""
        view = memoryview(data).cast("B")
        size = view.nbytes
        while view:
            taken = self._out.write(view)
            view = view[len(view) if taken is None else taken:]
        return size

    def close(self) -> None:
        """Flush stdout (closing nothing); closed even where the flush fails (the reader went away): it is not
        flushed again when collected."""
        if self.closed:
            return
        try:
            self._out.flush()
        finally:
            super().close()


def _discard(tmp: Path) -> None:
    """Remove the temp file ``tmp`` of a write that failed, if it is there: on a read-only file system, where it
    could not be made, removing it fails too (Read-only file system), and that must not hide why the write failed."""
    try:
        tmp.unlink()
    except OSError:
        pass


def _naming(exc: OSError, path: Path, tmp: Path | None = None) -> OSError:
    """``exc`` with ``path`` as its file where the system named none (a write or a sync: a full disk, a file-size
    limit) or named only the temp file ``tmp`` it was written through (gone again; a rename names both, and is
    kept), so that every command's message says which file could not be written; the same subclass (by errno)."""
    only_tmp = tmp is not None and exc.filename2 is None and str(exc.filename) == str(tmp)
    if exc.errno is None or (exc.filename is not None and not only_tmp):
        return exc
    return OSError(exc.errno, exc.strerror, str(path))
