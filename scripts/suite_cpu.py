"""Where the test suite's CPU goes: a pytest plugin that records each test's wall time, its own CPU and its reaped
children's CPU, and a summary of what it recorded.

    source .venv/bin/activate
    SUITE_CPU_OUT=/tmp/cpu.jsonl PYTHONPATH=scripts python -m pytest -n 2 --dist loadgroup -p suite_cpu
    python scripts/suite_cpu.py /tmp/cpu.jsonl

A module fixture's cost falls on the first test that uses it. Processes not yet reaped when a test ends (a Ray
cluster, the decoders' zygote, a process pool) are counted on the test during which they end, or not at all; on a
loaded machine the walls stretch, the CPU figures far less.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Append ``{"id", "wall", "self", "children"}`` for ``item`` (setup, call and teardown) to $SUITE_CPU_OUT."""
    wall, (own, children) = time.perf_counter(), _cpu()
    yield
    wall, (own_after, children_after) = time.perf_counter() - wall, _cpu()
    row = {"id": item.nodeid, "wall": wall, "self": own_after - own, "children": children_after - children}
    with open(os.environ["SUITE_CPU_OUT"], "a") as out:  # one short line per write: the workers' lines do not mix
        out.write(json.dumps(row) + "\n")


def main(path: str, top: int = 40) -> None:
    """Print the totals, the modules by CPU and the ``top`` tests by CPU of a recording."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    cpu = {r["id"]: r["self"] + r["children"] for r in rows}
    print(f"{len(rows)} tests: wall {sum(r['wall'] for r in rows):.0f} s, CPU {sum(cpu.values()):.0f} s")
    modules: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        module = modules[r["id"].split("::")[0]]
        module[0] += cpu[r["id"]]
        module[1] += r["wall"]
        module[2] += 1
    print("CPU s   wall s  tests  module")
    for name, (seconds, wall, count) in sorted(modules.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{seconds:6.1f} {wall:8.1f} {count:6d}  {name}")
    print("CPU s   wall s  test")
    for r in sorted(rows, key=lambda r: -cpu[r["id"]])[:top]:
        print(f"{cpu[r['id']]:6.1f} {r['wall']:8.1f}  {r['id']}")


if __name__ == "__main__":
    main(sys.argv[1])
