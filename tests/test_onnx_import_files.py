"""The ONNX import reads models whose weights lie in a separate data file, from any folder, and
writes one self-contained file."""

import os
import shutil

import numpy as np
import onnx

from tests.importing import import_onnx
from runtime import Explainer
from tests.onnx_classifiers import SIZE, write_classifier


def test_weights_in_a_separate_data_file(tmp_path, monkeypatch, capsys):
    source = tmp_path / "models" / "classifier.onnx"
    source.parent.mkdir()
    plain = write_classifier(tmp_path / "plain.onnx", head="gemm", layout="nchw", softmax=True)
    onnx.save(onnx.load(str(plain)), str(source), save_as_external_data=True, all_tensors_to_one_file=True,
              location="classifier.onnx.data", size_threshold=0)
    assert (source.parent / "classifier.onnx.data").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the data file is found beside the model, not in the current folder
    output = tmp_path / "out" / "imported.onnx"
    assert import_onnx(str(source), str(output)) == 0, capsys.readouterr().err

    shutil.rmtree(source.parent)  # the written model must not need the data file
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(str(output)).graph.initializer)
    reference = tmp_path / "reference.onnx"
    assert import_onnx(str(plain), str(reference)) == 0
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    got, expected = (Explainer(str(path), device="cpu").explain(image) for path in (output, reference))
    assert [p.index for p in got.predictions] == [p.index for p in expected.predictions]
    np.testing.assert_allclose(got.maps[0].cam, expected.maps[0].cam, rtol=1e-6, atol=1e-7)
    assert os.path.getsize(output) > os.path.getsize(plain) * 0.9  # the weights are inside


def test_the_written_model_carries_no_unused_constant(tmp_path):
    source = write_classifier(tmp_path / "classifier.onnx", head="gemm", layout="nhwc", softmax=False)
    output = tmp_path / "imported.onnx"
    assert import_onnx(str(source), str(output), preprocessing="tf") == 0
    graph = onnx.load(str(output)).graph
    used = {name for node in graph.node for name in node.input}
    assert [init.name for init in graph.initializer if init.name not in used] == []
