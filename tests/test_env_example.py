"""``.env.example`` lists exactly the environment variables posgateway/settings.py reads.

The reads are found in settings.py's syntax tree: its ``env_*`` helpers, ``os.environ`` /
``os.getenv`` with a literal name, and ``dj_database_url.config`` (``DATABASE_URL`` unless
given ``env=``). A variable is listed as ``NAME=default`` or, where no value spells the default,
commented out as ``# NAME=example``.
"""

from __future__ import annotations

import ast
import re

from tests.services import ROOT

SETTINGS = ROOT / "posgateway" / "settings.py"
EXAMPLE = ROOT / ".env.example"
HELPERS = {"env_str", "env_bool", "env_float", "env_int", "env_list"}
LISTED = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _outside_the_helpers(tree: ast.Module):
    """Every node but those inside the ``env_*`` helpers' own definitions (which read the
    variable they are given: their calls are counted instead)."""
    for top in tree.body:
        if isinstance(top, ast.FunctionDef) and top.name in HELPERS:
            continue
        yield from ast.walk(top)


def settings_reads() -> set[str]:
    names: set[str] = set()
    for node in _outside_the_helpers(ast.parse(SETTINGS.read_text())):
        if isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            names.add(_literal(node.slice) or "")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        first = node.args[0] if node.args else None
        if isinstance(func, ast.Name) and func.id in HELPERS:
            names.add(_literal(first) or "")
        elif isinstance(func, ast.Attribute):
            owner = func.value
            environ_get = func.attr in {"get", "setdefault", "pop"} and _is_os_environ(owner)
            getenv = func.attr == "getenv" and isinstance(owner, ast.Name) and owner.id == "os"
            if environ_get or getenv:
                names.add(_literal(first) or "")
            elif (
                func.attr == "config"
                and isinstance(owner, ast.Name)
                and owner.id == "dj_database_url"
            ):
                given = next((k.value for k in node.keywords if k.arg == "env"), None)
                names.add((_literal(given) or "") if given is not None else "DATABASE_URL")
    return names


def example_names() -> list[str]:
    return LISTED.findall(EXAMPLE.read_text())


def test_settings_reads_are_all_found_by_name():
    reads = settings_reads()
    assert "" not in reads, "settings.py reads an environment variable whose name is not a literal"
    # A sanity floor: the parser finds the helpers and DATABASE_URL.
    assert {"DATABASE_URL", "SECRET_KEY", "REDIS_URL", "PAYMENT_TIMEOUT_S"} <= reads


def test_env_example_lists_every_variable_settings_reads_and_no_other():
    reads = settings_reads()
    listed = example_names()
    assert sorted(reads - set(listed)) == [], "missing from .env.example"
    assert sorted(set(listed) - reads) == [], "in .env.example, but settings.py never reads them"
    assert sorted({n for n in listed if listed.count(n) > 1}) == [], "listed more than once"


def test_each_listed_variable_has_a_comment_above_it():
    lines = EXAMPLE.read_text().splitlines()
    for n, line in enumerate(lines):
        if LISTED.match(line) and not line.startswith("#"):
            above = lines[n - 1] if n else ""
            assert above.startswith("# "), f"{line!r} has no comment line above it"
