"""Built-in applications beyond the main job: deep and multiple layers, MobileNets, auto layer."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import onnxruntime
import pytest

from export import contract
from export.applications import build_application
from export.verify import relative_limit, float64_copy, reference_outputs, relative_error
from export.wrap import resolve_layers
from runtime import Explainer
from tests.conftest import export_or_fail

DEEP_LAYERS = ["conv3_block4_out", "conv4_block6_out"]


def onnx_vs_float64_tensorflow(path, model, layers, preprocessing, size) -> dict[str, float]:
    """Relative error of every output at batch 2 x 2 classes (one given, one -1)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(11).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    class_index = np.array([[-1, 17], [640, -1]], np.int64)
    names = [output.name for output in session.get_outputs()]
    actual = dict(zip(names, session.run(names, {"image": images, "class_index": class_index})))
    expected = reference_outputs(float64_copy(model), layers, preprocessing, "logit", images, class_index)
    assert sorted(actual) == sorted(expected)
    return {name: relative_error(actual[name], expected[name]) for name in expected}


def weights_sha256(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def deep_resnet50(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deep")
    output, plain = folder / "deep.onnx", folder / "plain.onnx"
    export_or_fail("--weights", "none", "--layer", ",".join(reversed(DEEP_LAYERS)),
                   "--output", str(output), "--plain-output", str(plain))
    return output, plain


def test_two_deep_resnet50_layers_in_one_model_match_tensorflow(deep_resnet50, random_resnet50):
    path, _ = deep_resnet50
    card = Explainer(path, device="cpu").card
    assert list(card.layers) == DEEP_LAYERS  # model order, whatever order --layer gave
    errors = onnx_vs_float64_tensorflow(path, random_resnet50, DEEP_LAYERS, "caffe", 224)
    assert contract.layer_output("cam", 1) in errors
    assert all(error <= relative_limit(name, linear_head=False) for name, error in errors.items()), sorted(errors.items())


def test_deep_layers_do_not_store_the_weights_twice(deep_resnet50):
    path, plain = deep_resnet50
    assert path.stat().st_size <= 1.1 * plain.stat().st_size


def test_mobilenet_v2_middle_block_matches_tensorflow(tmp_path):
    output = tmp_path / "mobilenet_v2.onnx"
    export_or_fail("--model", "mobilenet_v2", "--weights", "none", "--layer", "block_12_add", "--output", str(output))
    model = build_application("mobilenet_v2", "none", seed=0)
    card = Explainer(output, device="cpu").card
    assert card.weights["sha256"] == weights_sha256(model)
    assert card.preprocessing == "tf"
    errors = onnx_vs_float64_tensorflow(output, model, ["block_12_add"], "tf", 224)
    assert all(error <= relative_limit(name, linear_head=False) for name, error in errors.items()), sorted(errors.items())


def test_auto_layer_of_mobilenet_v3_is_the_one_before_pooling_not_the_last_conv():
    model = build_application("mobilenet_v3_small", "none", seed=0)
    (layer,) = resolve_layers(model, "auto")
    operations = {operation.name: operation for operation in model.operations}
    assert tuple(operations[layer].output.shape) == (None, 7, 7, 576)
    last_conv = [op for op in model.operations if isinstance(op, keras.layers.Conv2D)][-1]
    assert tuple(last_conv.output.shape)[1:3] == (1, 1)  # the classifier, after the pooling
    consumers = [op for op in model.operations
                 if any(t is operations[layer].output for node in op._inbound_nodes for t in node.input_tensors)]
    assert [type(op).__name__ for op in consumers] == ["GlobalAveragePooling2D"]


def test_auto_layer_can_be_an_op_such_as_convnext_residual_add():
    model = build_application("convnext_tiny", "none", seed=0)
    (layer,) = resolve_layers(model, "auto")
    operation = {op.name: op for op in model.operations}[layer]
    assert type(operation).__name__ == "Add" and tuple(operation.output.shape) == (None, 7, 7, 768)
