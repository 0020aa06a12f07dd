"""The shape rules of the code base, checked so that a later change cannot quietly break them.

- engine/ imports nothing from the front ends, server/ or clients/; audio/ imports nothing above it.
- http_api/ and realtime/ are peers: neither imports the other, server/ or clients/.
- No lane scheduler imports torch, directly or through what it imports.
- No file in these packages is over 400 lines, and no function over 60.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "audio", "http_api", "realtime", "server")
FORBIDDEN = {
    "engine": {"http_api", "realtime", "server", "clients"},
    "audio": {"engine", "http_api", "realtime", "server", "clients"},
    "http_api": {"realtime", "server", "clients"},
    "realtime": {"http_api", "server", "clients"},
}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a file imports anywhere in it (lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_respect_layers(package: str) -> None:
    bad = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in python_files(package)
    }
    assert not {k: v for k, v in bad.items() if v}, "imports across layers"


def scheduler_modules() -> list[str]:
    paths = sorted((ROOT / "engine").rglob("*scheduler*.py"))
    return [".".join(path.relative_to(ROOT).with_suffix("").parts) for path in paths]


def test_there_are_lane_schedulers() -> None:
    assert {"engine.llm.scheduler", "engine.asr.scheduler"} <= set(scheduler_modules())


@pytest.mark.parametrize("module", scheduler_modules())
def test_schedulers_import_no_torch(module: str) -> None:
    probe = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"{module} pulls in torch"


def test_files_and_functions_stay_small() -> None:
    too_long: list[str] = []
    for package in PACKAGES:
        for path in python_files(package):
            source = path.read_text()
            name = str(path.relative_to(ROOT))
            if len(source.splitlines()) > MAX_FILE_LINES:
                too_long.append(f"{name}: {len(source.splitlines())} lines")
            for node in ast.walk(ast.parse(source, name)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                    if lines > MAX_FUNCTION_LINES:
                        too_long.append(f"{name}:{node.lineno} {node.name}() is {lines} lines")
    assert not too_long, "\n".join(too_long)


def test_layering_check_can_fail(tmp_path: Path) -> None:
    """The import scan sees a lazy import inside a function, the kind that once hid a cycle."""
    sample = tmp_path / "lazy.py"
    sample.write_text("def f():\n    from http_api.app_keys import ENGINE_KEY\n    return ENGINE_KEY\n")
    assert imported_packages(sample) == {"http_api"}
