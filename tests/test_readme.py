"""The README's two commands are what a newcomer runs, and the test command is what CI runs."""

import os
import re
import tomllib
from pathlib import Path

from tests.fake_model import LABELS

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The command lines of the README's first bash block (its comments left out)."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_starts_with_the_main_job_and_the_test_command():
    main_job, tests = readme_commands()
    assert "python -m export.build" in main_job and "python -m runtime" in main_job
    assert tests.endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command_in_a_new_virtual_environment():
    ci = (ROOT / ".ci" / "run").read_text()
    _, tests = readme_commands()
    assert tests in ci.splitlines()
    assert "python3 -m venv" in ci and ci.index("python3 -m venv") < ci.index(tests)


def test_every_extra_the_test_command_installs_exists():
    _, tests = readme_commands()
    extras = re.search(r'"\.\[([^\]]*)\]"', tests).group(1).split(",")
    with open(ROOT / "pyproject.toml", "rb") as file:
        declared = tomllib.load(file)["project"]["optional-dependencies"]
    assert set(extras) <= set(declared)


def test_every_package_and_the_serve_page_are_in_the_distribution():
    """Installed as onnxcam.runtime / onnxcam.export (docs/packaging.md): every package on disk is
    listed under that name, and the serve page goes with it."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        setuptools = tomllib.load(file)["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("runtime", "export")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert setuptools["package-dir"] == {"onnxcam.runtime": "runtime", "onnxcam.export": "export"}
    assert set(setuptools["packages"]) == {"onnxcam"} | {f"onnxcam.{package}" for package in on_disk}
    for package, patterns in setuptools.get("package-data", {}).items():
        for pattern in patterns:
            folder = ROOT / package.removeprefix("onnxcam.").replace(".", "/")
            assert list(folder.glob(pattern)), (package, pattern)
    assert "page/index.html" in setuptools["package-data"]["onnxcam.runtime.serve"]


def test_the_readme_python_example_runs(model_path, capsys):
    """The README's Python block, on the fake test model instead of ResNet50."""
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    assert "models/resnet50_gradcam.onnx" in block
    code = block.replace("models/resnet50_gradcam.onnx", str(model_path))
    cwd = os.getcwd()
    os.chdir(ROOT)  # examples/cat.jpg
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and any(printed[0].startswith(f"{label} (") for label in LABELS)
