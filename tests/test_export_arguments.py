"""The one command line of both export paths: one --help, flags checked for the path --model chooses,
bad values and a missing model file as one line and exit 2 (no TensorFlow needed to say so)."""

from __future__ import annotations

import json

import pytest

from export.arguments import PREPROCESSINGS, parse_args
from export.onnx_import.wrap import PREPROCESSING
from tests.importing import import_onnx
from tests.onnx_classifiers import write_classifier


def _refused(arguments: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        parse_args(arguments)
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("export failed: arguments: ") and line.endswith(" (see --help)")
    return line


def test_one_help_shows_both_paths_flags(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    for flag in ("--weights", "--plain-output", "--opset", "--seed", "--mean", "--std", "--layout", "--input-size",
                 "--labels", "--layer", "--preprocessing", "--score", "--output"):
        assert flag in shown
    assert "Keras models only" in shown and "ONNX models only" in shown


@pytest.mark.parametrize("arguments, message", [
    (["--model", "{onnx}", "--preprocessing", "torch", "--weights", "none"], "--weights applies to Keras models only"),
    (["--model", "{onnx}", "--preprocessing", "torch", "--plain-output", "p.onnx"], "--plain-output applies to Keras"),
    (["--model", "{onnx}", "--preprocessing", "torch", "--score", "probability"], "the ONNX import differentiates the logit"),
    (["--model", "resnet50", "--mean", "1,2,3"], "--mean applies to PATH.onnx only"),
    (["--model", "resnet50", "--input-size", "224,224"], "--input-size applies to PATH.onnx only"),
    (["--model", "{onnx}", "--mean", "nan,1,1", "--std", "1,1,1"], "three finite numbers"),
    (["--model", "{onnx}", "--mean", "1,1,1", "--std", "1,inf,1"], "three finite numbers"),
    (["--model", "{onnx}", "--mean", "1,1,1", "--std", "1,0,1"], "--std: every value must be positive"),
    (["--model", "{onnx}", "--preprocessing", "torch", "--input-size", "1000000000,2"], "from 1 to 8192"),
    (["--model", "{onnx}"], "--preprocessing caffe|tf|torch|none or --mean R,G,B --std R,G,B"),
    (["--model", "resnet50", "--seed", "-1"], "expected a number >= 0"),
    (["--model", "resnet50", "--opset", "x"], "expected a whole number"),
    (["--model", "{missing}.onnx", "--preprocessing", "torch"], ".onnx: no such file"),
    (["--model", "{missing}.keras", "--preprocessing", "tf"], ".keras: no such file"),
    (["--model", "{folder}.onnx", "--preprocessing", "torch"], ".onnx: not a regular file"),
], ids=lambda value: None if isinstance(value, list) else value.split(":")[0][:24])
def test_flags_are_checked_for_the_chosen_path(tmp_path, capsys, arguments, message):
    (tmp_path / "folder.onnx").mkdir()
    paths = {"onnx": str(write_classifier(tmp_path / "classifier.onnx")), "missing": str(tmp_path / "missing"),
             "folder": str(tmp_path / "folder")}
    assert message in _refused([value.format(**paths) for value in arguments], capsys)


def test_defaults_are_filled_in_for_each_path(tmp_path):
    source = str(write_classifier(tmp_path / "classifier.onnx"))
    onnx_args = parse_args(["--model", source, "--preprocessing", "torch"])
    assert (onnx_args.layer, onnx_args.layout, onnx_args.output) == ("auto", "auto", "models/classifier_gradcam.onnx")
    keras_args = parse_args(["--model", "mobilenet_v3_small"])
    assert (keras_args.weights, keras_args.opset, keras_args.seed, keras_args.layer) == ("imagenet", 17, 0, None)
    assert keras_args.output == "models/mobilenet_v3_small_gradcam.onnx"


def test_the_import_knows_every_preprocessing_the_command_line_offers():
    assert sorted(PREPROCESSING) == sorted(PREPROCESSINGS)


def test_the_import_reads_labels_as_an_object_like_the_keras_path(tmp_path, capsys):
    """One label reader for both paths: {"0": name, ...} in any key order."""
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"3": "d", "0": "a", "2": "c", "1": "b"}))
    output = tmp_path / "out.onnx"
    assert import_onnx(write_classifier(tmp_path / "classifier.onnx"), output, "--labels", str(labels)) == 0, \
        capsys.readouterr().err
    from runtime import Explainer

    assert Explainer(str(output)).card.labels == ("a", "b", "c", "d")
