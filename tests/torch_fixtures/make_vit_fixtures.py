"""Writes the vision-transformer fixtures of tests/test_onnx_import_vit.py: a tiny timm ViT (2 blocks,
patch 16, 64x64 input, width 32, 2 heads, a class token and one register token: 16 patch tokens + 2),
exported by `torch.onnx.export` with both exporters, and what torch autograd and pytorch-grad-cam give
for it on 4 images. CI has no torch; the test imports the committed .onnx files and compares with the
committed .npz.

Needs torch, timm, grad-cam, onnx and onnxscript (a scratch venv, see benchmarks/torch_compare.py):

    python -m tests.torch_fixtures.make_vit_fixtures   # from the repository's root

tiny_vit.onnx: the legacy exporter (dynamo=False, opset 17, dynamic batch); tiny_vit_dynamo.onnx (+ its
.onnx.data): the dynamo exporter at opset 20 (GELU as the `Gelu` op). tiny_vit.npz: images (4x64x64x3
uint8, make_fixtures.images), logits, top (torch's top class), tokens (the output of `blocks[-1].norm1`,
the input of the last attention: [4, 18, 32]), token_gradients (the gradient of logit[top] w.r.t. it),
gradcam (4x64x64: pytorch-grad-cam GradCAM(model, [blocks[-1].norm1]) with its documented ViT
reshape_transform, the 2 extra tokens dropped, for ClassifierOutputTarget(top)), and versions.
"""

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from timm.models.vision_transformer import VisionTransformer

from benchmarks.torch_compare import torch_reference
from tests.torch_fixtures.make_fixtures import MEAN, SIZE, STD, images

HERE = Path(__file__).resolve().parent
CLASSES = 10
PATCH = 16
EXTRA = 2  # the class token and one register token


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=2, num_heads=2,
                             num_classes=CLASSES, class_token=True, reg_tokens=EXTRA - 1).eval()


def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ViT recipe: drop the extra tokens, patch tokens to [N, C, h, w]."""
    side = SIZE // PATCH
    result = tensor[:, EXTRA:, :].reshape(tensor.size(0), side, side, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def reference(model: VisionTransformer, pixels: np.ndarray) -> dict[str, np.ndarray]:
    batch = torch.from_numpy(((pixels.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    logits, tokens, token_gradients = torch_reference(model, model.blocks[-1].norm1, batch)
    top = logits.argmax(1)
    with GradCAM(model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=reshape_transform) as cam:
        gradcam = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in top])
    return {"logits": logits, "top": top, "tokens": tokens, "token_gradients": token_gradients,
            "gradcam": gradcam.astype(np.float32)}


def main() -> None:
    versions = {name: version(name) for name in ("torch", "timm", "grad-cam", "onnx", "onnxscript")}
    torch.manual_seed(0)
    model = tiny_vit()
    example = (torch.zeros(2, 3, SIZE, SIZE),)
    torch.onnx.export(model, example, str(HERE / "tiny_vit.onnx"), opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    torch.onnx.export(model, example, str(HERE / "tiny_vit_dynamo.onnx"), opset_version=20, dynamo=True,
                      input_names=["input"], output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("N")},))
    np.savez_compressed(HERE / "tiny_vit.npz", images=images(), versions=json.dumps(versions),
                        **reference(model, images()))
    print(f"tiny_vit: {(HERE / 'tiny_vit.onnx').stat().st_size / 1024:.0f} KB, {versions}")


if __name__ == "__main__":
    main()
