"""Start-up cost: the CLI, the server and the query path import no model or learning library until a command needs it.

Every `mess` process (and every subprocess in the fault tests) paid seconds for torch,
sklearn and scipy.stats before it did anything; this keeps them out of the import graph.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import mess_here
from mess.cli.app import COMMANDS

HEAVY = ("torch", "transformers", "librosa", "numba", "sklearn", "scipy.stats", "onnxruntime", "ray", "music21",
         "matplotlib")


def test_cli_server_and_queries_start_without_heavy_libraries() -> None:
    code = ("import json, sys\nimport mess.cli.main, mess.query, mess.serve.app\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout) == []


def test_decoder_processes_import_only_what_decodes() -> None:
    """`mess extract` starts its decoders (and its header reader) as processes of their own: neither the store nor a
    model library, nor a numba cache folder of their own (mess.audio.jit_cache)."""
    code = ("import json, os, sys\nimport mess.extract.decode_worker\n"
            f"print(json.dumps([sorted(m for m in ({HEAVY!r} + ('scipy', 'mess.store')) if m in sys.modules), "
            "'MESS_NUMBA_PRIVATE' in os.environ]))")
    env = {k: v for k, v in os.environ.items() if k not in ("MESS_NUMBA_PRIVATE", "NUMBA_CACHE_DIR")}  # not this one's
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120, env=env)
    assert json.loads(out.stdout) == [[], False]


def test_musicnn_imports_no_scipy() -> None:
    """The default model's code: scipy.signal (with scipy.stats) and scipy.fft cost each `mess extract` 0.7 s of CPU
    to import, for a window function and an FFT numpy computes with the same values (tests/test_dsp.py)."""
    code = ("import json, sys\nimport mess.models.musicnn.ensemble\n"
            "print(json.dumps(sorted(m for m in ('scipy', 'librosa', 'numba', 'torch') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout) == []


def test_dsp_reads_librosas_filters_from_its_cache_and_imports_no_librosa(tmp_path: Path) -> None:
    """librosa (with scipy.signal and numba's cache) cost each dsp process 1.8 s of CPU: its filters are computed once,
    kept, and read by later processes, which import neither."""
    code = ("import json, sys\nimport numpy as np\nfrom mess.models.dsp import DspModel\n"
            "DspModel().embed(np.random.default_rng(0).standard_normal((1, 22050 * 3)).astype(np.float32))\n"
            "print(json.dumps(sorted(m for m in ('librosa', 'numba', 'scipy.signal', 'torch') if m in sys.modules)))")
    env = {**os.environ, "MESS_ONNX_CACHE": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                           env=env) for _ in range(2)]
    assert "librosa" in json.loads(runs[0].stdout)  # the first computes the filters
    assert sorted(p.name.split("-librosa-")[0] for p in tmp_path.glob("*.npy")) == ["chroma-22050-2048-tuning0",
                                                                                    "mel-22050-2048-128"]
    assert json.loads(runs[1].stdout) == []


_RUN_MESS_THEN_LIST = """
import json, sys
from mess.cli.main import main
sys.argv = ["mess", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
shared = {"mess.cli.main", "mess.cli.app", "mess.cli.common", "mess.cli.options", "mess.cli.signals"}
heavy = ("numpy", "mess.store", "scipy.linalg", "scipy.sparse", "faiss")
print(json.dumps([sorted(m.removeprefix("mess.cli.") for m in set(sys.modules) - shared if m.startswith("mess.cli.")),
                  sorted(m for m in heavy if m in sys.modules)]))
"""


@pytest.mark.parametrize(("args", "modules", "heavy"), [
    (["--version"], [], []),
    (["check", "--store", "NONE"], ["check"], ["mess.store", "numpy"]),
    (["similar", "track", "--store", "NONE"], ["search"], ["mess.store", "numpy"]),
    (["similar", "--help"], ["search"], []),
    (["check", "--help"], ["check"], []),
    (["artists", "matrix", "--help"], ["artists"], []),
    (["extract", "--help"], ["extract"], []),
    (["--help"], sorted(set(COMMANDS.values())), []),
])
def test_a_command_loads_its_own_module_only(tmp_path: Path, args: list[str], modules: list[str],
                                              heavy: list[str]) -> None:
    """Every `mess` process imported every command's module, and through them numpy and the store: `mess --version`
    took 0.67 s of CPU, `mess check` 1.26 s. A command now loads its own module alone, `--version` none, nor numpy;
    `mess check` no scipy.linalg (only the neighbour graph's Gram matrix needs it); `mess similar --help` (and the
    other commands' help but extract's and artists') no numpy: the default store is a constant of mess.constants.
    `mess --help` (every command's module, for its one-line help) and the help of extract and artists no numpy
    either: the constants their options show are read from light modules. Opening a store's search (`mess check`,
    `mess similar` up to its store) imports neither faiss (0.09 s) nor scipy.sparse (0.15 s): the index and
    re-ranking code import them where they search or re-rank."""
    args = [str(tmp_path / "none") if a == "NONE" else a for a in args]
    out = subprocess.run([sys.executable, "-c", _RUN_MESS_THEN_LIST, *args], capture_output=True, text=True,
                         timeout=120)
    assert json.loads(out.stdout.splitlines()[-1]) == [modules, heavy], out


def test_commands_run_again_in_one_process_are_registered_once() -> None:
    """The group registers a command module when a command of it is first asked for: in one process that runs
    `mess` many times (the tests, mess_here), `mess playlist` kept adding its three commands to its group again."""
    from mess.cli.playlist import playlist_app

    first, again = mess_here("playlist", "--help"), mess_here("playlist", "--help")
    assert first.returncode == again.returncode == 0 and first.stdout == again.stdout
    assert [c.name for c in playlist_app.registered_commands] == ["radio", "path", "clusters"]


def test_every_registered_command_is_listed_for_the_lazy_group() -> None:
    """The `mess` group knows its commands by name (mess.cli.app.COMMANDS) and imports a module only for them: a
    module of mess.cli that registers a command not listed there would never show it."""
    import importlib
    import pkgutil

    import typer.main

    import mess.cli
    from mess.cli.app import COMMANDS, _stage

    names = [m.name for m in pkgutil.iter_modules(mess.cli.__path__) if m.name != "__main__"]
    found = {}
    for name in names:
        if hasattr(importlib.import_module(f"mess.cli.{name}"), "register"):
            found |= dict.fromkeys(typer.main.get_group(_stage(name)).commands, name)
    assert found == COMMANDS and len(set(found.values())) == 13


_RUN_MESS_THEN_AUDIO = _RUN_MESS_THEN_LIST.split("shared = ")[0] + """
print(json.dumps(sorted(m for m in ("av", "soxr", "mutagen", "mess.audio.discover", "mess.extract.embed")
                        if m in sys.modules)))
"""


def test_similar_to_a_collection_track_imports_no_decoder(extracted_store: Path,
                                                          rendered_collection: list[Path]) -> None:
    """`mess similar TRACK` (and `mess playlist radio TRACK`) of a track in the store imported PyAV, mutagen and the
    extraction code, which only a query that is an outside file (decoded and embedded) needs. The decoders (PyAV,
    soxr) load only for an audio comparison of two close tracks of one length (the same-recording check): `mess
    similar` says when it made one; the radio made some here (the renders are all 20 s long)."""
    for args, answers in ((["similar", rendered_collection[0].name], "results"),
                          (["playlist", "radio", rendered_collection[0].name], "tracks")):
        out = subprocess.run([sys.executable, "-c", _RUN_MESS_THEN_AUDIO, *args, "-m", "dsp", "--store",
                              str(extracted_store), "--json"], capture_output=True, text=True, timeout=120)
        *answer, loaded = out.stdout.splitlines()
        found = json.loads("\n".join(answer))[answers]
        paths = {t["path"] for t in found}
        assert paths and paths <= {str(p) for p in rendered_collection}, out
        compared = answers == "tracks" or any(r["same_recording"] is not None for r in found)
        assert set(json.loads(loaded)) <= ({"av", "soxr"} if compared else set()), out


def test_similar_to_the_path_of_an_unchanged_collection_file_imports_no_decoder(
        extracted_store: Path, rendered_collection: list[Path]) -> None:
    """`mess similar PATH` of a file in the store, unchanged since it was extracted, imported PyAV, soxr and the
    extraction code for the unchanged-file check (the stamp's function lived beside the decoders), for a comparison
    of its stat with the catalog's stamp. Decoders are for a file that must really be read (one changed since)."""
    out = subprocess.run([sys.executable, "-c", _RUN_MESS_THEN_AUDIO, "similar", str(rendered_collection[0]), "-m",
                          "dsp", "--store", str(extracted_store), "--json"], capture_output=True, text=True,
                         timeout=120)
    *answer, loaded = out.stdout.splitlines()
    found = json.loads("\n".join(answer))
    assert found["query"]["id"] is not None and found["results"], out  # answered as the collection's track
    assert json.loads(loaded) == [], out


def test_the_light_stamp_check_reads_the_stamps_extraction_wrote(extracted_store: Path,
                                                                 rendered_collection: list[Path]) -> None:
    """mess.constants' stamp check, which the query path uses without PyAV, against the stamps `mess extract` stored
    in the catalog: each unchanged file matches its own and no other; a stamp from before inodes (size and mtime)
    matches too."""
    from contextlib import closing

    from mess.constants import legacy_stamp, stamp_matches
    from mess.store import FeatureStore

    with closing(FeatureStore(extracted_store, readonly=True)) as store:
        known = [store.known_file(p.resolve()) for p in rendered_collection[:3]]
    stats = [p.stat() for p in rendered_collection[:3]]
    assert all(k is not None for k in known)
    assert [[stamp_matches(s, k[1]) for k in known] for s in stats] == [[i == j for j in range(3)] for i in range(3)]
    assert stamp_matches(stats[0], legacy_stamp(stats[0].st_size, stats[0].st_mtime))
