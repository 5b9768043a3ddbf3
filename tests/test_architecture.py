"""The architecture as docs/architecture.md describes it: the picture, the rules table, the
protocol's actions."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

from posgateway.gateway import frames
from posgateway.gateway.actions import ACTIONS

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()


def test_the_layer_picture_is_the_codes_and_the_package_graph_has_no_cycle():
    check = subprocess.run(
        [sys.executable, "docs/architecture_graph.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def _references() -> list[str]:
    table = DOC.split("## Rules and where they live", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`([a-z_.]+:[A-Za-z_.]+)`", table)


def test_every_rule_in_the_table_names_code_that_exists():
    references = _references()
    assert len(references) > 40
    for reference in references:
        module, name = reference.split(":")
        target = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)  # AttributeError names what is missing


def _protocol_actions() -> set[str]:
    """Every action the protocol's docs name (docs/protocol.md, and docs/terminal-api.md for
    display, input and sessions): in backticks, or as ``"action": "…"`` in an example."""
    text = "".join(
        (ROOT / "docs" / name).read_text() for name in ("protocol.md", "terminal-api.md")
    )
    return set(re.findall(r"`([a-zA-Z]+)`", text)) | set(
        re.findall(r'"action":\s*"([a-zA-Z]+)"', text)
    )


def test_the_protocol_docs_name_every_action_the_gateway_sends_and_receives():
    documented = _protocol_actions()
    assert set(frames.SENT_ACTIONS) <= documented, set(frames.SENT_ACTIONS) - documented
    assert set(ACTIONS) <= documented, set(ACTIONS) - documented
