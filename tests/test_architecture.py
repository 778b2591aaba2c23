"""Structure rules the code review asks for, checked on the source tree itself."""

from __future__ import annotations

import ast
from pathlib import Path

import mess
from mess.audio.tags import TAG_FIELDS
from mess.constants import LABEL_FIELDS

CLI = Path(mess.__file__).parent / "cli"
MAX_CLI_FUNCTION_LINES = 60


def _long_functions(folder: Path, limit: int) -> list[str]:
    """Every function (or method) under ``folder`` longer than ``limit`` lines, signature and decorators included."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - first + 1
                if length > limit:
                    found.append(f"{path.relative_to(folder.parent)}:{first} {node.name} ({length} lines)")
    return found


def test_no_cli_function_is_over_60_lines() -> None:
    assert _long_functions(CLI, MAX_CLI_FUNCTION_LINES) == []


def test_the_length_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_CLI_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"@decorator\ndef short() -> None:\n    pass\n\n\ndef long() -> None:\n{body}")
    assert _long_functions(tmp_path, MAX_CLI_FUNCTION_LINES) == [f"{tmp_path.name}/long.py:6 long (61 lines)"]


def test_cli_prints_json_only_through_emit_json() -> None:
    """``json.dumps`` in a CLI module bypasses emit_json's NaN -> null and path cleaning."""
    calls = []
    for path in sorted(CLI.rglob("*.py")):
        for function in ast.parse(path.read_text(encoding="utf-8")).body:
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dumps":
                    calls.append(f"{path.name}:{getattr(function, 'name', '<module>')}")
    assert calls == ["common.py:emit_json"]


def test_every_label_field_is_a_tag_the_store_keeps() -> None:
    assert set(LABEL_FIELDS) <= set(TAG_FIELDS)
