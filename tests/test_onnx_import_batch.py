"""The ONNX import of classifiers exported for a fixed batch (torch.onnx.export's default, no dynamic
axes): the imported model takes any number of images and equals the original run one at a time."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tests.importing import import_onnx

SIZE, CHANNELS, CLASSES = 16, 5, 4
MEAN = np.float32([123.675, 116.28, 103.53])
STD = np.float32([58.395, 57.12, 57.375])


def write_fixed_batch_classifier(path: Path, flatten: str) -> Path:
    """conv -> relu -> GlobalAveragePool -> Reshape to [1, C] -> Gemm, input fixed at batch 1.
    flatten: "constant" (the Reshape target an initializer, as torch folds x.view(x.size(0), -1)) or
    "computed" (a Concat of two constants, which the import does not rewrite)."""
    rng = np.random.default_rng(0)
    arrays = {
        "conv.weight": rng.standard_normal((CHANNELS, 3, 3, 3)).astype(np.float32) * 0.3,
        "fc.weight": rng.standard_normal((CLASSES, CHANNELS)).astype(np.float32),
        "fc.bias": rng.standard_normal(CLASSES).astype(np.float32),
        "target": np.array([1, CHANNELS], np.int64),
        "batch": np.array([1], np.int64),
        "rest": np.array([CHANNELS], np.int64),
    }
    node = helper.make_node
    nodes = [node("Conv", ["input", "conv.weight"], ["conv_out"], pads=[1, 1, 1, 1]),
             node("Relu", ["conv_out"], ["features"]),
             node("GlobalAveragePool", ["features"], ["pooled"])]
    if flatten == "constant":
        nodes.append(node("Reshape", ["pooled", "target"], ["flat"]))
    else:
        nodes += [node("Concat", ["batch", "rest"], ["computed_target"], axis=0),
                  node("Reshape", ["pooled", "computed_target"], ["flat"])]
    nodes.append(node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1))
    used = {name for n in nodes for name in n.input}
    graph = helper.make_graph(
        nodes, "fixed_batch", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])],
        initializer=[numpy_helper.from_array(value, name) for name, value in arrays.items() if name in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_a_fixed_batch_model_takes_any_batch_and_equals_the_original(tmp_path, capsys):
    source = write_fixed_batch_classifier(tmp_path / "fixed.onnx", "constant")
    output = tmp_path / "out.onnx"
    assert import_onnx(str(source), str(output)) == 0
    assert "global average pooling + linear (exact)" in capsys.readouterr().out

    images = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    imported = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    names = [o.name for o in imported.get_outputs()]
    ours = dict(zip(names, imported.run(None, {"image": images, "class_index": np.full((3, 2), -1, np.int64)})))
    original = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    pixels = ((images - MEAN) / STD).transpose(0, 3, 1, 2)
    logits = np.concatenate([original.run(None, {"input": pixels[i:i + 1]})[0] for i in range(3)])
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(ours["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    assert ours["cam"].shape == (3, 2, SIZE, SIZE)


def test_a_fixed_batch_it_cannot_free_is_refused_in_one_line(tmp_path, capfd):
    source = write_fixed_batch_classifier(tmp_path / "fixed.onnx", "computed")
    output = tmp_path / "out.onnx"
    assert import_onnx(str(source), str(output)) == 1
    error = capfd.readouterr().err  # onnxruntime's own log included: it writes to fd 2
    assert len(error.strip().splitlines()) == 1
    assert "exported for a fixed batch of 1" in error and "dynamic_axes" in error
    assert not output.exists()
