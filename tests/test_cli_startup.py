"""Start-up cost: the CLI, the server and the query path import no model or learning library until a command needs it.

Every `mess` process (and every subprocess in the fault tests) paid seconds for torch,
sklearn and scipy.stats before it did anything; this keeps them out of the import graph.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "librosa", "numba", "sklearn", "scipy.stats", "onnxruntime", "ray", "music21",
         "matplotlib")


def test_cli_server_and_queries_start_without_heavy_libraries() -> None:
    code = ("import json, sys\nimport mess.cli.main, mess.query, mess.serve.app\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout) == []
