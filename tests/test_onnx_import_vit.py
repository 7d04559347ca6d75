"""Vision transformers through the ONNX import with no reshape_transform to write: a tiny timm ViT (class
token + one register token, 4x4 patches) exported by torch.onnx.export with both exporters
(tests/torch_fixtures/make_vit_fixtures.py), imported with `--layer auto` and compared with what torch
autograd and pytorch-grad-cam (with its ViT reshape_transform) gave for it."""

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.onnx_import.cli import main
from runtime import Explainer
from tests.test_onnx_import_torch import pearson, relative, scale_cam_image

FIXTURES = Path(__file__).resolve().parent / "torch_fixtures"
EXTRA = 2  # the class token and the register token
# exporter -> the last attention's input, as each one names it (the output of blocks[-1].norm1)
MODELS = {"tiny_vit": "/blocks/blocks.1/norm1/LayerNormalization_output_0", "tiny_vit_dynamo": "layer_norm_2"}


def _import(name: str, output: Path, *flags: str) -> tuple[int, str, str]:
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        code = main(["--model", str(FIXTURES / f"{name}.onnx"), "--preprocessing", "torch", "--output", str(output),
                     *flags])
    return code, printed.getvalue(), errors.getvalue()


@pytest.fixture(scope="module", params=list(MODELS))
def imported(request, tmp_path_factory) -> tuple[str, Path, str]:
    output = tmp_path_factory.mktemp(request.param) / "vit_gradcam.onnx"
    code, printed, errors = _import(request.param, output)
    assert code == 0, errors
    return request.param, output, printed


def test_auto_takes_the_patch_tokens_of_the_last_attentions_input(imported):
    name, path, printed = imported
    assert f"layer: {MODELS[name]}:patches (4x4x32)" in printed
    metadata = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert metadata["onnxcam.layer"] == f"{MODELS[name]}:patches"


def test_maps_and_token_gradients_equal_torch_and_pytorch_grad_cam(imported):
    _, path, _ = imported
    torch_says = dict(np.load(FIXTURES / "tiny_vit.npz"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    top = torch_says["top"].astype(np.int64)
    ours = dict(zip([o.name for o in session.get_outputs()],
                    session.run(None, {"image": torch_says["images"].astype(np.float32), "class_index": top[:, None]})))
    patches = lambda tokens: tokens[:, EXTRA:].reshape(len(tokens), 4, 4, -1)  # noqa: E731
    assert ours["cam"].shape == (4, 1, 4, 4)
    assert relative(ours["feature_maps"], patches(torch_says["tokens"])) < 1e-5
    assert relative(ours["gradients"][:, 0], patches(torch_says["token_gradients"])) < 1e-5
    logits = torch_says["logits"]
    assert relative(ours["score"][:, 0], logits[np.arange(len(top)), top]) < 1e-5
    size = torch_says["images"].shape[1]
    for mine, theirs in zip(scale_cam_image(scale_cam_image(ours["cam"][:, 0], size)), torch_says["gradcam"], strict=True):
        assert pearson(mine, theirs) >= 0.999


def test_the_runtime_explains_it_unchanged(imported):
    _, path, _ = imported
    torch_says = dict(np.load(FIXTURES / "tiny_vit.npz"))
    explainer = Explainer(str(path), device="cpu")
    for image, top, theirs in zip(torch_says["images"], torch_says["top"], torch_says["gradcam"], strict=True):
        explanation = explainer.explain(image)
        assert explanation.predictions[0].index == top
        assert pearson(explanation.heatmaps[0], theirs) >= 0.99


@pytest.mark.parametrize("name", list(MODELS))
def test_a_layer_after_the_last_attention_is_refused_in_one_line(name, tmp_path):
    """The final norm's tokens reach the logits only through the class token: patch gradients all 0."""
    graph = onnx.load(FIXTURES / f"{name}.onnx", load_external_data=False).graph
    final_norm = [node.output[0] for node in graph.node if node.op_type == "LayerNormalization"][-1]
    output = tmp_path / "after.onnx"
    code, _, errors = _import(name, output, "--layer", final_norm)
    assert code == 1
    assert len(errors.strip().splitlines()) == 1
    assert "are all 0" in errors and "--layer auto" in errors
    assert not output.exists()


@pytest.mark.parametrize("name", list(MODELS))
def test_a_token_tensor_can_be_named(name, tmp_path):
    """`--layer` takes tokens [N, T, C]: the first block's attention input, and the same as NAME:patches."""
    graph = onnx.load(FIXTURES / f"{name}.onnx", load_external_data=False).graph
    first_norm = [node.output[0] for node in graph.node if node.op_type == "LayerNormalization"][0]
    for layer in (first_norm, first_norm + ":patches"):
        code, printed, errors = _import(name, tmp_path / "first.onnx", "--layer", layer)
        assert code == 0, errors
        assert f"layer: {first_norm}:patches (4x4x32)" in printed


def test_after_the_last_attention_only_the_extra_tokens_are_computed(imported):
    """The last MLP and the final norm run on the selected token (tokens.select_tokens_early), and the
    class token's gradient is a Pad, not an add-scatter."""
    _, path, _ = imported
    graph = onnx.load(path).graph
    assert any(node.op_type == "Slice" and node.output[0].endswith(":tokens0-0") for node in graph.node)
    assert not any(node.op_type == "ScatterElements" for node in graph.node)


@pytest.mark.parametrize("shape, size, layout", [
    ([None, 14, 14, 384], (224, 224), "nhwc"),  # Swin's stage output, read by strided Slices
    ([None, 384, 14, 14], (224, 224), "nchw"),
    ([None, 7, 10, 64], (224, 320), "nhwc"),
    ([None, 64, 7, 10], (224, 320), "nchw"),
])
def test_a_4d_layout_no_reader_tells_comes_from_the_input_proportions(shape, size, layout):
    from export.onnx_import.head import _layout

    assert _layout([], "t", {}, shape, size) == layout


SWIN_NORM1 = "/features/features.3/features.3.1/norm1/LayerNormalization_output_0"  # features[-1][-1].norm1


def test_swin_auto_takes_the_last_blocks_norm1_and_equals_pytorch_grad_cam(tmp_path):
    """A tiny torchvision Swin (tests/torch_fixtures/make_swin_fixture.py, its last block shifted): `--layer
    auto` takes the NHWC map its last windowed attention reads, not the pooled final norm."""
    output = tmp_path / "swin_gradcam.onnx"
    code, printed, errors = _import("tiny_swin", output)
    assert code == 0, errors
    assert f"layer: {SWIN_NORM1} (8x8x16)" in printed
    assert "self-check vs the original model" in printed
    torch_says = dict(np.load(FIXTURES / "tiny_swin.npz"))
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["onnxcam.layer"] == SWIN_NORM1
    top = torch_says["top"].astype(np.int64)
    ours = dict(zip([o.name for o in session.get_outputs()],
                    session.run(None, {"image": torch_says["images"].astype(np.float32), "class_index": top[:, None]})))
    assert relative(ours["feature_maps"], torch_says["norm1"]) < 1e-5
    assert relative(ours["gradients"][:, 0], torch_says["norm1_gradients"]) < 1e-4
    size = torch_says["images"].shape[1]
    for mine, theirs in zip(scale_cam_image(scale_cam_image(ours["cam"][:, 0], size)), torch_says["gradcam"], strict=True):
        assert pearson(mine, theirs) >= 0.999
