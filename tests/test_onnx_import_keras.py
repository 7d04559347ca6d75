"""Keras models converted PLAIN by tf2onnx (the bare model, dynamic batch, no onnxcam wrapper) and imported
through the ONNX path (`python -m export.build --model plain.onnx --preprocessing ...`) give every contract
output equal, to 1e-4 relative, to the Keras path's onnxcam export of the same model: ResNet50 with seeded
random weights (global average pooling + linear: the closed form) and a small ConvNeXt-like model whose
LayerNormalization head goes through the import's reverse-mode autodiff."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import onnx
import onnxruntime as ort
import skimage.data

from export.convert import convert_bare
from runtime import contract
from tests.conftest import export_or_fail
from tests.importing import import_onnx, refusal

LIMIT = 1e-4
PHOTOS = (skimage.data.astronaut, skimage.data.chelsea, skimage.data.coffee, skimage.data.rocket)


def _photos(size: int) -> np.ndarray:
    """Raw RGB 0..255 float32 [4, size, size, 3]."""
    return np.stack([cv2.resize(photo(), (size, size), interpolation=cv2.INTER_AREA) for photo in PHOTOS]
                    ).astype(np.float32)


def _outputs(path, images: np.ndarray, class_index: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = list(contract.OUTPUTS)
    return dict(zip(names, session.run(names, {contract.INPUT_IMAGE: images, contract.INPUT_CLASS_INDEX: class_index})))


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (as the self-checks measure it)."""
    actual, expected = actual.astype(np.float64), expected.astype(np.float64)
    return float(np.abs(actual - expected).max() / (np.abs(expected).max() or 1.0))


def _assert_every_output_equal(imported: dict, keras_path: dict) -> None:
    np.testing.assert_array_equal(imported[contract.OUTPUT_EXPLAINED_CLASS], keras_path[contract.OUTPUT_EXPLAINED_CLASS])
    errors = {name: _relative(imported[name], keras_path[name])
              for name in contract.OUTPUTS if name != contract.OUTPUT_EXPLAINED_CLASS}
    for name in errors:
        assert imported[name].shape == keras_path[name].shape, name
    assert max(errors.values()) <= LIMIT, errors


def _import(plain, output, capsys, *flags: str) -> tuple[str, str]:
    """(stdout of the import, the layer it wrote in the metadata)."""
    code = import_onnx(plain, output, *flags, preprocessing=None)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    layer = {p.key: p.value for p in onnx.load(str(output)).metadata_props}["onnxcam.layer"]
    return printed.out, layer


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def test_resnet50_plain_tf2onnx_import_equals_the_keras_path(resnet50_export, random_resnet50, tmp_path, capsys):
    images = _photos(224)
    class_index = np.array([[-1, 0], [-1, 281], [7, -1], [999, 3]], np.int64)  # top-1 and given classes
    keras_path = _outputs(resnet50_export.onnx_path, images, class_index)

    # the model rebuilt here is the exported one: its logits are the export's scores and probabilities
    caffe = keras.applications.resnet50.preprocess_input(images.copy())
    logits = np.asarray(random_resnet50(caffe, training=False), np.float64)
    assert _relative(np.take_along_axis(logits, keras_path[contract.OUTPUT_EXPLAINED_CLASS], 1),
                     keras_path[contract.OUTPUT_SCORE]) <= LIMIT
    assert _relative(_softmax(logits), keras_path[contract.OUTPUT_PROBABILITIES]) <= LIMIT

    plain = tmp_path / "resnet50_bare.onnx"
    onnx.save(convert_bare(random_resnet50, opset=17), str(plain))
    printed, layer = _import(plain, tmp_path / "imported.onnx", capsys, "--preprocessing", "caffe")
    assert "input 224x224 nhwc" in printed  # tf2onnx keeps Keras' NHWC input: --layout auto found it
    assert "head: global average pooling + linear (exact)" in printed
    assert "conv5_block3_out" in layer  # the Keras path's layer, found by --layer auto
    _assert_every_output_equal(_outputs(tmp_path / "imported.onnx", images, class_index), keras_path)


def small_convnext(size: int = 64, classes: int = 6) -> keras.Model:
    """ConvNeXt-like: patchify stem, a block (grouped 7x7 depthwise conv, LayerNormalization, GELU MLP,
    residual), then ConvNeXt's head: GlobalAveragePooling -> LayerNormalization -> Dense. The norms' scales
    and offsets and every bias are random, so that no term of the head is a trivial one tf2onnx folds away."""
    keras.utils.set_random_seed(5)
    layers = keras.layers
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(16, 4, strides=4, name="stem")(inputs)
    x = layers.LayerNormalization(epsilon=1e-6, name="stem_norm")(x)
    y = layers.Conv2D(16, 7, padding="same", groups=16, name="depthwise")(x)
    y = layers.LayerNormalization(epsilon=1e-6, name="block_norm")(y)
    y = layers.Dense(32, activation="gelu", name="expand")(y)
    y = layers.Dense(16, name="project")(y)
    x = layers.Add(name="block_out")([x, y])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="head_norm")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(5)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, layers.LayerNormalization):
            layer.set_weights([1 + 0.3 * rng.standard_normal(w.shape).astype(np.float32) if i == 0 else
                               0.3 * rng.standard_normal(w.shape).astype(np.float32) for i, w in enumerate(weights)])
        elif len(weights) == 2:  # kernel, bias
            layer.set_weights([weights[0], 0.1 * rng.standard_normal(weights[1].shape).astype(np.float32)])
    return model


