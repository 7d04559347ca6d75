"""Writes the Swin fixture of tests/test_onnx_import_vit.py: a tiny torchvision `SwinTransformer` (patch 4,
embed 8, depths (1, 2), heads (1, 2), window 4, MLP ratio 2, 64x64 input: stage 2 is 8x8, 4 windows, its
last block shifted), seeded random weights, exported by `torch.onnx.export` (legacy exporter, opset 17, dynamic
batch), and what torch autograd and pytorch-grad-cam give for it on 4 images at its documented Swin layer
`features[-1][-1].norm1` (the last block's attention input). CI has no torch; the test imports the
committed .onnx and compares with the committed .npz.

    python -m tests.torch_fixtures.make_swin_fixture   # from the repository's root, in the torch venv

tiny_swin.npz: images (4x64x64x3 uint8, make_fixtures.images), logits, top (torch's top class), norm1 (its
output [4, 8, 8, 16], NHWC), norm1_gradients (the gradient of logit[top] w.r.t. it), gradcam (4x64x64:
GradCAM(model, [features[-1][-1].norm1]) with the NHWC-to-NCHW reshape_transform, ClassifierOutputTarget(top)),
and versions.
"""

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchvision.models.swin_transformer import SwinTransformer

from benchmarks.torch_compare import torch_reference
from tests.torch_fixtures.make_fixtures import MEAN, SIZE, STD, images

HERE = Path(__file__).resolve().parent
CLASSES = 10


def tiny_swin() -> SwinTransformer:
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 2], num_heads=[1, 2], window_size=[4, 4],
                           mlp_ratio=2.0, stochastic_depth_prob=0.0, num_classes=CLASSES).eval()


def main() -> None:
    versions = {name: version(name) for name in ("torch", "torchvision", "grad-cam", "onnx")}
    torch.manual_seed(0)
    model = tiny_swin()
    torch.onnx.export(model, (torch.zeros(2, 3, SIZE, SIZE),), str(HERE / "tiny_swin.onnx"), opset_version=17,
                      dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    pixels = images()
    batch = torch.from_numpy(((pixels.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    norm1 = model.features[-1][-1].norm1
    logits, tokens, gradients = torch_reference(model, norm1, batch)
    top = logits.argmax(1)
    with GradCAM(model=model, target_layers=[norm1], reshape_transform=lambda x: x.permute(0, 3, 1, 2)) as cam:
        gradcam = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in top])
    np.savez_compressed(HERE / "tiny_swin.npz", images=pixels, versions=json.dumps(versions), logits=logits, top=top,
                        norm1=tokens, norm1_gradients=gradients, gradcam=gradcam.astype(np.float32))
    print(f"tiny_swin: {(HERE / 'tiny_swin.onnx').stat().st_size / 1024:.0f} KB, {versions}")


if __name__ == "__main__":
    main()
