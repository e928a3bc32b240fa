"""No SQL is assembled from strings anywhere in the product code (issue 8, hostile text)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.fault]  # also the fault suite's SQL check (issue 8)

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("orderstream", "flows", "tasks", "expectations")
SQL_CALLS = {"text", "exec_driver_sql", "execute", "executescript", "executemany"}


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _assembled(node: ast.expr) -> str | None:
    """Why this expression builds a string at run time, or None if it does not."""
    if isinstance(node, ast.JoinedStr):
        return "f-string"
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        left = node.left
        if isinstance(left, ast.Constant) and isinstance(left.value, str) or isinstance(left, (ast.JoinedStr, ast.BinOp)):
            return "% / + string expression"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
        if _psycopg_composition(node.func.value):
            return None
        return f".{node.func.attr}(...)"
    return None


def _psycopg_composition(node: ast.expr) -> bool:
    """`sql.SQL("LISTEN {}")`: psycopg's composition quotes every part it formats in (Identifier, Literal)."""
    return (
        isinstance(node, ast.Call) and _name(node.func) == "SQL"
        and len(node.args) == 1 and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
    )


def offenders(paths: list[Path], root: Path = ROOT) -> list[str]:
    """`path:line: call() with why (in function)` for every call whose SQL is assembled from strings."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in SQL_CALLS and node.args:
                why = _assembled(node.args[0])
                if why:
                    inside = [f.name for f in functions if f.lineno <= node.lineno <= (f.end_lineno or f.lineno)]
                    where = f" in {inside[-1]}()" if inside else ""
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {_name(node.func)}() with {why}{where}")
    return found


def _unlocated(offender: str) -> str:
    """The offender without its line number, which moves with every edit above it."""
    path, _line, rest = offender.split(":", 2)
    return f"{path}:{rest}"


def product_files() -> list[Path]:
    return sorted(p for d in PRODUCT for p in (ROOT / d).rglob("*.py"))


def test_the_scan_catches_each_way_of_assembling_sql(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "text(f'select {x}')\nconn.exec_driver_sql('select ' + x)\nsession.execute('select %s' % x)\n"
        "conn.execute(text('select {}'.format(x)))\ncur.execute(f'drop {t}')\n"
        "ok = text('select 1')\nconn.exec_driver_sql('PRAGMA journal_mode=WAL')\n"
        "conn.execute(sql.SQL('LISTEN {}').format(sql.Identifier(channel)))\n"
        "conn.execute(sql.SQL(template).format(x))\n"
    )
    found = offenders([bad], root=tmp_path)
    assert sorted(f.split(":")[1] for f in found) == ["1", "2", "3", "4", "5", "9"], found


# Accepted exceptions (none today): an entry here must name why it is not user-controlled.
KNOWN: set[str] = set()


def test_no_sql_is_assembled_from_strings_in_the_product_code():
    files = product_files()
    assert len(files) > 20  # the scan really looked at the product
    found = {o for o in offenders(files) if _unlocated(o) not in KNOWN}
    assert not found, "SQL assembled from strings (use bound parameters or SQLAlchemy constructs):\n" + "\n".join(sorted(found))
