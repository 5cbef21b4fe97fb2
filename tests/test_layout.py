"""The package's shape: imports run one way (no circles, no floor imports a higher one), and
every module is short enough to have one job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rnnt"
# A module past this many lines is asking to be split by responsibility; one may stay longer
# only with a first-lines comment "# longer than 400 lines: <why>".
MAX_MODULE_LINES = 400
LONG_MODULE_REASON = "# longer than 400 lines:"

# The floors of DESIGN.md, bottom first: a module imports only from its own floor (without
# circles) or lower ones. The first matching prefix decides.
FLOORS = (
    ("rnnt.constants",),
    (
        "rnnt.data",
        "rnnt.models",
        "rnnt.loss",
        "rnnt.scheduler",
        "rnnt.optim",
        "rnnt.corpus",
        "rnnt.prepare",
        "rnnt.arguments",
        "rnnt.op_counts",
    ),
    (
        "rnnt.decoding",
        "rnnt.greedy",
        "rnnt.beam",
        "rnnt.hotwords",
        "rnnt.timestamps",
        "rnnt.subtitles",
        "rnnt.streaming",
        "rnnt.checkpoint",
        "rnnt.warm_start",
        "rnnt.average",
    ),
    (
        "rnnt.train",
        "rnnt.evaluation",
        "rnnt.ema",
        "rnnt.metrics",
        "rnnt.callbacks",
        "rnnt.model_checkpoint",
        "rnnt.run_lock",
        "rnnt.transcribe",
        "rnnt.transcribe_audio",
        "rnnt.export",
        "rnnt.export_streaming",
        "rnnt.lightning_cli",
        "rnnt.demo",
        "rnnt.test_sets",
    ),
    (
        "rnnt.cli",
        "rnnt.cli_args",
        "rnnt.cli_demo",
        "rnnt.cli_prepare",
        "rnnt.cli_shard",
        "rnnt.cli_average",
        "rnnt.cli_transcribe",
        "rnnt.__main__",
    ),
)
# The training pipeline never needs the demo corpus; the model stack never needs Lightning.
NEVER_IMPORTS = {
    "rnnt.data": ("rnnt.corpus", "rnnt.prepare", "rnnt.models", "rnnt.loss"),
    "rnnt.models": ("rnnt.corpus", "rnnt.data", "lightning", "pytorch_lightning"),
    "rnnt.loss": ("rnnt.corpus", "rnnt.data", "rnnt.models", "lightning", "pytorch_lightning"),
    "rnnt.train": ("rnnt.corpus", "rnnt.prepare"),
    "rnnt.decoding": ("rnnt.corpus", "lightning"),
    "rnnt.greedy": ("rnnt.corpus", "lightning"),
    "rnnt.beam": ("rnnt.corpus", "lightning"),
    "rnnt.optim": ("rnnt.corpus", "rnnt.data", "lightning", "pytorch_lightning"),
    "rnnt.op_counts": ("rnnt.corpus", "rnnt.data", "rnnt.models", "lightning"),
    "rnnt.streaming": ("rnnt.corpus", "lightning"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``name`` imports, at the top, inside functions or for type checking."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from rnnt.models import decoder` imports the module rnnt.models.decoder
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {other for other in _imports(name, path, modules) if other in modules} - {name}
        for name, path in modules.items()
    }


def _floor(name: str) -> int:
    for level, prefixes in enumerate(FLOORS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return level
    raise AssertionError(f"{name} is on no floor of FLOORS in tests/test_layout.py: add it")


def _find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                return path[path.index(other) :] + [other]
            if other not in state and (circle := visit(other)):
                return circle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (circle := visit(name)):
            return circle
    return None


def test_package_imports_have_no_circle():
    circle = _find_circle(_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_find_circle_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _find_circle(graph) == ["a", "b", "c", "a"]
    assert _find_circle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_only_its_floor_or_lower():
    upward = [
        f"{name} (floor {_floor(name)}) imports {other} (floor {_floor(other)})"
        for name, others in _graph().items()
        for other in sorted(others)
        if _floor(other) > _floor(name)
    ]
    assert not upward, "imports against the floors of DESIGN.md:\n" + "\n".join(upward)


@pytest.mark.parametrize("prefix", sorted(NEVER_IMPORTS))
def test_forbidden_imports(prefix):
    modules = _modules()
    offenders = [
        f"{name} imports {other}"
        for name, path in modules.items()
        if name == prefix or name.startswith(prefix + ".")
        for other in sorted(_imports(name, path, modules))
        for banned in NEVER_IMPORTS[prefix]
        if other == banned or other.startswith(banned + ".")
    ]
    assert not offenders, "\n".join(offenders)


def test_nothing_imports_the_cli():
    importers = [name for name, others in _graph().items() if "rnnt.cli" in others]
    assert importers in ([], ["rnnt.__main__"]), importers


def test_every_module_is_short_or_says_why():
    offenders = []
    for path in _modules().values():
        lines = path.read_text().splitlines()
        reason = any(line.startswith(LONG_MODULE_REASON) for line in lines[:5])
        if len(lines) > MAX_MODULE_LINES and not reason:
            offenders.append(f"{path.relative_to(PACKAGE.parent)}: {len(lines)} lines")
    assert not offenders, (
        f"modules over {MAX_MODULE_LINES} lines (split by responsibility, or put "
        f"'{LONG_MODULE_REASON} <why>' in its first lines):\n" + "\n".join(offenders)
    )


def test_every_module_says_its_job():
    silent = [
        name
        for name, path in _modules().items()
        if path.stat().st_size and not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert not silent, "modules without a docstring saying their one job: " + ", ".join(silent)
