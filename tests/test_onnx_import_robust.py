"""Valid models with awkward names, and broken ones, through the ONNX import: the first import as any
other model, the others are refused in one line, exit 1, nothing written; a missing file is a bad
argument (exit 2, as in the runtime)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime import Explainer
from tests.importing import import_onnx, refusal, with_nodes
from tests.onnx_classifiers import SIZE, write_classifier, write_head_classifier

IMAGES = np.random.default_rng(5).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
CLASS_INDEX = np.array([[-1, 2], [1, -1]], np.int64)


def _outputs(path) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": IMAGES, "class_index": CLASS_INDEX})))


def _renamed(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    for value in [*model.graph.input, *model.graph.output, *model.graph.initializer]:
        value.name = new if value.name == old else value.name
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    return model


@pytest.mark.parametrize("old, new", [
    ("input", "image"), ("features", "feature_maps"), ("features", "score"), ("features", "cam"),
    ("logits", "probabilities"), ("pooled", "gradients"), ("flat", "class_index"), ("fc.weight", "pooled_gradients"),
    ("probabilities_out", "explained_class"), ("pooled", "onnxcam/k"),
])
def test_user_tensor_names_never_collide_with_the_contracts(tmp_path, capsys, old, new):
    plain = write_classifier(tmp_path / "plain.onnx")
    assert import_onnx(plain, tmp_path / "plain_gradcam.onnx") == 0
    source = tmp_path / "named.onnx"
    onnx.save(_renamed(onnx.load(plain), old, new), source)
    output = tmp_path / "named_gradcam.onnx"
    layer = ["--layer", new] if old == "features" else []  # the user's own name for the explained tensor
    assert import_onnx(source, output, *layer) == 0, capsys.readouterr().err
    expected, got = _outputs(tmp_path / "plain_gradcam.onnx"), _outputs(output)
    for name in ("probabilities", "score", "cam", "gradients"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-9)
    assert Explainer(str(output)).card.layer == (new if old == "features" else "features")


def test_an_unnamed_final_softmax_is_dropped_like_a_named_one(tmp_path, capsys):
    model = onnx.load(write_classifier(tmp_path / "named.onnx"))
    next(node for node in model.graph.node if node.op_type == "Softmax").name = ""  # names are optional in ONNX
    onnx.save(model, tmp_path / "unnamed.onnx")
    assert import_onnx(tmp_path / "named.onnx", tmp_path / "named_gradcam.onnx") == 0
    assert import_onnx(tmp_path / "unnamed.onnx", tmp_path / "unnamed_gradcam.onnx") == 0, capsys.readouterr().err
    expected, got = _outputs(tmp_path / "named_gradcam.onnx"), _outputs(tmp_path / "unnamed_gradcam.onnx")
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-6)
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-6)  # logits, not probabilities


def test_a_scalar_constant_read_by_the_head_passes_the_self_check(tmp_path, capsys):
    """A 0-d Constant node output read by the head (legacy torch.onnx.export writes many: timm levit_128s)
    used to stop the self-check in numpy ("zero-dimensional arrays cannot be concatenated")."""
    model = onnx.load(write_head_classifier(tmp_path / "mlp.onnx", "mlp"))
    nodes = list(model.graph.node)
    relu = next(i for i, node in enumerate(nodes) if node.name == "/act/Relu")
    nodes[relu].output[0] = "act_unscaled"
    nodes[relu + 1:relu + 1] = [
        helper.make_node("Constant", [], ["half"], name="/half", value=numpy_helper.from_array(np.float32(0.5))),
        helper.make_node("Mul", ["act_unscaled", "half"], ["act"], name="/scale/Mul")]
    onnx.save(with_nodes(model, nodes), tmp_path / "scaled.onnx")
    assert import_onnx(tmp_path / "scaled.onnx", tmp_path / "out.onnx") == 0, capsys.readouterr().err


def _valueless_constant(path, batch: int | None = None) -> None:
    model = onnx.load(write_classifier(path))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["nothing"], name="/empty"))
    if batch is not None:  # a fixed batch: the import then reads the Reshape targets' Constants
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, path)


def _custom_op(path) -> None:
    model = onnx.load(write_classifier(path))
    next(node for node in model.graph.node if node.op_type == "Relu").domain = "example.custom"
    model.opset_import.append(helper.make_opsetid("example.custom", 1))
    onnx.save(model, path)


def _cycle(path) -> None:
    model = onnx.load(write_classifier(path))
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    conv.input[0] = "features"  # the conv reads the relu that reads it
    onnx.save(model, path)


def _fixed_batch(batch: int):
    def write(path) -> None:
        model = onnx.load(write_classifier(path))
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
        onnx.save(model, path)
    return write


@pytest.mark.parametrize("write, message", [
    (lambda path: path.write_bytes(b""), "not an ONNX model (an empty file)"),
    (_valueless_constant, "node /empty: a Constant with 0 attributes instead of one value"),
    (lambda path: _valueless_constant(path, batch=1), "node /empty: a Constant with 0 attributes"),
    (_custom_op, "onnxruntime cannot load the model"),
    (_cycle, "onnxruntime cannot load the model"),
    (_fixed_batch(3000), "at most 64; the model was exported for a fixed batch of 3000"),
    (_fixed_batch(10**9), "at most 64; the model was exported for a fixed batch of 1000000000"),
], ids=["empty", "valueless_constant", "valueless_constant_fixed_batch", "custom_op", "cycle", "batch_3000",
        "batch_1e9"])
def test_broken_models_are_refused_in_one_line(tmp_path, capsys, write, message):
    source = tmp_path / "broken.onnx"
    write(source)
    assert message in refusal(source, tmp_path / "out.onnx", capsys)


def test_a_missing_model_is_a_bad_argument(tmp_path):
    done = subprocess.run([sys.executable, "-m", "export.build", "--model", str(tmp_path / "missing.onnx"),
                           "--preprocessing", "torch", "--output", str(tmp_path / "out.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"export failed: arguments: --model {tmp_path / 'missing.onnx'}: no such file (see --help)"]
    assert list(tmp_path.iterdir()) == []
