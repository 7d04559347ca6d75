"""Writes the PyTorch fixtures of tests/test_onnx_import_torch.py: small CNNs built from
torchvision's own blocks, exported by `torch.onnx.export` (dynamic batch, opset 17), and what
torch autograd and pytorch-grad-cam give for them on 4 images. CI has no torch; the test imports
the committed .onnx files and compares with the committed .npz.

Needs torch, torchvision, grad-cam, onnx and onnxscript (a scratch venv, see
benchmarks/torch_compare.py):

    python -m tests.torch_fixtures.make_fixtures   # from the repository's root

Each <name>.onnx has a random-weight model (torch.manual_seed(0), BatchNorm statistics from 16
seeded N(0, 1) images so that eval-mode activations do not vanish: torch_compare.recalibrated);
tiny_convnext_dynamo.onnx (+ its .onnx.data) is tiny_convnext as the dynamo exporter writes it;
tiny_shufflenet_batch1.onnx is tiny_shufflenet exported for a fixed batch of 1. Each <name>.npz has:
images (4x64x64x3 uint8, seeded smoothed noise), logits, top (torch's top class), features
(NCHW, the output of `model.features`: the tensor the head pools), pooled_gradients (NC: the
gradient of logit[top] w.r.t. features, averaged over H and W) and gradcam (4x64x64: pytorch-grad-cam
GradCAM(model, [model.features]) for ClassifierOutputTarget(top)), and versions.
"""

import json
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.models.convnext import CNBlock, LayerNorm2d
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
from torchvision.models.resnet import BasicBlock
from torchvision.models.shufflenetv2 import InvertedResidual as ShuffleBlock
from torchvision.ops.misc import Conv2dNormActivation

from benchmarks.torch_compare import recalibrated

HERE = Path(__file__).resolve().parent
SIZE = 64
CLASSES = 10
MEAN = np.float32([0.485, 0.456, 0.406])
STD = np.float32([0.229, 0.224, 0.225])
LAYER_SCALE = 0.5  # ConvNeXt's 1e-6 would make a random block nearly the identity


class Classifier(nn.Module):
    """features -> global average pooling -> head, as torchvision's classifiers are laid out."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features, self.pool, self.head = features, nn.AdaptiveAvgPool2d(1), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def tiny_resnet() -> Classifier:
    """ResNet's BasicBlocks; head: flatten, linear (the exact GAP + linear shortcut)."""
    downsample = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    features = nn.Sequential(
        Conv2dNormActivation(3, 16, 3, stride=2), BasicBlock(16, 32, stride=2, downsample=downsample), BasicBlock(32, 32)
    )
    return Classifier(features, nn.Sequential(nn.Flatten(1), nn.Linear(32, CLASSES)))


def tiny_mobilenet() -> Classifier:
    """MobileNetV3's inverted residuals (depthwise, squeeze-excitation, hardswish); head: its
    classifier, linear -> hardswish -> dropout -> linear (reverse-mode autodiff)."""
    blocks = [InvertedResidualConfig(16, 3, 32, 24, True, "HS", 2, 1, 1.0), InvertedResidualConfig(24, 5, 48, 24, True, "HS", 1, 1, 1.0)]
    features = nn.Sequential(
        Conv2dNormActivation(3, 16, 3, stride=2, activation_layer=nn.Hardswish),
        *[InvertedResidual(config, nn.BatchNorm2d) for config in blocks],
        Conv2dNormActivation(24, 48, 1, activation_layer=nn.Hardswish),
    )
    head = nn.Sequential(nn.Flatten(1), nn.Linear(48, 64), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(64, CLASSES))
    return Classifier(features, head)


def tiny_convnext() -> Classifier:
    """ConvNeXt's patchify stem and CNBlocks (LayerNorm, GELU, layer scale); head: its
    LayerNorm2d -> flatten -> linear (reverse-mode autodiff through LayerNormalization)."""
    features = nn.Sequential(
        nn.Conv2d(3, 32, 4, stride=4), LayerNorm2d(32), CNBlock(32, LAYER_SCALE, 0.0), CNBlock(32, LAYER_SCALE, 0.0)
    )
    return Classifier(features, nn.Sequential(LayerNorm2d(32), nn.Flatten(1), nn.Linear(32, CLASSES)))


