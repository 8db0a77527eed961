"""The documentation stands alone and agrees with the code.

Every Markdown file of the repository (README.md, docs/, bench/, deploy/, ...)
refers to nothing outside the repository, and every relative link in it
leads to a file of the repository (and, for ``#anchor``, to one of its
headings). docs/API.md lists every setting, metric, route, topic, reason and
command the code defines, and nothing the code does not; docs/ARCHITECTURE.md
names every topic, stage and table in its diagram.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
API = "docs/API.md"
ARCHITECTURE = "docs/ARCHITECTURE.md"

# Things a clone of the repository does not have: nothing may point at them.
OUTSIDE = ("../shared", "/work/shared", "CONTRACT.md", "STYLE.md")
# Not part of the repository when git is not at hand (see _walk).
UNTRACKED_DIRS = {
    ".git",
    ".venv",
    "var",
    "build",
    "dist",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
}
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
METRIC_CLASSES = {
    "Counter",
    "Gauge",
    "Histogram",
    "Summary",
    "Info",
    "Enum",
    "CounterMetricFamily",
    "GaugeMetricFamily",
    "HistogramMetricFamily",
    "SummaryMetricFamily",
    "InfoMetricFamily",
}
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


# --- the repository's files ----------------------------------------------------------


@cache
def repo_files() -> frozenset[str]:
    """Tracked files, and untracked ones git does not ignore (a doc being added)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return frozenset(_walk())
    return frozenset(name for name in out.split("\0") if name and (ROOT / name).is_file())


def _walk() -> Iterator[str]:
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in UNTRACKED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            yield (Path(folder) / name).relative_to(ROOT).as_posix()


@cache
def repo_dirs() -> frozenset[str]:
    return frozenset(
        parent.as_posix() for name in repo_files() for parent in Path(name).parents
    ) - {"."}


