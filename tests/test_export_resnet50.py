"""The main job's export: random-weight (seeded) ResNet50 at conv5_block3_out, via the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime
import pytest

from export import contract
from export.verify import reference_outputs, relative_error
from runtime import Explainer


@pytest.fixture(scope="module")
def session(resnet50_export):
    return onnxruntime.InferenceSession(str(resnet50_export.onnx_path), providers=["CPUExecutionProvider"])


def test_cli_prints_one_line_per_step_and_nothing_on_stderr(resnet50_export):
    lines = resnet50_export.stdout.splitlines()
    assert [line.split(":")[0].split(" ")[0] for line in lines] == [
        "model", "layer", "converted", "self-check", "wrote", "plain"
    ]
    assert "conv5_block3_out (7x7x2048)" in lines[1]
    assert resnet50_export.stderr == ""


def test_file_is_at_most_1_1_times_the_plain_classifier(resnet50_export):
    plain = resnet50_export.onnx_path.with_name("resnet50_plain.onnx")
    ratio = resnet50_export.onnx_path.stat().st_size / plain.stat().st_size
    assert ratio <= 1.1


def test_the_classifier_matrix_is_multiplied_once(resnet50_export):
    """The affine head is not run again for the gradient, and the one-hot backward product
    is a row lookup: only the forward Dense layer multiplies by the 2048 x 1000 matrix."""
    graph = onnx.load(str(resnet50_export.onnx_path)).graph
    matrices = {init.name for init in graph.initializer if sorted(init.dims) == [1000, 2048]}
    users = [node.op_type for node in graph.node if set(node.input) & matrices]
    assert sorted(users) == ["Gather", "Gemm"]


def test_seeded_random_weights_are_the_ones_rebuilt_here(resnet50_export, random_resnet50):
    digest = hashlib.sha256()
    for weight in random_resnet50.weights:
        digest.update(weight.numpy().tobytes())
    weights = Explainer(resnet50_export.onnx_path, device="cpu").card.weights
    assert weights["sha256"] == digest.hexdigest()
    assert weights["source"] == "none (random, seed 0)" and weights["random"] is True
    assert Explainer(resnet50_export.onnx_path, device="cpu").card.random_weights


CASES = {
    "N1-K1-top": [[-1]],
    "N1-K3-given": [[7, 281, 999]],
    "N3-K1-mixed": [[-1], [3], [-1]],
    "N3-K3-mixed": [[-1, 12, -1], [500, -1, -1], [-1, -1, -1]],
}


@pytest.mark.parametrize("class_index", CASES.values(), ids=CASES.keys())
def test_every_output_matches_tensorflow(session, random_resnet50, class_index):
    class_index = np.array(class_index, np.int64)
    images = np.random.default_rng(len(class_index)).uniform(0, 255, (len(class_index), 224, 224, 3))
    images = images.astype(np.float32)
    names = [output.name for output in session.get_outputs()]
    actual = dict(zip(names, session.run(names, {"image": images, "class_index": class_index})))
    expected = reference_outputs(random_resnet50, ["conv5_block3_out"], "caffe", "logit", images, class_index)
    np.testing.assert_array_equal(actual["explained_class"], expected["explained_class"])
    given = class_index >= 0
    np.testing.assert_array_equal(actual["explained_class"][given], class_index[given])
    for name in contract.OUTPUTS:
        assert actual[name].shape == expected[name].shape, name
        assert relative_error(actual[name], expected[name]) <= 1e-4, name
    assert actual["cam"].shape == (len(class_index), class_index.shape[1], 7, 7)
    assert actual["pooled_gradients"].shape == (len(class_index), class_index.shape[1], 2048)


def test_minus_one_means_the_k_th_most_probable_class(session):
    images = np.random.default_rng(5).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    probabilities, explained = session.run(
        ["probabilities", "explained_class"], {"image": images, "class_index": np.full((2, 3), -1)}
    )
    np.testing.assert_array_equal(explained, np.argsort(-probabilities, axis=1)[:, :3])


def test_metadata_round_trip(resnet50_export):
    model = onnx.load(str(resnet50_export.onnx_path))
    properties = {prop.key: prop.value for prop in model.metadata_props}
    assert set(contract.METADATA) <= set(properties)
    card = Explainer(resnet50_export.onnx_path, device="cpu").card
    assert card.model == "resnet50"
    assert card.layer == "conv5_block3_out"
    assert card.input_size == (224, 224)
    assert card.preprocessing == "caffe"
    assert card.score == "logit"
    assert len(card.labels) == 1000
    assert (card.labels[0], card.labels[281], card.labels[999]) == ("tench", "tabby", "toilet tissue")
    versions = json.loads(properties[contract.META_VERSIONS])
    assert set(versions) == {"onnxcam", "tensorflow", "keras", "tf2onnx", "onnx", "opset"}
    assert versions["opset"] == 17
    figures = json.loads(properties[contract.META_SELF_CHECK])
    assert figures["reference"] == "TensorFlow eager GradientTape, float64"
    assert set(figures["limit_relative"].values()) == {1e-4}  # conv5's head (pool, dense) is linear
    assert set(figures["outputs"]) == set(contract.OUTPUTS)
    assert all(0 <= f["relative"] <= 1e-4 for f in figures["outputs"].values())  # conv5: gradients too
