"""User-facing text cites papers, never the project's internal files, design sections or issues.

Scanned: README.md, docs/*.md, the shipped configs, every docstring of the package (the API
reference is built from them), ``wgflow --help`` and every subcommand's ``--help``,
``wgflow list`` and ``wgflow config NAME --describe`` for every named experiment."""

import ast
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from wgflow import experiments
from wgflow.cli import app

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "wgflow"

#: what a user cannot know: the research notes' numbers, the design document, issue numbers,
#: the project's own process words
FORBIDDEN = [
    re.compile(r"\bseeds?\s*0\d\d\b", re.IGNORECASE),  # "seed 001", "seeds 000 and 002"
    re.compile(r"DESIGN\s*§"),
    re.compile(r"DESIGN\.md"),
    re.compile(r"\bDESIGN's\b"),
    re.compile(r"shared/(seeds|DESIGN)"),
    re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE),
    re.compile(r"\b(wired by|merged by) the\b|\bthe integrator\b|\bthe lead\b", re.IGNORECASE),
]

runner = CliRunner()


def offences(text: str) -> list[str]:
    found = []
    for pattern in FORBIDDEN:
        for m in pattern.finditer(text):
            line = text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.end()) % (len(text) + 1)]
            found.append(f"{m.group(0)!r} in: {line.strip()[:160]}")
    return found


def test_the_scan_sees_what_it_must():
    """The patterns catch the forms that reached the docs before (and leave papers' sections alone)."""
    for bad in ["seed 001's loss", "Seeds 000 and 002", "(DESIGN §3, issue #5)", "`../shared/DESIGN.md` §1", "wired by the integrator", "DESIGN's factor 2"]:
        assert offences(bad), bad
    for fine in ["Chizat & Bach 2018, §4", "Pilanci & Ergen (2020)", "10 seeds", "seed 0's paths", "docs/jko.md §9", "an ODE integrator"]:
        assert not offences(fine), fine


def _docs():
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((PACKAGE / "experiments" / "configs").glob("*.toml"))]


@pytest.mark.parametrize("path", _docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_speak_plainly(path):
    assert not offences(path.read_text()), offences(path.read_text())


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _docstrings(path: Path) -> str:
    tree = ast.parse(path.read_text())
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    texts = [ast.get_docstring(n, clean=False) or "" for n in nodes]
    # descriptions of config fields and help texts: the string arguments named description / help
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        for kw in call.keywords:
            if kw.arg in ("description", "help") and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                texts.append(kw.value.value)
    return "\n".join(texts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_docstrings_and_field_descriptions_speak_plainly(path):
    found = offences(_docstrings(path))
    assert not found, found


def _commands() -> list[list[str]]:
    group = typer.main.get_command(app)
    return [[]] + [[name] for name in group.commands]  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "wgflow")
def test_help_speaks_plainly(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert not offences(result.output), offences(result.output)


def test_list_speaks_plainly():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert not offences(result.output), offences(result.output)


@pytest.mark.parametrize("name", sorted(experiments.named()))
def test_describe_speaks_plainly(name):
    result = runner.invoke(app, ["config", name, "--describe"], env={"COLUMNS": "400"})  # wide: one line per field
    assert result.exit_code == 0, result.output
    assert not offences(result.output), offences(result.output)
