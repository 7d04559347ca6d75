"""Markers and shared fixtures.

Markers (registered in pyproject.toml), applied here so that test files need not say them:
  tf       needs TensorFlow/Keras: a test file that imports them, directly or through a module of
           export/, runtime/ or tests/ that imports them at its top; or a test that uses a fixture
           exporting a Keras model (resnet50_export, user_model, shapes_model, random_resnet50)
  ray      needs Ray: a test file that imports it, the same way
  browser  drives Chromium: a test file that imports playwright; skipped, with the install line as
           its reason, where Chromium is not installed, unless ONNXCAM_REQUIRE_ALL=1 (.ci/run sets it)
The core suite, no TensorFlow, no Ray, no browser:  python -m pytest -m "not tf and not ray and not browser"
With such a -m, a file whose every test it deselects is not even imported.

Fixtures: model_path (the fake four-class model, no TensorFlow); Keras models exported once
per session, one export at a time.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESNET50_SEED = 0
REQUIRE_ALL = "ONNXCAM_REQUIRE_ALL"  # set by .ci/run: the browser test runs (and fails) without Chromium
CHROMIUM_INSTALL = "Chromium is not installed (apt-get install -y chromium)"
MARKER_LIBRARIES = {"tf": {"tensorflow", "keras", "tf_keras", "tf2onnx"}, "ray": {"ray"}, "browser": {"playwright"}}
TF_FIXTURES = {"resnet50_export", "random_resnet50", "user_model", "shapes_model"}
PROJECT_PACKAGES = ("export", "runtime", "tests")


def imported_modules(path: Path, top_level_only: bool) -> set[str]:
    """The modules a file imports (with `from a import b`, both a and a.b), as absolute names;
    at its top level only, or anywhere (a test's imports inside its functions count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    nodes = tree.body if top_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def library_markers(imported: set[str]) -> set[str]:
    """The markers that importing these modules needs, by library."""
    return {
        marker for marker, libraries in MARKER_LIBRARIES.items()
        if any(module.split(".")[0] in libraries for module in imported)
    }


@functools.cache
def project_module_markers() -> dict[str, frozenset[str]]:
    """Per module of export/, runtime/ and tests/: the markers its top-level imports need,
    directly or through other project modules."""
    paths = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for package in PROJECT_PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    imports = {name: imported_modules(path, top_level_only=True) for name, path in paths.items()}
    markers = {name: library_markers(imported) for name, imported in imports.items()}
    changed = True
    while changed:  # through project modules, to a fixed point
        changed = False
        for name, imported in imports.items():
            inherited = set().union(*(markers.get(module, set()) for module in imported)) - markers[name]
            if inherited:
                markers[name] |= inherited
                changed = True
    return {name: frozenset(found) for name, found in markers.items()}


@functools.cache
def file_markers(path: Path) -> frozenset[str]:
    """The markers every test of a test file gets, from what it imports."""
    if not (path.name.startswith("test_") and path.suffix == ".py"):
        return frozenset()
    imported = imported_modules(path, top_level_only=False)
    through_project = project_module_markers()
    return frozenset(library_markers(imported).union(*(through_project.get(module, ()) for module in imported)))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not import a test file whose every test the -m expression deselects (no TensorFlow or
    Ray imported, or needed, to collect the core suite)."""
    expression = config.getoption("markexpr")
    markers = file_markers(Path(collection_path)) if expression else frozenset()
    if not markers:
        return None
    try:
        from _pytest.mark.expression import Expression
    except ImportError:  # pytest moved it: collect, and let -m deselect
        return None
    return True if not Expression.compile(expression).evaluate(lambda name: name in markers) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    for item in items:
        markers = file_markers(item.path) | ({"tf"} if TF_FIXTURES & set(item.fixturenames) else set())
        for marker in sorted(markers):
            item.add_marker(marker)
        if "browser" in markers and not chromium and os.environ.get(REQUIRE_ALL) != "1":
            item.add_marker(pytest.mark.skip(reason=CHROMIUM_INSTALL))


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake four-class onnxcam model of tests/fake_model.py (no TensorFlow needed)."""
    from tests.fake_model import write_fake_model

    return write_fake_model(tmp_path_factory.mktemp("fake_model") / "fake.onnx")


@pytest.fixture(scope="session")
def resnet50_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Random-weight (seeded) ResNet50 at conv5_block3_out, exported through the CLI."""
    output = tmp_path_factory.mktemp("resnet50") / "resnet50_gradcam.onnx"
    plain = output.with_name("resnet50_plain.onnx")
    result = export_or_fail(
        "--weights", "none", "--seed", str(RESNET50_SEED), "--output", str(output), "--plain-output", str(plain)
    )
    return Exported(output, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def random_resnet50():
    """The same seeded ResNet50 with logits out, rebuilt in this process."""
    import keras

    keras.utils.set_random_seed(RESNET50_SEED)
    return keras.applications.ResNet50(weights=None, classifier_activation=None)


@dataclass(frozen=True)
class UserModel:
    keras_path: Path
    onnx_path: Path
    labels: list[str]
    stdout: str


@pytest.fixture(scope="session")
def user_model(tmp_path_factory: pytest.TempPathFactory) -> UserModel:
    """A user's own .keras classifier (softmax head, skip connection) exported with flags."""
    from tests.keras_models import small_cnn

    folder = tmp_path_factory.mktemp("user")
    keras_path, onnx_path = folder / "small.keras", folder / "small_gradcam.onnx"
    small_cnn().save(keras_path)
    labels = ["cat", "dog", "bird", "fish", "frog"]
    (folder / "labels.json").write_text(json.dumps(labels))
    result = export_or_fail(
        "--model", str(keras_path), "--layer", "block_out", "--preprocessing", "tf",
        "--labels", str(folder / "labels.json"), "--output", str(onnx_path),
    )
    return UserModel(keras_path, onnx_path, labels, result.stdout)


@dataclass(frozen=True)
class ShapesModel:
    keras_path: Path
    onnx_path: Path


@pytest.fixture(scope="session")
def shapes_model(tmp_path_factory: pytest.TempPathFactory) -> ShapesModel:
    """A CNN trained here on synthetic shapes on clutter, exported at its last conv layer."""
    from tests.keras_models import train_shapes_classifier

    folder = tmp_path_factory.mktemp("shapes")
    keras_path, onnx_path = folder / "shapes.keras", folder / "shapes_gradcam.onnx"
    train_shapes_classifier().save(keras_path)
    export_or_fail("--model", str(keras_path), "--preprocessing", "none", "--output", str(onnx_path))
    return ShapesModel(keras_path, onnx_path)


def offline_env(home: Path) -> dict[str, str]:
    """An environment where Keras finds no cached weights and no route to the internet."""
    env = dict(os.environ, HOME=str(home), KERAS_HOME=str(home / ".keras"))
    env.update(https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    return env
