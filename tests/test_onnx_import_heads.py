"""General heads through onnxcam's own reverse-mode autodiff: each head of tests/onnx_classifiers.py
imported, its gradients checked against finite differences of the original model (numpy +
onnxruntime, here), against a numpy forward + backward for two heads, and through the runtime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from tests.importing import import_onnx, refusal, with_nodes
from export.onnx_import.graph import read_classifier
from export.onnx_import.head import find_head
from export.onnx_import.autodiff import REGISTRY  # every rule: vjp.py and vjp_attention.py
from runtime import Explainer
from tests.onnx_classifiers import HEADS, SIZE, write_head_classifier
from tests.test_onnx_import_vit_ops import CASES as TRANSFORMER_OPS

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
# float32 differences: the squeezenet head's ReLU over 1024 class-map values has kinks at every step
# that float32 can resolve (float64 differences, in the self-check, agree to 1e-9; numpy below exactly)
FD_LIMIT = {"squeezenet": 1e-1}
CLASS_INDEX = np.array([[-1, 2], [0, -1], [3, -1]], np.int64)  # K = 2: a given class and the top one


def _import(tmp_path, head: str, layout: str = "nchw") -> tuple[str, dict]:
    source = str(write_head_classifier(tmp_path / "classifier.onnx", head, layout=layout))
    output = tmp_path / "classifier_gradcam.onnx"
    layer = ["--layer", "features"] if head == "mixed" else []  # auto there is a 4x4 map inside the head
    assert import_onnx(source, str(output), *layer) == 0
    images = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    session = ort.InferenceSession(str(output))
    names = [o.name for o in session.get_outputs()]
    return source, dict(zip(names, session.run(None, {"image": images, "class_index": CLASS_INDEX}))) | {
        "images": images, "path": str(output)}


def _perturbed_logits(source: str, layout: str):
    """f(images, delta) = the original model's logits with `features` (NCHW) replaced by features + delta."""
    model = onnx.load(source)
    for node in model.graph.node:
        node.output[:] = ["features_original" if name == "features" else name for name in node.output]
    model.graph.node.append(helper.make_node("Add", ["features_original", "delta"], ["features"]))
    model.graph.input.append(helper.make_tensor_value_info("delta", onnx.TensorProto.FLOAT, None))
    model.graph.output.append(helper.make_tensor_value_info("features_original", onnx.TensorProto.FLOAT, None))
    if model.graph.node[-2].op_type == "Softmax":
        raise AssertionError("the test heads end with logits")
    session = ort.InferenceSession(model.SerializeToString())

    def run(images: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pixels = (images - MEAN) / STD
        pixels = pixels if layout == "nhwc" else pixels.transpose(0, 3, 1, 2)
        logits, features = session.run(None, {"input": np.ascontiguousarray(pixels), "delta": delta.astype(np.float32)})
        return logits.astype(np.float64), features

    return run


def _nchw_gradients(outputs: dict, head: str) -> np.ndarray:
    """gradients [N, K, C, H, W] in `features`' own layout (nhwc head: the target is its transpose)."""
    return outputs["gradients"].transpose(0, 1, 4, 2, 3)


@pytest.mark.parametrize("head", HEADS)
def test_gradients_equal_finite_differences_of_the_original(tmp_path, head):
    source, outputs = _import(tmp_path, head)
    run = _perturbed_logits(source, "nchw")
    images = outputs["images"]
    _, features = run(images, np.zeros((3, 5, SIZE, SIZE)))
    gradients = _nchw_gradients(outputs, head).astype(np.float64)
    rng = np.random.default_rng(7)
    for _ in range(3):
        direction = rng.standard_normal(features.shape) * (features != 0)  # MaxPool ties among a ReLU's zeros
        analytic = np.einsum("nkchw,nchw->nk", gradients, direction)
        errors = []
        for step in (1e-2, 3e-3, 1e-3):  # the best step: a ReLU kink spoils one, a wrong gradient all
            epsilon = step * features.std()
            numeric = (run(images, epsilon * direction)[0] - run(images, -epsilon * direction)[0]) / (2 * epsilon)
            numeric = np.take_along_axis(numeric, outputs["explained_class"], axis=1)
            errors.append(np.abs(numeric - analytic).max() / np.abs(analytic).max())
        assert min(errors) < FD_LIMIT.get(head, 2e-2), (head, errors)
    np.testing.assert_allclose(outputs["pooled_gradients"], outputs["gradients"].mean(axis=(2, 3)), rtol=1e-4, atol=1e-7)
    assert outputs["explained_class"][0, 1] == 2 and outputs["explained_class"][1, 0] == 0
    cam = np.maximum(np.einsum("nkc,nhwc->nkhw", outputs["pooled_gradients"], outputs["feature_maps"]), 0)
    np.testing.assert_allclose(outputs["cam"], cam, rtol=1e-4, atol=1e-6)


def _weights(source: str) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in onnx.load(source).graph.initializer}


