"""Start-up cost: the CLI, the server and the query path import no model or learning library until a command needs it.

Every `mess` process (and every subprocess in the fault tests) paid seconds for torch,
sklearn and scipy.stats before it did anything; this keeps them out of the import graph.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
