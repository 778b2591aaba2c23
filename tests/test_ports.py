"""tests/ports.py's ``served_at`` against a server-like child: a real process that names its address as `mess serve`
does, then writes to its stderr."""

from __future__ import annotations

import subprocess
import sys

from ports import served_at

_SAYS = 200_000  # bytes written to stderr after the address: over a pipe's 64 KB

_CHILD = f"""
import sys
sys.stderr.write("starting\\n")
sys.stderr.write("mess serve: serving at http://127.0.0.1:54321/ (OpenAPI at /docs)\\n")
sys.stderr.flush()
for i in range({_SAYS} // 100):
    sys.stderr.write("x" * 99 + "\\n")
sys.stderr.flush()
print("done", flush=True)
"""


def test_a_server_that_says_more_than_a_pipe_holds_after_its_address_does_not_block() -> None:
    """A child that writes 200 KB to stderr after its address line, read by no one, runs to its end (it waited on the
    full pipe before); what it said is still there to read, line for line, after the address."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert served_at(proc, timeout=60) == "http://127.0.0.1:54321"
        assert proc.wait(timeout=20) == 0  # before any read of its stderr: it waited on the full pipe before
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert out == "done\n"
    assert err == ("x" * 99 + "\n") * (_SAYS // 100)