def test_layernorm_head_plain_tf2onnx_import_equals_the_keras_path(tmp_path, capsys):
    model = small_convnext()
    keras_file = tmp_path / "small_convnext.keras"
    model.save(keras_file)
    exported = tmp_path / "keras_path.onnx"
    export_or_fail("--model", str(keras_file), "--layer", "block_out", "--preprocessing", "tf",
                   "--output", str(exported))
    plain = tmp_path / "small_convnext_bare.onnx"
    onnx.save(convert_bare(model, opset=17), str(plain))
    printed, layer = _import(plain, tmp_path / "imported.onnx", capsys, "--preprocessing", "tf")
    assert "reverse-mode autodiff" in printed and "LayerNormalization" not in printed  # Keras' norm as tf2onnx writes it
    assert "block_out" in layer

    images = _photos(64)
    class_index = np.array([[-1, 0], [5, -1], [-1, 2], [1, 4]], np.int64)
    imported, keras_path = (_outputs(path, images, class_index) for path in (tmp_path / "imported.onnx", exported))
    assert np.abs(keras_path[contract.OUTPUT_POOLED_GRADIENTS]).max() > 0
    _assert_every_output_equal(imported, keras_path)



def test_an_op_the_converter_left_is_refused_by_name(tmp_path, capsys):
    """Plain tf2onnx 1.17 leaves Keras' exact GELU's Erfc unconverted. Such a graph loses its shapes past
    that op, and the import used to go on and fail on a later op with a wrong reason ("MatMul: a 1-D
    operand"), after picking a tensor before the Erfc as the layer. It is refused up front, by name."""
    from tests.onnx_classifiers import write_classifier

    model = onnx.load(str(write_classifier(tmp_path / "classifier.onnx")))
    relu = next(node for node in model.graph.node if node.op_type == "Relu")
    relu.op_type, relu.name = "Erfc", "functional_1/conv/Gelu/Erfc"
    onnx.save(model, str(tmp_path / "left.onnx"))
    output = tmp_path / "out.onnx"
    error = refusal(tmp_path / "left.onnx", output, capsys)
    assert "op Erfc (node functional_1/conv/Gelu/Erfc) is not an ONNX op" in error


def test_nhwc_input_is_normalised_in_nchw_in_place_of_the_models_transpose(tmp_path, capsys):
    """tf2onnx's NHWC input feeds a Transpose to NCHW: the import normalises the image after its own
    Transpose (per-channel Sub/Div over NHWC's last axis of 3 cost onnxruntime ~4 ms a 224x224 image) and
    feeds that in place of the model's Transpose. An input read by anything else is transposed back."""
    from tests.onnx_classifiers import write_classifier

    direct = write_classifier(tmp_path / "direct.onnx", head="matmul", layout="nhwc", softmax=False)
    model = onnx.load(str(direct))
    first = next(node for node in model.graph.node if "input" in node.input)
    assert first.op_type == "Transpose"
    first.input[0] = "input_copy"
    model.graph.node.insert(0, onnx.helper.make_node("Identity", ["input"], ["input_copy"], name="/copy"))
    onnx.save(model, str(tmp_path / "indirect.onnx"))
    outputs = {}
    for name in ("direct", "indirect"):
        _import(tmp_path / f"{name}.onnx", tmp_path / f"{name}_imported.onnx", capsys, "--preprocessing", "tf")
        graph = onnx.load(str(tmp_path / f"{name}_imported.onnx")).graph
        perms = {node.output[0]: list(node.attribute[0].ints) for node in graph.node if node.op_type == "Transpose"}
        assert list(perms.values()).count([0, 3, 1, 2]) == (1 if name == "direct" else 2)  # the model's is gone
        if name == "direct":
            assert "input" not in {tensor for node in graph.node for tensor in node.input}
        else:
            assert perms["input"] == [0, 2, 3, 1]  # the normalised NCHW image, back to the model's NHWC
        images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
        outputs[name] = _outputs(tmp_path / f"{name}_imported.onnx", images, np.array([[-1], [1]], np.int64))
    _assert_every_output_equal(outputs["indirect"], outputs["direct"])


def test_the_trained_shapes_model_imported_from_plain_onnx_points_at_the_object(shapes_model, tmp_path, capsys):
    """The pointing game of the Keras path (tests/test_runtime_keras.py), on the same trained CNN
    converted bare by tf2onnx and imported: the import keeps what training put in the maps."""
    from runtime import Explainer
    from tests.keras_models import draw_shapes
    from tests.pointing import pointing_game

    plain, output = tmp_path / "shapes_plain.onnx", tmp_path / "shapes_imported.onnx"
    onnx.save(convert_bare(keras.models.load_model(shapes_model.keras_path, compile=False), opset=17), str(plain))
    _import(plain, output, capsys, "--preprocessing", "none")
    images, labels, boxes = draw_shapes(200, seed=99)
    explainer = Explainer(output, device="cpu", batch_size=32)
    predicted = [e.predictions[0].index for e in explainer.explain(list(images), top_k=1)]
    assert np.mean(np.array(predicted) == labels) >= 0.9
    assert pointing_game(explainer, images, labels, boxes) >= 0.9
