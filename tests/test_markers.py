"""tests/conftest.py's markers: what a test file imports decides whether it needs TensorFlow, Ray or
a browser, so that the core suite runs without them; CI may skip nothing."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests import conftest

ROOT = Path(__file__).resolve().parents[1]


def write_test(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def test_markers_follow_the_imports_of_a_file_and_of_the_project_modules_it_imports(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "ROOT", tmp_path)
    conftest.project_module_markers.cache_clear()
    conftest.file_markers.cache_clear()
    try:
        (tmp_path / "export").mkdir()
        (tmp_path / "tests").mkdir()
        (tmp_path / "runtime").mkdir()
        write_test(tmp_path / "export", "verify.py", "import keras\n")
        write_test(tmp_path / "export", "build.py", "import os\n\ndef main():\n    import tensorflow\n")
        write_test(tmp_path / "export", "uses_verify.py", "from . import verify\n")
        tests = tmp_path / "tests"
        cases = {
            "test_direct.py": ("import ray\n", {"ray"}),
            "test_inside.py": ("def test_x():\n    from playwright.sync_api import sync_playwright\n", {"browser"}),
            "test_through.py": ("from export.uses_verify import x\n", {"tf"}),
            "test_lazy.py": ("from export.build import main\n", set()),  # TensorFlow only when main runs
            "test_plain.py": ("import numpy\n", set()),
        }
        for name, (source, expected) in cases.items():
            assert conftest.file_markers(write_test(tests, name, source)) == expected, name
    finally:
        conftest.project_module_markers.cache_clear()
        conftest.file_markers.cache_clear()


def test_this_repositorys_files():
    def markers(name):
        return conftest.file_markers(ROOT / "tests" / name)

    assert markers("test_batch.py") == {"ray"} and markers("test_serve_page.py") == {"browser"}
    assert markers("test_export_resnet50.py") == {"tf"} and markers("test_runtime_cli.py") == set()


def test_ci_requires_every_test_to_run():
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"export {conftest.REQUIRE_ALL}=1" in ci.splitlines()
    assert ci.index(conftest.REQUIRE_ALL) < ci.index("python -m pytest")


PAGE_TEST = """
def test_page():
    from playwright.sync_api import sync_playwright  # marks the file "browser"; need not be installed

    assert False, "ran"
"""


def test_without_chromium_the_page_test_is_skipped_with_the_install_line_unless_required(tmp_path):
    test_file = write_test(ROOT / "tests", f"test_zz_marker_probe_{os.getpid()}.py", PAGE_TEST)
    env = dict(os.environ, PATH=str(tmp_path))  # no chromium on this PATH
    env.pop(conftest.REQUIRE_ALL, None)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(test_file)]
    try:
        skipped = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        required = subprocess.run(command, cwd=ROOT, env=env | {conftest.REQUIRE_ALL: "1"},
                                  capture_output=True, text=True, timeout=120)
    finally:
        test_file.unlink()
    assert skipped.returncode == 0 and conftest.CHROMIUM_INSTALL in skipped.stdout, skipped.stdout
    assert required.returncode == 1 and "1 failed" in required.stdout, required.stdout
