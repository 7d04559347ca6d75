"""The export refuses clearly: one line on stderr, exit 1, nothing written or replaced."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import export.convert
from export.build import main
from export.labels import read_labels
from export.errors import ExportError
from tests.conftest import offline_env, run_export


def test_offline_imagenet_weights_fail_in_one_line(tmp_path):
    output = tmp_path / "resnet50_gradcam.onnx"
    result = run_export("--output", str(output), env=offline_env(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("export failed: could not get the ImageNet weights of resnet50")
    assert "--weights PATH" in lines[0] and "~/.keras/models/" in lines[0] and "--weights none" in lines[0]
    assert not output.exists()


def test_a_wrong_weights_file_in_the_keras_cache_is_named_and_kept(tmp_path):
    """A truncated download under the README's file name: Keras would try to download it again
    and, offline, delete it; the export names the file, keeps it and says what to do."""
    planted = tmp_path / ".keras" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"\x89HDF truncated")
    result = run_export("--output", str(tmp_path / "x.onnx"), env=offline_env(tmp_path))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"export failed: {planted}: found, but it is not the published file")
    assert "left in place" in line and "download it again" in line and "--weights PATH" in line
    assert planted.read_bytes() == b"\x89HDF truncated"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model", "vit"], "--model vit: not a built-in model"),
        (["--weights", "missing.weights.h5"], "--weights missing.weights.h5: no such file"),
    ],
)
def test_bad_arguments_fail_in_one_line(arguments, message, tmp_path):
    result = run_export(*arguments, "--output", str(tmp_path / "x.onnx"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"export failed: {result.stderr.split('export failed: ')[1].strip()}"]
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_keras_file_needs_its_preprocessing(user_model, tmp_path, capsys):
    assert main(["--model", str(user_model.keras_path), "--output", str(tmp_path / "x.onnx")]) == 1
    assert "--preprocessing caffe|tf|torch|none" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_graph_that_fails_the_self_check_is_not_written(user_model, tmp_path, monkeypatch, capsys):
    """Without onnxcam's DynamicStitch handler, tf2onnx 1.17 converts "successfully" into a
    graph that fails at run time: the self-check must refuse it and keep the old file."""
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"the previous export")
    without_stitch = {op: h for op, h in export.convert.HANDLERS.items() if "DynamicStitch" not in op}
    monkeypatch.setattr(export.convert, "HANDLERS", without_stitch)
    code = main([
        "--model", str(user_model.keras_path), "--layer", "block_out", "--preprocessing", "tf",
        "--output", str(existing),
    ])
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("export failed: onnxruntime cannot run the converted model")
    assert "\n" not in error
    assert existing.read_bytes() == b"the previous export"
    assert [path.name for path in tmp_path.iterdir()] == ["model.onnx"]


def test_ops_tf2onnx_leaves_unconverted_are_named(user_model, tmp_path, monkeypatch, capsys):
    without_relu_grad = {op: h for op, h in export.convert.HANDLERS.items() if op != "ReluGrad"}
    monkeypatch.setattr(export.convert, "HANDLERS", without_relu_grad)
    code = main([
        "--model", str(user_model.keras_path), "--layer", "block_out", "--preprocessing", "tf",
        "--output", str(tmp_path / "model.onnx"),
    ])
    assert code == 1
    assert capsys.readouterr().err == "export failed: tf2onnx left TensorFlow ops it cannot convert: ReluGrad\n"
    assert list(tmp_path.iterdir()) == []


def test_a_normalization_layer_exports_without_extra_inputs(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Normalization(mean=[120.0, 110.0, 100.0], variance=[3000.0, 2500.0, 2000.0])(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    path = tmp_path / "normalized.keras"
    keras.Model(inputs, outputs).save(path)
    output = tmp_path / "normalized.onnx"
    assert main(["--model", str(path), "--preprocessing", "none", "--output", str(output)]) == 0, capsys.readouterr().err
    import onnx

    assert [value.name for value in onnx.load(str(output)).graph.input] == ["image", "class_index"]


def test_a_bad_flag_is_one_line_and_exit_2(tmp_path):
    result = run_export("--score", "softmax", "--output", str(tmp_path / "x.onnx"))
    assert result.returncode == 2
    assert result.stderr.startswith("export failed: arguments: argument --score: invalid choice")
    assert len(result.stderr.splitlines()) == 1


def test_a_nan_in_any_self_check_case_is_kept_and_refused():
    from export.verify import worst_of

    figures = worst_of([(1e-6, 1e-7), (float("nan"), float("nan")), (2e-6, 3e-7)])
    assert np.isnan(figures["relative"]) and np.isnan(figures["max_abs"])
    assert not figures["relative"] <= 1e-4  # the self-check's refusal test


def test_labels_must_match_a_built_in_model_too(tmp_path):
    labels = tmp_path / "three.json"
    labels.write_text('["a", "b", "c"]')
    result = run_export("--model", "mobilenet_v3_small", "--weights", "none", "--labels", str(labels),
                        "--output", str(tmp_path / "x.onnx"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"export failed: --labels {labels}: 3 names for 1000 classes"
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    "labels", ['{"0": "cat", "5": "dog"}', '{"1": "cat", "0": "dog", "-1": "x"}', '{"0": "cat", "00": "dog"}']
)
def test_labels_as_an_object_need_exactly_the_class_numbers(labels, tmp_path):
    """Sparse, negative or repeated keys would put names on the wrong classes."""
    path = tmp_path / "labels.json"
    path.write_text(labels)
    with pytest.raises(ExportError, match="keys must be exactly the class numbers"):
        read_labels(str(path))


def test_labels_as_an_object_in_any_order(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('{"1": "dog", "10": "k", "0": "cat", "2": "c", "3": "d", "4": "e", "5": "f", "6": "g", '
                    '"7": "h", "8": "i", "9": "j"}')
    assert read_labels(str(path)) == ["cat", "dog", "c", "d", "e", "f", "g", "h", "i", "j", "k"]


def _save(model: keras.Model, path) -> str:
    model.save(path)
    return str(path)


def test_models_that_are_not_image_classifiers_are_refused_in_one_line(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="pixels")
    features = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    flat = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(image))
    cases = [
        (keras.Model(image, keras.layers.Dense(1)(pooled)), [], "its output has 1 unit and no sigmoid"),  # a regression
        (keras.Model(image, [keras.layers.Dense(3)(pooled), keras.layers.Dense(2)(pooled)]), [], "has 2 outputs"),
        (keras.Model(image, flat), [], "no layer with a [N, h, w, C] output between its input and its output"),
        (keras.Model(image, keras.layers.Dense(3)(pooled)), ["--layer", "pixels"], "that is the model's input"),
    ]
    for number, (model, flags, message) in enumerate(cases):
        path = _save(model, tmp_path / f"model{number}.keras")
        output = tmp_path / f"model{number}.onnx"
        assert main(["--model", path, "--preprocessing", "none", "--output", str(output), *flags]) == 1
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("export failed: ") and message in line and "unexpected" not in line
        assert not output.exists()


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> str:
    """A 4-class CNN with a non-square feature map (14x22), saved once for the self-check tests."""
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 24, 3))
    features = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(image)
    scores = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(features))
    return _save(keras.Model(image, scores), tmp_path_factory.mktemp("tiny") / "tiny.keras")


def _scale_logits(model, factor: float) -> None:
    """Multiply the weights and bias of the ONNX graph's linear layer by `factor` (TensorFlow keeps
    the originals)."""
    from onnx import numpy_helper

    [linear] = [node for node in model.graph.node if node.op_type == "Gemm"]
    for init in model.graph.initializer:
        if init.name in linear.input[1:]:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))


def _transpose_feature_maps(model) -> None:
    """feature_maps [N, 14, 22, 6] -> [N, 22, 14, 6]: the same numbers in the wrong shape."""
    from onnx import helper

    for node in model.graph.node:
        node.output[:] = ["feature_maps_raw" if name == "feature_maps" else name for name in node.output]
        node.input[:] = ["feature_maps_raw" if name == "feature_maps" else name for name in node.input]
    model.graph.node.append(helper.make_node("Transpose", ["feature_maps_raw"], ["feature_maps"], perm=[0, 2, 1, 3]))
    for output in model.graph.output:
        if output.name == "feature_maps":
            output.type.tensor_type.ClearField("shape")


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda model: _scale_logits(model, 1.001), "differs from TensorFlow by"),
        (lambda model: _scale_logits(model, -1.0), "ONNX explains classes"),
        (_transpose_feature_maps, "feature_maps has shape (4, 22, 14, 6), TensorFlow (4, 14, 22, 6)"),
    ],
    ids=["numbers-over-the-limit", "another-class", "another-shape"],
)
def test_a_converted_graph_that_disagrees_with_tensorflow_is_refused(
    tiny_classifier, tamper, message, tmp_path, monkeypatch, capsys
):
    """The converter is made to return a wrong graph; the self-check must catch each kind of wrong."""
    import export.shrink

    share = export.shrink.share_forward_weights

    def tampered(model):
        model = share(model)
        tamper(model)
        return model

    monkeypatch.setattr(export.shrink, "share_forward_weights", tampered)
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"the previous export")
    assert main(["--model", tiny_classifier, "--preprocessing", "none", "--output", str(existing)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("export failed: self-check failed: ") and message in line, line
    assert existing.read_bytes() == b"the previous export" and len(list(tmp_path.iterdir())) == 1


def test_a_nan_in_the_second_self_check_case_is_refused(tiny_classifier, tmp_path, monkeypatch, capsys):
    """NaN in one case only (not the first): the figures must keep it and the export must refuse."""
    import export.verify

    reference = export.verify.reference_outputs
    calls = []

    def with_a_nan_in_the_second_case(*args, **kwargs):
        outputs = reference(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            outputs["cam"] = outputs["cam"].copy()
            outputs["cam"].flat[0] = np.nan
        return outputs

    monkeypatch.setattr(export.verify, "reference_outputs", with_a_nan_in_the_second_case)
    output = tmp_path / "model.onnx"
    assert main(["--model", tiny_classifier, "--preprocessing", "none", "--output", str(output)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("export failed: self-check failed: cam differs from TensorFlow by nan"), line
    assert len(calls) == 2 and not output.exists()


def test_the_tiny_classifier_exports_untampered(tiny_classifier, tmp_path, capsys):
    """The control for the tampering tests above: the same export, left alone, is written."""
    output = tmp_path / "model.onnx"
    assert main(["--model", tiny_classifier, "--preprocessing", "none", "--output", str(output)]) == 0, capsys.readouterr().err
    assert output.exists()