def test_vgg_head_equals_numpy_forward_and_backward(tmp_path):
    source, outputs = _import(tmp_path, "vgg")
    w = _weights(source)
    features = outputs["feature_maps"].transpose(0, 3, 1, 2).astype(np.float64)  # [N, C, 16, 16]
    n, c = features.shape[:2]
    windows = features.reshape(n, c, 8, 2, 8, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, 8, 8, 4)
    first = windows.argmax(-1)  # the first maximum of each 2x2 window
    flat = windows.max(-1).reshape(n, -1)
    hidden1 = flat @ w["vgg1.weight"].T + w["vgg1.bias"]
    hidden2 = np.maximum(hidden1, 0) @ w["vgg2.weight"].T + w["vgg2.bias"]
    logits = np.maximum(hidden2, 0) @ w["vgg3.weight"].T
    np.testing.assert_allclose(outputs["score"], np.take_along_axis(logits, outputs["explained_class"], 1), rtol=1e-4)
    for i in range(n):
        for k in range(2):
            g = w["vgg3.weight"][outputs["explained_class"][i, k]] * (hidden2[i] > 0)
            g = (g @ w["vgg2.weight"]) * (hidden1[i] > 0)
            g = (g @ w["vgg1.weight"]).reshape(c, 8, 8)
            spread = np.zeros((c, 8, 8, 4))
            np.put_along_axis(spread, first[i][..., None], g[..., None], axis=-1)
            expected = spread.reshape(c, 8, 8, 2, 2).transpose(0, 1, 3, 2, 4).reshape(c, 16, 16)
            np.testing.assert_allclose(_nchw_gradients(outputs, "vgg")[i, k], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("head,epsilon", [("convnext", 1e-6), ("keras_layernorm", 1e-3)])
def test_convnext_head_equals_numpy_forward_and_backward(tmp_path, head, epsilon):
    source, outputs = _import(tmp_path, head)
    w = _weights(source)
    if "fc.weight_t" in w:  # keras_layernorm's MatMul reads the matrix transposed
        w["fc.weight"] = w["fc.weight_t"].T
    pooled = outputs["feature_maps"].astype(np.float64).mean(axis=(1, 2))  # [N, C]
    mean = pooled.mean(1, keepdims=True)
    sigma = np.sqrt(((pooled - mean) ** 2).mean(1, keepdims=True) + epsilon)
    normed = (pooled - mean) / sigma
    logits = (normed * w["ln.scale"] + w["ln.bias"]) @ w["fc.weight"].T + w["fc.bias"]
    np.testing.assert_allclose(outputs["score"], np.take_along_axis(logits, outputs["explained_class"], 1), rtol=1e-4)
    for i in range(len(pooled)):
        for k in range(2):
            g = w["fc.weight"][outputs["explained_class"][i, k]] * w["ln.scale"]
            d_pooled = (g - g.mean() - normed[i] * (g * normed[i]).mean()) / sigma[i]
            np.testing.assert_allclose(outputs["pooled_gradients"][i, k], d_pooled / (SIZE * SIZE), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("head", ["layernorm2d", "convnext", "keras_layernorm", "mlp", "squeezenet", "vgg", "strided"])
def test_auto_target_is_the_map_the_pooling_reads(tmp_path, head):
    """Nothing after a global pooling is the auto target: not the pooled vector transposed to [N, 1, 1, C]
    (torchvision's ConvNeXt LayerNorm2d), which reads as a 1xC map; VGG's MaxPool -> Flatten as before."""
    classifier = read_classifier(onnx.load(write_head_classifier(tmp_path / "classifier.onnx", head)), "auto", None)
    chosen = find_head(classifier, "auto")
    assert (chosen.target, chosen.target_layout) == ("dropped" if head == "squeezenet" else "features", "nchw")


def test_squeezenet_head_equals_numpy_backward(tmp_path):
    source, outputs = _import(tmp_path, "squeezenet")
    w = _weights(source)
    matrix = w["sq.weight"][:, :, 0, 0]  # [classes, C]
    before_relu = outputs["feature_maps"].astype(np.float64) @ matrix.T + w["sq.bias"]  # [N, h, w, classes]
    for i in range(3):
        for k in range(2):
            c = outputs["explained_class"][i, k]
            expected = (before_relu[i, :, :, c] > 0)[..., None] * matrix[c] / (SIZE * SIZE)
            np.testing.assert_allclose(outputs["gradients"][i, k], expected, rtol=1e-5, atol=1e-9)


def test_nhwc_input_dynamic_batch_and_the_runtime(tmp_path):
    _, outputs = _import(tmp_path, "mobilenet", layout="nhwc")
    session = ort.InferenceSession(outputs["path"])
    for i in range(3):  # batch 1, image by image, equals batch 3
        alone = dict(zip([o.name for o in session.get_outputs()], session.run(
            None, {"image": outputs["images"][i:i + 1], "class_index": CLASS_INDEX[i:i + 1]})))
        np.testing.assert_allclose(alone["gradients"][0], outputs["gradients"][i], rtol=1e-5, atol=1e-8)
    explainer = Explainer(outputs["path"])
    assert explainer.card.self_check["outputs"]["gradients"]["relative"] < 1e-4
    image = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    explanation = explainer.explain(image, top_k=2, explain_top=2)
    assert len(explanation.predictions) == 2


def test_every_registered_op_is_in_a_test_head(tmp_path):
    used = set()
    for head in HEADS:
        used |= {node.op_type for node in onnx.load(write_head_classifier(tmp_path / f"{head}.onnx", head)).graph.node}
    used |= {op for op, *_ in TRANSFORMER_OPS.values()} | {"Cast"}  # tests/test_onnx_import_vit_ops.py, one op each
    assert set(REGISTRY) - used == set()


@pytest.mark.parametrize("op", ["Cos", "TopK"])
def test_an_op_outside_the_set_is_refused_in_one_line(tmp_path, capsys, op):
    model = onnx.load(write_head_classifier(tmp_path / "classifier.onnx", "mlp"))
    relu = next(node for node in model.graph.node if node.name == "/act/Relu")
    relu.output[0] = "act_before"
    if op == "Cos":
        model.graph.node.append(helper.make_node("Cos", ["act_before"], ["act"], name="/odd/Cos"))
    else:
        model.graph.initializer.append(numpy_helper.from_array(np.array([16], np.int64), "k16"))
        model.graph.node.append(helper.make_node("TopK", ["act_before", "k16"], ["act", "order"], name="/odd/TopK"))
    nodes = list(model.graph.node)  # the new node goes before the Gemm that reads it
    gemm = next(i for i, node in enumerate(nodes) if node.name == "/fc2/Gemm")
    nodes.insert(gemm, nodes.pop())
    onnx.save(with_nodes(model, nodes), tmp_path / "odd.onnx")
    error = refusal(tmp_path / "odd.onnx", tmp_path / "out.onnx", capsys)
    assert f"unsupported head op {op} (node /odd/{op})" in error
