"""Session 40: the decoding processes and the memo under failure: a killed zygote loses no file."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import psutil
import pytest
from tones import write_tones

from mess.audio.windows import WindowPolicy
from mess.extract import zygote
from mess.extract.embed import embed_file
from mess.extract.pipeline import extract
from mess.models.dsp import DspModel
from mess.store import FeatureStore
from mess.store.consistent import one_state

POLICY = WindowPolicy(window_seconds=2.0, max_windows=2)
DECODER = "mess.extract.decode_worker"


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six 2-second tones, each file different."""
    return write_tones(tmp_path_factory.mktemp("music"), 6, seconds=2.0, sr=22050,
                       wave=lambda i, t: 0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t))


@pytest.fixture(scope="module")
def decoded_here(music: list[Path]) -> dict[Path, list[np.ndarray]]:
    """Each file's layer vectors as :func:`embed_file` computes them, decoding in this process."""
    return {path: list(embed_file(path, DspModel(), POLICY).layers) for path in music}


def _same_vectors(store: FeatureStore, expected: dict[Path, list[np.ndarray]]) -> None:
    """The store holds each file's ``expected`` vectors."""
    run = store.run("dsp")
    by_path = {Path(t.path): t.id for t in store.tracks(run)}
    assert sorted(by_path) == sorted(expected)
    for layer, name in enumerate(run.layer_names):
        ids, stored = store.layer_matrix(run, name)
        for path, vectors in expected.items():
            np.testing.assert_allclose(stored[ids.tolist().index(by_path[path])], vectors[layer], rtol=1e-2, atol=1e-2)


def _decoding_zygotes() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children():
        try:
            if DECODER in proc.cmdline() and "-c" in proc.cmdline():
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_a_run_whose_decoding_zygote_is_killed_mid_run_loses_no_file(
        music: list[Path], decoded_here: dict[Path, list[np.ndarray]], tmp_path: Path) -> None:
    """kill -9 of the zygote once the first file is read: its decoder dies with it (PDEATHSIG), exit code lost;
    the file it was reading is read again by a decoder from a new zygote, and so are the files after (before: the
    next file failed, 'the decoder died (exit code None)')."""
    killed: list[int] = []
    once = threading.Lock()

    def progress(_handled: int, _seconds: float) -> None:  # first called once the first file is read
        with once:
            if not killed:
                for zygote in _decoding_zygotes():
                    zygote.kill()
                    killed.append(zygote.pid)

    with closing(FeatureStore(tmp_path / "store")) as store:
        summary = extract(store, music, DspModel(), POLICY, workers=1, on_progress=progress)
        assert killed and (summary.done, summary.failed) == (len(music), [])
        assert [z.pid for z in _decoding_zygotes()] not in ([], killed)  # a new one served the files after
        _same_vectors(store, decoded_here)


@pytest.fixture
def no_seqpacket(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A system without SOCK_SEQPACKET Unix sockets (macOS): the zygote's capability check answers no."""
    monkeypatch.delattr(socket, "SOCK_SEQPACKET")
    zygote.available.cache_clear()
    yield
    zygote.available.cache_clear()  # asked again once the socket constant is back


def test_without_seqpacket_sockets_decoders_start_cold_and_give_the_same_vectors(
        music: list[Path], decoded_here: dict[Path, list[np.ndarray]], tmp_path: Path, no_seqpacket: None) -> None:
    decoders: list[tuple[int, list[str]]] = []  # (parent, command line) of each decoding process met

    def progress(_handled: int, _seconds: float) -> None:
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if DECODER in proc.cmdline():
                    decoders.append((proc.ppid(), proc.cmdline()))

    assert not zygote.available()
    with closing(FeatureStore(tmp_path / "store")) as store:
        summary = extract(store, music, DspModel(), POLICY, workers=1, on_progress=progress)
        assert (summary.done, summary.failed) == (len(music), [])
        assert ["-m", DECODER] in [cmd[-2:] for _, cmd in decoders]  # python -P -m: started cold
        assert {parent for parent, _ in decoders} == {os.getpid()}  # none forked by a zygote (another test's, idle)
        _same_vectors(store, decoded_here)


def test_a_one_state_reader_computes_a_memo_value_itself_rather_than_wait_for_a_thread_needing_its_lock(
        tmp_path: Path) -> None:
    """A one-state reader holds the store's connection; the memo value it asks for is being computed by another
    thread, which needs the connection: waiting for it deadlocked (before: both threads hung). The reader computes it
    itself; the other thread then goes on."""
    store = FeatureStore(tmp_path / "store")  # closed only after the threads end (closing takes the connection)
    computing, reader_holds = threading.Event(), threading.Event()

    def count_after_the_reader_took_the_connection() -> int:
        computing.set()
        reader_holds.wait(30)
        return len(store.tracks())  # takes the connection

    @one_state
    def counted(store: FeatureStore) -> int:
        reader_holds.set()
        return store.cached("count", lambda: len(store.tracks()))

    answers: dict[str, int] = {}

    def other() -> None:
        answers["other"] = store.cached("count", count_after_the_reader_took_the_connection)

    def reader() -> None:
        computing.wait(30)
        answers["reader"] = counted(store)

    threads = [threading.Thread(target=run, daemon=True) for run in (other, reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "deadlock"
    assert answers == {"other": len(store.tracks()), "reader": len(store.tracks())}
    store.close()