def tiny_shufflenet() -> Classifier:
    """ShuffleNetV2's blocks (channel split and shuffle: Reshape, Transpose, Slice); head: flatten, linear."""
    features = nn.Sequential(
        Conv2dNormActivation(3, 24, 3, stride=2), ShuffleBlock(24, 48, 2), ShuffleBlock(48, 48, 1),
        Conv2dNormActivation(48, 64, 1),
    )
    return Classifier(features, nn.Sequential(nn.Flatten(1), nn.Linear(64, CLASSES)))


MODELS = {"tiny_resnet": tiny_resnet, "tiny_mobilenet": tiny_mobilenet, "tiny_convnext": tiny_convnext,
          "tiny_shufflenet": tiny_shufflenet}
DYNAMO = {"tiny_convnext"}  # its head has the dynamo exporter's as_strided Gather
# Also exported for a fixed batch of 1 (no dynamic axes, torch.onnx.export's default): the channel
# shuffle's Reshape targets are folded to constants that start with 1.
FIXED_BATCH = {"tiny_shufflenet"}


def images() -> np.ndarray:
    """4 images of seeded noise, smoothed so that they have regions: 4x64x64x3 uint8."""
    noise = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    smooth = np.stack([cv2.GaussianBlur(image, (0, 0), 3) for image in noise])
    low, high = smooth.min(axis=(1, 2, 3), keepdims=True), smooth.max(axis=(1, 2, 3), keepdims=True)
    return np.round((smooth - low) / (high - low) * 255).astype(np.uint8)


def reference(model: Classifier, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """torch's logits, top class, features and their pooled gradients, and pytorch-grad-cam's map."""
    batch = torch.from_numpy(((pixels.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    stored = {}

    def keep(_, __, output):
        output.retain_grad()
        stored["features"] = output

    handle = model.features.register_forward_hook(keep)
    logits = model(batch)
    handle.remove()
    top = logits.argmax(1)
    logits[torch.arange(len(top)), top].sum().backward()
    features = stored["features"]
    with GradCAM(model=model, target_layers=[model.features]) as cam:
        gradcam = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in top])
    return {
        "logits": logits.detach().numpy(),
        "top": top.numpy(),
        "features": features.detach().numpy(),
        "pooled_gradients": features.grad.numpy().mean(axis=(2, 3)),
        "gradcam": gradcam.astype(np.float32),
    }


def main() -> None:
    versions = {name: version(name) for name in ("torch", "torchvision", "grad-cam", "onnx", "onnxscript")}
    pixels = images()
    for name, build in MODELS.items():
        torch.manual_seed(0)
        model = build()
        recalibrated(model, SIZE)
        model.eval()
        torch.onnx.export(
            model, (torch.zeros(2, 3, SIZE, SIZE),), str(HERE / f"{name}.onnx"), opset_version=17, dynamo=False,
            input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )
        if name in DYNAMO:  # also as the dynamo exporter writes it: opset 18, the weights in a .onnx.data beside it
            torch.onnx.export(
                model, (torch.zeros(2, 3, SIZE, SIZE),), str(HERE / f"{name}_dynamo.onnx"), opset_version=18, dynamo=True,
                input_names=["input"], output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("N")},),
            )
        if name in FIXED_BATCH:
            torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), str(HERE / f"{name}_batch1.onnx"),
                              opset_version=17, dynamo=False, input_names=["input"], output_names=["logits"])
        np.savez_compressed(HERE / f"{name}.npz", images=pixels, versions=json.dumps(versions), **reference(model, pixels))
        print(f"{name}: {(HERE / f'{name}.onnx').stat().st_size / 1024:.0f} KB, {versions}")


if __name__ == "__main__":
    main()
