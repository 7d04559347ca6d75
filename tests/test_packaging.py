"""One installed name (docs/packaging.md): the halves import as onnxcam.runtime / onnxcam.export
and, from a clone, as runtime / export; neither imports the other; nothing installs as `runtime`."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HALVES = ("runtime", "export")


def absolute_project_imports(path: Path) -> list[str]:
    """The absolute imports of runtime.* or export.* in one file (relative ones are fine)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names
                  if name.split(".")[0] in HALVES]
    return found


@pytest.mark.parametrize("half", HALVES)
def test_each_half_imports_itself_relatively_and_never_the_other(half: str) -> None:
    absolute = [line for path in sorted((ROOT / half).rglob("*.py")) for line in absolute_project_imports(path)]
    assert absolute == []


def run_python(code: str, cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


INSTALLED = """
import importlib.util
from onnxcam import Explainer, Targets
import onnxcam.runtime.cli, onnxcam.runtime.methods, onnxcam.export.errors
assert Explainer.__module__ == "onnxcam.runtime.explainer", Explainer.__module__
assert Targets.__module__ == "onnxcam.runtime.targets", Targets.__module__
print(importlib.util.find_spec("runtime") is None and importlib.util.find_spec("export") is None)
"""


def test_the_installed_name_works_outside_the_clone_and_installs_no_generic_name(tmp_path: Path) -> None:
    """CI and the README install the project (pip install -e); run from elsewhere, only onnxcam exists."""
    result = run_python(INSTALLED, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True", "a package called runtime or export is installed"


def test_a_clone_that_was_never_installed_imports_under_both_names(tmp_path: Path) -> None:
    code = "import runtime, export.errors; from onnxcam import Explainer; import onnxcam.export.errors; print('ok')"
    result = run_python(code, cwd=tmp_path, pythonpath=str(ROOT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_python_m_onnxcam_runtime_runs_the_cli(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "onnxcam.runtime", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--model" in result.stdout
