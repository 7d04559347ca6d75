"""Session fixtures: each model is exported once per test session, one export at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESNET50_SEED = 0


@dataclass(frozen=True)
class Exported:
    """A model exported by `python -m export.build` in a subprocess."""

    onnx_path: Path
    stdout: str
    stderr: str


def run_export(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m export.build ARGS` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "export.build", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=env,
    )


def export_or_fail(*args: str) -> subprocess.CompletedProcess[str]:
    result = run_export(*args)
    assert result.returncode == 0, f"export failed:\n{result.stdout}\n{result.stderr}"
    return result


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
