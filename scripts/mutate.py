"""Mutation testing: one AST mutant of a module at a time, each run against the tests that cover the module.

Run it on a copy of the committed tree, never on a worktree (each mutant is written into the copy):

    mkdir -p /tmp/mut/tree && git archive HEAD | tar -x -C /tmp/mut/tree
    cp tests/test_new.py /tmp/mut/tree/tests/        # uncommitted tests, if any
    source .venv/bin/activate
    python scripts/mutate.py /tmp/mut/tree src/mess/store/wal.py --func claimed_frames --baseline \\
        --out /tmp/mut/wal.jsonl -- tests/test_store_wal.py

Mutants (comparisons negated or their bounds moved, `and`/`or` swapped, `not`/`-` dropped, an `if`'s test
negated, constants +1/-1/0, floats x2/0.0, strings '', binary operators swapped, a returned value made None, a
call's argument dropped, a statement made `pass`; annotations, docstrings and f-string text are left alone) are
numbered in a fixed walk of the module's AST, so `--only N ...` reruns chosen ones and `--list` shows them.
Each mutant is unparsed into MODULE (its mtime made unique, so no stale .pyc is used), the tests run from TREE
with `PYTHONPATH=TREE/src python -m pytest -x -q -p no:randomly` under `--timeout`, and the original is put back.
A line per mutant: killed (a test failed), survived (all passed), timeout, no-tests or rcN.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CMP_NEG: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
CMP_EDGE: dict[type[ast.cmpop], type[ast.cmpop]] = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE,
                                                    ast.GtE: ast.Gt}
BIN: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.MatMult: ast.Mult, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr}
NOT_DELETED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)


@dataclass(frozen=True)
class Mutant:
    """One mutation: the node's index in `ast.walk` order, its kind and the kind's variant."""

    index: int
    kind: str
    variant: object = None


def untouched(tree: ast.AST) -> set[int]:
    """ids of the nodes never mutated: annotations, docstrings and the literal text of f-strings."""
    out: set[int] = set()
    for node in ast.walk(tree):
        parts: list[ast.AST] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            parts.append(node.returns)
        if isinstance(node, ast.arg) and node.annotation is not None:
            parts.append(node.annotation)
        if isinstance(node, ast.AnnAssign):
            parts.append(node.annotation)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                parts.append(first)
        if isinstance(node, ast.JoinedStr):
            out.update(id(v) for v in node.values if isinstance(v, ast.Constant))
        for part in parts:
            out.update(id(n) for n in ast.walk(part))
    return out


def spans(tree: ast.Module, funcs: list[str], lines: list[str]) -> list[tuple[int, int]] | None:
    """The line spans mutants are limited to: the named functions or classes (`name` or `Class.name`) and the
    `A-B` ranges; None (the whole module) when neither is given."""
    if not funcs and not lines:
        return None
    out = [(int(a), int(b or a)) for a, _, b in (spec.partition("-") for spec in lines)]

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = f"{prefix}{node.name}"
                if node.name in funcs or qual in funcs:
                    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    out.append((start, node.end_lineno or node.lineno))
                visit(node.body, qual + ".")

    visit(tree.body, "")
    return out


def constant_variants(value: object) -> list[object]:
    """What a constant is mutated into."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [w for w in dict.fromkeys([value + 1, value - 1, 0]) if w != value]
    if isinstance(value, float):
        return [w for w in dict.fromkeys([value * 2 if value else 1.0, 0.0]) if w != value]
    if isinstance(value, str):
        return [""] if value else [None]
    return [] if value is None or isinstance(value, bytes) else [None]


