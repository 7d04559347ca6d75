"""The model card: what a valid onnxcam model says, and one-line errors for everything else."""

import json

import pytest

from runtime import contract
from runtime.errors import ModelError
from runtime.explainer import Explainer
from tests.fake_model import LABELS, LAYERS, fake_metadata, write_fake_model, write_identity_model


def load_error(path) -> str:
    with pytest.raises(ModelError) as raised:
        Explainer(path, device="cpu")
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_card_of_a_valid_model(tmp_path):
    card = Explainer(write_fake_model(tmp_path / "fake.onnx"), device="cpu").card
    assert card.labels == tuple(LABELS) and card.num_classes == 4
    assert card.input_size == (32, 32)
    assert (card.model, card.layer, card.score, card.preprocessing) == (
        "fake",
        "average_pool",
        "logit",
        "none",
    )
    assert card.versions["opset"] == 17 and card.self_check == {"cam": 0.0}
    assert card.weights["source"] == "tests/fake_model.py"
    assert card.layers == ("average_pool",)


def test_card_of_a_two_layer_model(tmp_path):
    card = Explainer(write_fake_model(tmp_path / "two.onnx", layers=2), device="cpu").card
    assert card.layers == LAYERS and card.layer == LAYERS[0]


def test_layers_named_in_metadata_must_have_their_outputs_in_the_graph(tmp_path):
    path = write_fake_model(tmp_path / "x.onnx", fake_metadata(layers=2))  # a one-layer graph
    assert "graph lacks feature_maps.1, gradients.1, pooled_gradients.1, cam.1" in load_error(path)


def test_model_without_format_metadata(tmp_path):
    metadata = fake_metadata()
    del metadata[contract.META_FORMAT]
    path = write_fake_model(tmp_path / "x.onnx", metadata)
    assert load_error(path) == (
        f"{path}: not an onnxcam model (no onnxcam.format metadata); export one with python -m export.build"
    )


def test_plain_onnx_model_is_not_an_onnxcam_model(tmp_path):
    assert "not an onnxcam model" in load_error(write_identity_model(tmp_path / "plain.onnx"))


def test_model_of_another_format_version(tmp_path):
    path = write_fake_model(tmp_path / "x.onnx", {**fake_metadata(), contract.META_FORMAT: "onnxcam/2"})
    assert "unsupported format 'onnxcam/2' (this runtime reads onnxcam/1)" in load_error(path)


def test_model_missing_a_metadata_key(tmp_path):
    metadata = fake_metadata()
    del metadata[contract.META_LAYER]
    assert "missing metadata onnxcam.layer" in load_error(write_fake_model(tmp_path / "x.onnx", metadata))


@pytest.mark.parametrize(
    "key, value, problem",
    [
        (contract.META_LABELS, "[not json", "onnxcam.labels is not valid JSON"),
        (contract.META_LABELS, json.dumps(["a", "b", "c"]), "4 output classes but 3 labels"),
        (contract.META_LABELS, json.dumps([1, 2, 3, 4]), "non-empty JSON list of strings"),
        (contract.META_INPUT_SIZE, json.dumps([224, 224]), "input image is 32x32 but metadata says 224x224"),
        (contract.META_INPUT_SIZE, json.dumps([32]), "must be a JSON list [height, width]"),
        (contract.META_VERSIONS, json.dumps([1]), "onnxcam.versions must be a JSON object"),
        (contract.META_LAYER, " ", "onnxcam.layer is empty"),
        (contract.META_LAYERS, "[]", "onnxcam.layers must be a non-empty JSON list of layer names"),
        (contract.META_LAYERS, '"average_pool"', "onnxcam.layers must be a non-empty JSON list"),
        (contract.META_LAYERS, '["average_pool", ""]', "onnxcam.layers must be a non-empty JSON list"),
        (contract.META_LAYERS, "[not json", "onnxcam.layers is not valid JSON"),
        (
            contract.META_LAYERS,
            '["other", "average_pool"]',
            "onnxcam.layers starts with 'other', not onnxcam.layer 'average_pool'",
        ),
    ],
)
def test_invalid_metadata_values(tmp_path, key, value, problem):
    path = write_fake_model(tmp_path / "x.onnx", {**fake_metadata(), key: value})
    assert problem in load_error(path)


def test_metadata_on_a_graph_without_the_contract_outputs(tmp_path):
    message = load_error(write_identity_model(tmp_path / "x.onnx", fake_metadata()))
    assert "graph lacks image, class_index, probabilities" in message


def test_corrupt_model(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"\x08\x07garbage" * 100)
    assert "cannot load model, corrupt or not ONNX" in load_error(path)


def test_truncated_model(tmp_path):
    path = write_fake_model(tmp_path / "cut.onnx")
    path.write_bytes(path.read_bytes()[:300])
    assert "cannot load model" in load_error(path)


def test_missing_model(tmp_path):
    assert load_error(tmp_path / "nowhere.onnx").endswith("model file not found")


def test_an_unknown_score_kind_is_refused(tmp_path):
    path = write_fake_model(tmp_path / "x.onnx", {**fake_metadata(), contract.META_SCORE: "logits"})
    assert "metadata onnxcam.score is 'logits', not one of logit, probability" in load_error(path)


def _retyped_input(path, name: str, elem_type: int | None = None, batch: int | None = None):
    """Rewrite the fake model so that input `name` has another element type (cast back inside the
    graph, so that onnxruntime still loads it) or a fixed batch size."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    [value] = [value for value in model.graph.input if value.name == name]
    if batch is not None:
        value.type.tensor_type.shape.dim[0].dim_value = batch
    if elem_type is not None:
        original = value.type.tensor_type.elem_type
        value.type.tensor_type.elem_type = elem_type
        for node in model.graph.node:
            node.input[:] = [f"{name}_cast" if given == name else given for given in node.input]
        model.graph.node.insert(0, helper.make_node("Cast", [name], [f"{name}_cast"], to=original))
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "name, change, problem",
    [
        ("image", {"batch": 1}, "input image has a fixed batch size 1; it must be dynamic"),
        ("image", {"elem_type": 11}, "input image must be float32 [N, H, W, 3], not tensor(double)"),
        ("class_index", {"elem_type": 6}, "input class_index must be int64"),
    ],
    ids=["fixed-batch", "float64-image", "int32-class-index"],
)
def test_a_graph_whose_inputs_break_the_contract_is_refused(tmp_path, name, change, problem):
    path = _retyped_input(write_fake_model(tmp_path / "x.onnx"), name, **change)
    assert problem in load_error(path)


def test_the_retyping_helper_alone_keeps_a_valid_model(tmp_path):
    """The control for the test above: the same rewrite with nothing changed still loads."""
    path = _retyped_input(write_fake_model(tmp_path / "x.onnx"), "image")
    assert Explainer(path, device="cpu").card.num_classes == 4
