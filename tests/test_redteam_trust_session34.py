"""Red-team of the store's trust (session 34): real `mess` processes under the machine's limits, killed, or beside
damaged files; each test is a defect found there (notes/redteam_trust_session34.md)."""

from __future__ import annotations

import json
import resource
import subprocess
from contextlib import closing
from pathlib import Path

from test_store_faults import (  # noqa: F401 -- fixtures
    DSP,
    MESS,
    Extracted,
    _mess,
    _tones,
    extracted_tones,
    tone_templates,
)

from mess.store import FeatureStore


def test_a_limit_on_open_files_ends_extract_in_one_line_and_blames_no_file(tmp_path: Path) -> None:
    """`mess extract` under a low limit on open files (`ulimit -n`) could not start its decoder processes, recorded
    every good file as failed ('OSError: [Errno 24] Too many open files', exit 3, listed by `mess info --failures`)
    and printed the header-reading thread's traceback. It now ends in one line naming the limit, blaming no file,
    with what was embedded before kept; with the limit raised, the rerun embeds the rest."""
    music, store = tmp_path / "music", tmp_path / "store"
    _tones(music, 1, seconds=2.0)
    assert _mess("extract", str(music), *DSP, "--store", str(store)).returncode == 0
    _tones(music, 3, seconds=2.0, offset=1)
    refused = None
    for limit in range(7, 16):  # the lowest limits stop the store's own files first; which is enough varies a little
        def low(limit: int = limit) -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        run = subprocess.run([*MESS, "extract", str(music), *DSP, "--store", str(store)], capture_output=True,
                             text=True, timeout=300, preexec_fn=low)
        assert "Traceback" not in run.stderr and "failed:" not in run.stderr, (limit, run.stderr)
        assert run.returncode in (0, 1), (limit, run.returncode, run.stderr)
        if run.returncode == 0:
            break
        if "decoder" in run.stderr:
            refused = [line for line in run.stderr.splitlines() if not line.startswith("extract dsp")]  # the bar
            break
    assert refused is not None, f"no limit refused a decoder process: {run.stderr}"
    assert len(refused) == 1 and "Too many open files" in refused[0] and "ulimit -n" in refused[0], refused
    info = json.loads(_mess("info", "--json", "--failures", "--store", str(store)).stdout)
    assert info["runs"][0]["failures"] == [] and info["runs"][0]["tracks"] == 1
    again = _mess("extract", str(music), *DSP, "--store", str(store))
    assert again.returncode == 0 and "3 embedded" in again.stderr and " 0 failed" in again.stderr, again.stderr
    assert _mess("check", "--store", str(store)).returncode == 0


def test_a_folder_where_the_lock_holders_note_belongs_stops_no_writer(extracted_tones: Extracted,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    """A folder at `STORE/write.lock.json` (the note naming the lock's holder to writers that wait) stopped every
    writer, `mess check --repair` included ('.write.lock.json.XXXX.tmp -> write.lock.json: Is a directory'), while
    `mess check` called the store ok: nothing in mess could get past it. The note is a courtesy; writers now go on
    without it."""
    music, store = extracted_tones(10)
    (store / "write.lock.json").unlink(missing_ok=True)
    (store / "write.lock.json").mkdir()
    _tones(tmp_path / "more", 1, seconds=2.0, offset=10)
    for args in (["index", "--model", "dsp"], ["extract", str(tmp_path / "more"), *DSP], ["check", "--repair"]):
        done = _mess(*args, "--store", str(store))
        assert done.returncode == 0 and "Is a directory" not in done.stderr, (args, done.stderr)
    assert json.loads(_mess("info", "--json", "--store", str(store)).stdout)["runs"][0]["tracks"] == 11
    assert not list(store.glob(".write.lock.json.*.tmp"))


def test_check_names_settings_that_every_command_naming_no_model_refuses(extracted_tones: Extracted  # noqa: F811
                                                                          ) -> None:
    """A cut-short `config.json` (or a default-model with no vectors) made every command that names no model refuse
    ('cannot read .../config.json ...'), while `mess check` called the store ok: the tool a user runs to learn what
    is wrong said nothing. It now names the setting and the `mess config` command that mends it."""
    _, store = extracted_tones(10)
    for text in ('{"default-mo', '{"default-model": "musicnn"}'):
        (store / "config.json").write_text(text)
        refused = _mess("similar", "1", "--store", str(store))
        assert refused.returncode == 1 and "config" in refused.stderr, refused.stderr
        check = _mess("check", "--store", str(store))
        lines = check.stdout.strip().splitlines()
        assert check.returncode == 0 and f"config: {refused.stderr.strip().removeprefix('error: ')}" in lines, lines
        assert lines[-1].endswith("its settings cannot be used (above): `mess config` sets or unsets them"), lines
        kinds = [p["kind"] for p in json.loads(_mess("check", "--json", "--store", str(store)).stdout)["problems"]]
        assert kinds == ["config"], kinds
    assert _mess("config", "default-model", "--unset", "--store", str(store)).returncode == 0
    assert _mess("check", "--store", str(store)).stdout.strip().endswith(": ok")


def test_an_index_save_the_disk_refuses_leaves_the_saved_index_whole(extracted_tones: Extracted  # noqa: F811
                                                                     ) -> None:
    """`mess index --rebuild` on a disk that took the new `.npz` but not the `.faiss` (here a file-size limit between
    the two; a full disk alike) said 'File too large' in one line, but had already renamed the new `.npz` over the
    old: the index saved before matched neither save, and every search built one in memory until `mess index` ran
    again (`mess check`: stale-index). The three files are now written first and renamed after."""
    _, store = extracted_tones(60)
    assert _mess("index", "--model", "dsp", "--no-rerank", "--store", str(store)).returncode == 0
    index = store / "indexes" / "run1-all-power.faiss"
    before = {p.name: p.read_bytes() for p in index.parent.iterdir()}
    npz, faiss = (index.with_suffix(s).stat().st_size for s in (".npz", ".faiss"))
    assert npz < faiss, (npz, faiss)  # the limit lets the first written through and stops the second

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, ((npz + faiss) // 2, (npz + faiss) // 2))

    with closing(FeatureStore(store, readonly=True)):  # open: the catalog's shared-memory file stays as large as it is
        full = subprocess.run([*MESS, "index", "--model", "dsp", "--no-rerank", "--rebuild", "--store", str(store)],
                              capture_output=True, text=True, timeout=300, preexec_fn=small_disk)
    assert full.returncode == 1 and full.stderr == f"error: {index}: File too large\n", full.stderr
    assert {p.name: p.read_bytes() for p in index.parent.iterdir()} == before  # no temp file left either
    check = json.loads(_mess("check", "--json", "--store", str(store)).stdout)
    assert check["ok"] and check["problems"] == [], check