def mutants(tree: ast.Module, limit: list[tuple[int, int]] | None) -> list[Mutant]:
    """Every mutant of the module within `limit`, in a fixed order."""
    skip = untouched(tree)
    out: list[Mutant] = []
    for i, node in enumerate(ast.walk(tree)):
        line = getattr(node, "lineno", None)
        if id(node) in skip or line is None or (limit is not None and not any(a <= line <= b for a, b in limit)):
            continue
        if isinstance(node, ast.Compare):
            for j, op in enumerate(node.ops):
                out += [Mutant(i, "cmp_neg", j)] if type(op) in CMP_NEG else []
                out += [Mutant(i, "cmp_edge", j)] if type(op) in CMP_EDGE else []
        elif isinstance(node, ast.BoolOp):
            out.append(Mutant(i, "boolop"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
            out.append(Mutant(i, "unary_drop"))
        elif isinstance(node, ast.BinOp) and type(node.op) in BIN:
            out.append(Mutant(i, "binop"))
        elif isinstance(node, ast.AugAssign) and type(node.op) in BIN:
            out.append(Mutant(i, "augop"))
        elif isinstance(node, ast.Constant):
            out += [Mutant(i, "const", w) for w in constant_variants(node.value)]
        if isinstance(node, (ast.If, ast.While, ast.IfExp)):
            out.append(Mutant(i, "negate_test"))
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            out.append(Mutant(i, "return_none"))
        if isinstance(node, ast.Call):
            out += [Mutant(i, "drop_arg", j) for j in range(len(node.args))]
            out += [Mutant(i, "drop_kw", j) for j in range(len(node.keywords))]
        if isinstance(node, ast.stmt) and not isinstance(node, NOT_DELETED):
            out.append(Mutant(i, "delete"))
    return out


def _replace_in_parent(tree: ast.AST, node: ast.AST, replacement: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is node:
                setattr(parent, field, replacement)
                return
            if isinstance(value, list) and any(item is node for item in value):
                value[[item is node for item in value].index(True)] = replacement
                return


def apply(source: str, mutant: Mutant) -> tuple[str, str]:
    """The mutated module's source and a one-line description (`L<line> kind: before -> after`)."""
    tree = ast.parse(source)
    node: ast.AST = list(ast.walk(tree))[mutant.index]
    before = ast.unparse(node).splitlines()[0][:90]
    kind, variant = mutant.kind, mutant.variant
    if isinstance(node, ast.Compare) and kind in ("cmp_neg", "cmp_edge"):
        j = int(str(variant))
        node.ops[j] = (CMP_NEG if kind == "cmp_neg" else CMP_EDGE)[type(node.ops[j])]()
    elif isinstance(node, ast.BoolOp) and kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and kind in ("binop", "augop"):
        node.op = BIN[type(node.op)]()
    elif isinstance(node, ast.Constant) and kind == "const":
        node.value = variant  # type: ignore[assignment]
    elif isinstance(node, ast.UnaryOp) and kind == "unary_drop":
        _replace_in_parent(tree, node, node.operand)
    elif isinstance(node, (ast.If, ast.While, ast.IfExp)) and kind == "negate_test":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif isinstance(node, ast.Return) and kind == "return_none":
        node.value = ast.Constant(value=None)
    elif isinstance(node, ast.Call) and kind == "drop_arg":
        del node.args[int(str(variant))]
    elif isinstance(node, ast.Call) and kind == "drop_kw":
        del node.keywords[int(str(variant))]
    elif kind == "delete":
        _replace_in_parent(tree, node, ast.Pass())
    else:
        raise ValueError(f"{mutant} does not fit node {before!r}")
    ast.fix_missing_locations(tree)
    after = "pass" if kind == "delete" else ast.unparse(list(ast.walk(tree))[mutant.index]).splitlines()[0][:90]
    return ast.unparse(tree), f"L{getattr(node, 'lineno', '?')} {kind}: {before} -> {after}"


def run_tests(tree: Path, args: list[str], timeout: float) -> tuple[str, float, str]:
    """Run pytest on `args` in the copy: (status, seconds, the failing lines or the output's tail)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "MESS_MUTANT_TREE": str(tree)}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p",
                             "no:cacheprovider", *args], cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return "timeout", time.monotonic() - started, out[-600:]
    status = {0: "survived", 1: "killed", 5: "no-tests"}.get(proc.returncode, f"rc{proc.returncode}")
    failing = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR", "E "))][:4]
    return status, time.monotonic() - started, "\n".join(failing) or out[-300:]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options and, after `--`, pytest's arguments."""
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tree", type=Path, help="a copy of the committed tree (git archive HEAD | tar -x -C TREE)")
    p.add_argument("module", help="the module's path inside TREE, e.g. src/mess/store/wal.py")
    p.add_argument("--func", nargs="*", default=[], help="mutate only these functions or classes")
    p.add_argument("--lines", nargs="*", default=[], help="mutate only these line ranges (A-B)")
    p.add_argument("--only", nargs="*", type=int, default=[], help="run only these mutant numbers")
    p.add_argument("--timeout", type=float, default=300, help="seconds per mutant's test run")
    p.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    p.add_argument("--baseline", action="store_true", help="first run the tests on the unparsed, unmutated module")
    p.add_argument("--out", type=Path, help="append a JSON line per mutant to this file")
    return p.parse_args(argv[:cut]), argv[cut + 1:]


def main(argv: list[str]) -> int:
    """Run the mutants; 1 when the baseline fails, else 0."""
    opts, tests = parse(argv)
    tree_dir = opts.tree.resolve()
    path = tree_dir / opts.module
    original = path.read_bytes()
    source = original.decode()
    tree = ast.parse(source)
    plain = ast.unparse(tree)
    stat = path.stat()
    stamp = [int(time.time()) + 10]

    def write(text: bytes) -> None:
        path.write_bytes(text)
        stamp[0] += 2
        os.utime(path, (stamp[0], stamp[0]))

    out = opts.out.open("a") if opts.out else None
    try:
        if opts.baseline and not opts.list:
            write(plain.encode())
            status, secs, tail = run_tests(tree_dir, tests, opts.timeout)
            print(f"baseline (unparsed): {status} {secs:.0f}s {tail if status != 'survived' else ''}", flush=True)
            if status != "survived":
                return 1
        for n, mutant in enumerate(mutants(tree, spans(tree, opts.func, opts.lines))):
            if opts.only and n not in opts.only:
                continue
            mutated, desc = apply(source, mutant)
            if mutated == plain or opts.list:
                print(f"#{n} {desc}{': no change' if mutated == plain else ''}", flush=True)
                continue
            try:
                compile(mutated, str(path), "exec")
            except SyntaxError as exc:
                print(f"#{n} {desc}: does not compile ({exc})", flush=True)
                continue
            write(mutated.encode())
            status, secs, tail = run_tests(tree_dir, tests, opts.timeout)
            write(original)
            print(f"#{n} {status:8} {secs:5.0f}s {desc}", flush=True)
            if out:
                out.write(json.dumps({"n": n, "status": status, "secs": round(secs, 1), "desc": desc,
                                      "tail": tail[-500:]}) + "\n")
                out.flush()
    finally:
        path.write_bytes(original)
        os.utime(path, (stat.st_atime, stat.st_mtime))
        if out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