MARKDOWN = sorted(name for name in repo_files() if name.endswith(".md"))


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (not links there)."""
    kept, fence = [], None
    for line in text.splitlines():
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * len(opened.group(1))
            kept.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            kept.append("")
        else:
            kept.append(line)
    return re.sub(r"(`+).*?\1", "", "\n".join(kept))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose_keep_headings(text: str) -> Iterator[str]:
    """The lines of ``text`` outside fenced code blocks (a ``#`` there is no heading)."""
    fence = None
    for line in text.splitlines():
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * len(opened.group(1))
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
        else:
            yield line


@cache
def anchors(name: str) -> frozenset[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_keep_headings(read(name)):
        heading = HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(name: str) -> list[str]:
    text = prose(read(name))
    return [*LINK.findall(text), *REFERENCE.findall(text)]


def resolve(source: str, target: str) -> str | None:
    """The repository path a relative link of ``source`` leads to (None: outside)."""
    joined = os.path.normpath(os.path.join(os.path.dirname(source), unquote(target)))
    if joined == ".":
        return ""
    if joined.startswith("..") or os.path.isabs(joined):
        return None
    return Path(joined).as_posix()


def split_link(target: str) -> tuple[str, str | None]:
    path, _, anchor = target.partition("#")
    return path, (anchor if "#" in target else None)


def linked_files() -> set[str]:
    """Repository files that the Markdown files link to, other than Markdown files."""
    found = set()
    for name in MARKDOWN:
        for target in links(name):
            path, _ = split_link(target)
            if not path or SCHEME.match(target):
                continue
            resolved = resolve(name, path)
            if resolved in repo_files() and not resolved.endswith(".md"):
                found.add(resolved)
    return found


# --- what the code defines -----------------------------------------------------------


def python_files(*folders: str) -> list[Path]:
    return sorted(
        ROOT / name
        for name in repo_files()
        if name.endswith(".py") and name.split("/", 1)[0] in folders
    )


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def string_constants(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield node.value


class _Asked(dict[str, str]):
    """An empty environment that remembers what was looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


@cache
def settings_names() -> frozenset[str]:
    """Every ``DMP_*`` variable: named in dmp_faust/ (settings.py and the commands that
    read one of their own), and every one ``Settings.from_env`` looks up."""
    from dmp_faust.settings import Settings

    named = {
        value
        for value in string_constants(python_files("dmp_faust"))
        if re.fullmatch(r"DMP_[A-Z0-9_]*[A-Z0-9]", value)
    }
    env = _Asked()
    Settings.from_env(env)
    return frozenset(named | {name for name in env.asked if name.startswith("DMP_")})


def metric_calls(paths: list[Path]) -> Iterator[tuple[str, str]]:
    """(class, name) of every Prometheus metric constructed in ``paths``."""
    for path in paths:
        for node in ast.walk(parse(path)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if kind not in METRIC_CLASSES:
                continue
            args = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "name")]
            for arg in args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield kind, arg.value


def exported(kind: str, name: str) -> str:
    """The name Prometheus scrapes: a counter's carries ``_total``."""
    if kind in ("Counter", "CounterMetricFamily"):
        return name.removesuffix("_total") + "_total"
    return name


@cache
def metric_names() -> frozenset[str]:
    found = metric_calls(python_files("dmp_faust", "agents", "tables"))
    return frozenset(exported(kind, name) for kind, name in found if name.startswith("dmp_"))


@cache
def openapi_operations() -> frozenset[str]:
    spec = yaml.safe_load(read("dmp_faust/openapi.yaml"))
    return frozenset(
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )


def topic_names() -> set[str]:
    """``dmp.<name>`` of every ``_topic("<name>")`` in dmp_faust/topics.py."""
    return {
        f"dmp.{node.args[0].value}"
        for node in ast.walk(parse(ROOT / "dmp_faust" / "topics.py"))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "_topic"
        and isinstance(node.args[0], ast.Constant)
    }


def commands() -> set[str]:
    """Every ``command == "<name>"`` dmp_faust/cli.py dispatches on."""
    found = set()
    for node in ast.walk(parse(ROOT / "dmp_faust" / "cli.py")):
        if (
            isinstance(node, ast.Compare)
            and getattr(node.left, "id", None) == "command"
            and isinstance(node.ops[0], ast.Eq)
            and isinstance(node.comparators[0], ast.Constant)
        ):
            found.add(node.comparators[0].value)
    return found


def table_names() -> set[str]:
    """The name of every ``app.Table("<name>", ...)`` in tables/."""
    return {
        node.args[0].value
        for path in python_files("tables")
        for node in ast.walk(parse(path))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "Table"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def agent_names() -> set[str]:
    """Every function of agents/ decorated with ``@app.agent(...)``."""
    found = set()
    for path in python_files("agents"):
        for node in ast.walk(parse(path)):
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                call = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(call, ast.Attribute) and call.attr == "agent":
                    found.add(node.name)
    return found


def first_cells(text: str) -> list[str]:
    """The backticked names that open the rows of the Markdown tables of ``text``."""
    return [cell.group(1) for cell in re.finditer(r"^\|\s*`([^`]+)`", text, re.MULTILINE)]


def mermaid(text: str) -> str:
    blocks = re.findall(r"^```mermaid\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    return "\n".join(blocks)


# --- every Markdown file -------------------------------------------------------------


def test_the_markdown_files_are_found() -> None:
    assert "README.md" in MARKDOWN
    assert {API, ARCHITECTURE, "docs/RELIABILITY.md"} <= set(MARKDOWN)
    assert not [name for name in MARKDOWN if name.split("/", 1)[0] in UNTRACKED_DIRS]


@pytest.mark.parametrize("name", MARKDOWN)
def test_no_reference_outside_the_repository(name: str) -> None:
    found = [
        f"{name}:{number}: {word}"
        for number, line in enumerate(read(name).splitlines(), 1)
        for word in OUTSIDE
        if word in line
    ]
    assert not found, "refers to what a clone does not have:\n" + "\n".join(found)


@pytest.mark.parametrize("name", MARKDOWN)
def test_relative_links_lead_into_the_repository(name: str) -> None:
    broken = []
    for target in links(name):
        if re.match(r"(?i)(https?|mailto):", target):
            continue
        if SCHEME.match(target) or target.startswith("/"):
            broken.append(f"{target}: not a relative link")
            continue
        path, anchor = split_link(target)
        resolved = resolve(name, path) if path else name
        if resolved is None:
            broken.append(f"{target}: outside the repository")
        elif resolved not in repo_files() and resolved.rstrip("/") not in repo_dirs():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved}")
    assert not broken, f"{name}:\n" + "\n".join(broken)


def test_linked_files_refer_to_nothing_outside() -> None:
    """openapi.yaml, settings.py and the other files the docs send a reader to."""
    assert "dmp_faust/openapi.yaml" in linked_files()
    found = [
        f"{name}:{number}: {word}"
        for name in sorted(linked_files())
        if (ROOT / name).suffix in (".py", ".yaml", ".yml", ".toml", ".json", ".txt", "")
        for number, line in enumerate(read(name).splitlines(), 1)
        for word in OUTSIDE
        if word in line
    ]
    assert not found, "refers to what a clone does not have:\n" + "\n".join(found)


def test_the_readme_points_to_the_interface_and_the_architecture() -> None:
    targets = {split_link(target)[0] for target in links("README.md")}
    missing = sorted({API, ARCHITECTURE} - targets)
    assert not missing, f"README.md does not link {', '.join(missing)}"


# --- docs/API.md against the code ----------------------------------------------------


def test_api_links_the_openapi_document() -> None:
    assert "../dmp_faust/openapi.yaml" in {split_link(t)[0] for t in links(API)}


def test_api_lists_every_setting() -> None:
    names = settings_names()
    assert {"DMP_KAFKA_BOOTSTRAP", "DMP_PARTITIONS", "DMP_ALERT_ALPHA"} <= names
    listed = set(first_cells(read(API)))
    missing = sorted(names - listed)
    assert not missing, f"{API} has no row for: {', '.join(missing)}"


def test_api_lists_no_setting_the_code_does_not_read() -> None:
    listed = {cell for cell in first_cells(read(API)) if cell.startswith("DMP_")}
    unknown = sorted(listed - settings_names())
    assert not unknown, f"{API} lists settings no code reads: {', '.join(unknown)}"


def test_api_lists_every_metric() -> None:
    names = metric_names()
    in_metrics_py = {
        exported(kind, name)
        for kind, name in metric_calls([ROOT / "dmp_faust" / "metrics.py"])
        if name.startswith("dmp_")
    }
    assert {"dmp_events_received_total", "dmp_event_latency_seconds"} <= in_metrics_py <= names
    listed = set(first_cells(read(API)))
    missing = sorted(names - listed)
    assert not missing, f"{API} has no row for: {', '.join(missing)}"


def test_api_lists_no_metric_the_code_does_not_export() -> None:
    listed = {cell for cell in first_cells(read(API)) if re.fullmatch(r"dmp_[a-z0-9_]+", cell)}
    unknown = sorted(listed - metric_names())
    assert not unknown, f"{API} lists metrics no code registers: {', '.join(unknown)}"


def test_api_lists_every_route_of_the_openapi_document() -> None:
    operations = openapi_operations()
    assert {"POST /collect", "GET /health", "DELETE /profiles/{profile_id}"} <= operations
    listed = set(first_cells(read(API)))
    missing = sorted(operations - listed)
    assert not missing, f"{API} has no row for: {', '.join(missing)}"


def test_api_lists_no_route_the_openapi_document_lacks() -> None:
    methods = "|".join(m.upper() for m in HTTP_METHODS)
    listed = {cell for cell in first_cells(read(API)) if re.fullmatch(rf"({methods}) /\S*", cell)}
    assert listed, f"{API} has no table of routes"
    unknown = sorted(listed - openapi_operations())
    assert not unknown, f"dmp_faust/openapi.yaml lacks routes {API} lists: {', '.join(unknown)}"


def test_api_lists_every_topic_and_reason() -> None:
    from dmp_faust.domain.events import REASONS

    listed = set(first_cells(read(API)))
    topics = topic_names()
    assert {"dmp.events.raw", "dmp.events.dlq"} <= topics
    missing = sorted((topics | set(REASONS)) - listed)
    assert not missing, f"{API} has no row for: {', '.join(missing)}"


def test_api_lists_every_command() -> None:
    names = commands()
    assert {"worker", "demo", "dlq"} <= names
    text = read(API)
    missing = sorted(name for name in names if f"`dmp-faust {name}" not in text)
    assert not missing, f"{API} does not describe: dmp-faust {', '.join(missing)}"


# --- docs/ARCHITECTURE.md against the code -------------------------------------------


def test_architecture_diagram_names_every_topic_stage_and_table() -> None:
    diagram = mermaid(read(ARCHITECTURE))
    assert diagram.lstrip().startswith("flowchart"), f"{ARCHITECTURE} has no mermaid flowchart"
    names = topic_names() | agent_names() | table_names() | {"validate_events"}
    assert {"build_profiles", "profiles", "dmp.events.clean"} <= names
    missing = sorted(n for n in names if not re.search(rf"[\"(\[]{re.escape(n)}[\")\]<]", diagram))
    assert not missing, f"the diagram of {ARCHITECTURE} lacks: {', '.join(missing)}"


def test_architecture_points_to_reliability() -> None:
    assert "RELIABILITY.md" in {split_link(t)[0] for t in links(ARCHITECTURE)}
    assert "where-each-concept-lives-in-the-code" in anchors(ARCHITECTURE)
