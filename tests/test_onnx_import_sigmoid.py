"""Classifiers ending in a Sigmoid through the ONNX import, as the Keras path takes them: one sigmoid
per class (multi-label), or one unit z as two classes with logits (-z, z). Never softmax(sigmoid(z))."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from runtime import Explainer
from tests.importing import import_onnx, refusal
from tests.onnx_classifiers import CLASSES, SIZE, write_classifier

IMAGES = np.random.default_rng(3).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
PIXELS = (IMAGES - np.float32([123.675, 116.28, 103.53])) / np.float32([58.395, 57.12, 57.375])  # torch's
CLASS_INDEX = np.array([[-1, 0], [-1, 1], [1, -1]], np.int64)


def _sigmoid_classifier(path, units: int):
    """write_classifier's logits [N, 4] -> (a MatMul to one unit, for units=1) -> Sigmoid, the output."""
    model = onnx.load(write_classifier(path, softmax=False))
    z = "logits"
    if units == 1:
        matrix = np.random.default_rng(1).standard_normal((CLASSES, 1)).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(matrix, "unit.weight"))
        model.graph.node.append(helper.make_node("MatMul", ["logits", "unit.weight"], ["unit"], name="/unit/MatMul"))
        z = "unit"
    model.graph.node.append(helper.make_node("Sigmoid", [z], ["p"], name="/Sigmoid"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", units]))
    onnx.save(model, path)
    return path


def _original(path, tensors: list[str]) -> list[np.ndarray]:
    """`tensors` of the original model on IMAGES (preprocessing torch)."""
    model = onnx.load(path)
    listed = {value.name for value in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                              for name in tensors if name not in listed)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(tensors, {"input": np.ascontiguousarray(PIXELS.transpose(0, 3, 1, 2))})


def _imported(path, class_index: np.ndarray = CLASS_INDEX) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": IMAGES, "class_index": class_index})))


def test_a_multi_label_sigmoid_head_keeps_the_models_own_probabilities(tmp_path, capsys):
    source = _sigmoid_classifier(tmp_path / "multi.onnx", CLASSES)
    output = tmp_path / "multi_gradcam.onnx"
    assert import_onnx(source, output) == 0, capsys.readouterr().err
    assert "probabilities: sigmoid" in capsys.readouterr().out
    probabilities, logits = _original(source, ["p", "logits"])
    got = _imported(output)
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-5, atol=1e-7)  # not softmax(sigmoid)
    assert not np.allclose(got["probabilities"].sum(1), 1)
    assert 0.02 < probabilities.min() and probabilities.max() < 0.98  # not saturated: a real check
    np.testing.assert_array_equal(got["explained_class"][:, 0], [*np.argmax(probabilities, 1)[:2], 1])
    np.testing.assert_allclose(got["score"], np.take_along_axis(logits, got["explained_class"], 1), rtol=1e-5)
    card = Explainer(str(output)).card
    assert card.activation == "sigmoid"


def test_a_binary_sigmoid_is_two_classes_with_logits_minus_z_and_z(tmp_path, capsys):
    source = _sigmoid_classifier(tmp_path / "binary.onnx", 1)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["cat"]))
    output = tmp_path / "binary_gradcam.onnx"
    assert import_onnx(source, output, "--labels", str(labels)) == 0, capsys.readouterr().err
    p, z = (np.ravel(value) for value in _original(source, ["p", "unit"]))
    got = _imported(output)
    np.testing.assert_allclose(got["probabilities"], np.stack([1 - p, p], 1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["score"], np.where(got["explained_class"] == 1, z[:, None], -z[:, None]),
                               rtol=1e-5, atol=1e-7)
    # the map of class 0 is the evidence against class 1: opposite gradients
    both = _imported(output, np.array([[0, 1]] * 3, np.int64))
    np.testing.assert_allclose(both["gradients"][:, 0], -both["gradients"][:, 1], rtol=1e-6, atol=1e-9)
    assert np.abs(both["gradients"]).max() > 0
    card = Explainer(str(output)).card
    assert card.activation == "sigmoid" and card.labels == ("not cat", "cat")


def test_one_unit_without_a_sigmoid_is_refused(tmp_path, capsys):
    model = onnx.load(_sigmoid_classifier(tmp_path / "binary.onnx", 1))
    model.graph.node.pop()  # the Sigmoid: the output is the unit itself, a regression
    model.graph.output[0].name = "unit"
    onnx.save(model, tmp_path / "regression.onnx")
    assert "1 unit and no sigmoid" in refusal(tmp_path / "regression.onnx", tmp_path / "out.onnx", capsys)
