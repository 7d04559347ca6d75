"""Writes the fixtures of tests/test_runtime_methods_torch.py: one small random-weight CNN
(tiny_cnn: three conv blocks, global average pooling + linear head) that takes
raw 0..255 RGB (its torchvision normalisation inside, so that the references mask and add noise to
the same pixels onnxcam does), exported by torch.onnx.export, and what pytorch-grad-cam 1.5.7 and
torchcam 0.5.0 give for it on 4 images, at the layer's resolution. CI has no torch: the test
imports the committed .onnx twice (--layer at the last block, where the head is pooling + linear,
and at the second, where gradients vary over positions) and compares with the .npz.

Needs the scratch venv with torch, torchvision, grad-cam, torchcam, onnx, onnxscript:

    python -m tests.torch_fixtures.make_methods_fixtures   # from the repository's root

The head's weights are scaled by HEAD_SCALE so that the gradients are small (|g| ~ 1e-3 at the
inner layer): Grad-CAM++'s alpha constant matters there. methods_tiny_cnn.npz holds images
(4x64x64x3 uint8), top, and per layer L (inner, last): L_features (NCHW), L_gradients (NCHW, of
logit[top]) and a map [4, h, w] per reference, named L_<onnxcam method>: pytorch-grad-cam's maps
scaled to 0..1 as it returns them (not resized), torchcam's unnormalised. L_<method>_projection
holds the signed projection (before ReLU) of the component methods (and of Grad-CAM++ with
eigen_smooth), from pytorch-grad-cam's own get_2d_projection / get_2d_projection_kernel /
get_cam_weights on the same tensors. sharp_top and sharp_L_<method>: see SHARP.
"""

import json
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import torch
import torchcam.methods as torchcam
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FEM,
    FinerCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    KPCA_CAM,
    ScoreCAM,
)
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_kernel
from torch import nn

from benchmarks.torch_compare import recalibrated
from runtime.methods.smooth_gradcam_plus_plus import NOISE_STD
from tests.torch_fixtures.make_fixtures import CLASSES, MEAN, SIZE, STD, Classifier, images

HERE = Path(__file__).resolve().parent
NAME = "methods_tiny_cnn"
HEAD_SCALE = 3.0
# The score methods' channel weights are a softmax of logits: at HEAD_SCALE they are close to uniform
# (a plain channel sum agrees with their maps at r ~0.99). NAME_sharp.onnx is the same model with
# its head times SHARP, where they are not; its maps are sharp_L_<method>.
SHARP = 10.0
SCORE_METHODS = ("scorecam", "iscam", "sscam")
# torchcam's noisy methods, with enough samples that their maps settle (sample counts in the test)
SSCAM_SAMPLES = 100
SMOOTH_SAMPLES = 200


def tiny_cnn() -> Classifier:
    """conv-BN-SiLU x 3 (the second block's output is the "inner" layer, the third's the "last",
    both 16x16x32), global average pooling, linear. SiLU keeps the inner layer's head smooth enough
    for the import's finite-difference self-check: ResNet's blocks, and a ReLU in place of the
    last SiLU, failed it at 2e-2 > 1e-2 on inner layers."""
    def block(inputs: int, outputs: int, stride: int, activation: type[nn.Module]) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), activation())

    features = nn.Sequential(block(3, 16, 2, nn.SiLU), block(16, 32, 2, nn.SiLU), block(32, 32, 1, nn.SiLU))
    return Classifier(features, nn.Sequential(nn.Flatten(1), nn.Linear(32, CLASSES)))


class ZeroingAblation(AblationLayer):
    """pytorch-grad-cam's ablation layer, zeroing the channel as the paper does (its own sets it
    to min - 1e7 where the layer's minimum is not 0, as after a SiLU)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        output = self.activations
        for i in range(output.size(0)):
            output[i, self.indices[i], :] = 0
        return output


class RawPixels(nn.Module):
    """The classifier on raw 0..255 RGB, NCHW: x / 255, torchvision's mean and std, the model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.from_numpy(MEAN * 255).view(1, 3, 1, 1))
        self.register_buffer("std", torch.from_numpy(STD * 255).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def features_and_gradients(model: nn.Module, layer: nn.Module, batch: torch.Tensor, top: torch.Tensor):
    stored = {}

    def keep(_, __, output):
        output.retain_grad()
        stored["a"] = output

    handle = layer.register_forward_hook(keep)
    logits = model(batch)
    handle.remove()
    logits[torch.arange(len(top)), top].sum().backward()
    model.zero_grad()
    return stored["a"].detach().numpy(), stored["a"].grad.numpy()


def grad_cam_maps(cam_class, model, layer, batch, top, **options) -> np.ndarray:
    """pytorch-grad-cam's maps at the layer's resolution (its get_target_width_height -> None)."""
    cam = cam_class(model=model, target_layers=[layer], **options.pop("init", {}))
    (getattr(cam, "base_cam", cam)).get_target_width_height = lambda _: None
    targets = None if cam_class is FinerCAM else [ClassifierOutputTarget(int(c)) for c in top]
    with cam:
        return cam(input_tensor=batch, targets=targets, **options)


def torchcam_maps(cam_class, model, layer, batch, top, **options) -> np.ndarray:
    with cam_class(model, layer, input_shape=(3, SIZE, SIZE), **options) as extractor:
        scores = model(batch)
        maps = extractor(class_idx=[int(c) for c in top], scores=scores, normalized=False)[0]
    model.zero_grad()
    return maps.detach().numpy()


def export(model: nn.Module, path: Path) -> None:
    torch.onnx.export(
        model, (torch.zeros(2, 3, SIZE, SIZE),), str(path), opset_version=17, dynamo=False,
        input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
    )


def timed(makers: dict) -> dict[str, np.ndarray]:
    """Each maker's result, its time printed."""
    results = {}
    for name, make in makers.items():
        start = time.perf_counter()
        results[name] = make()
        print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)
    return results


def main() -> None:
    torch.set_num_threads(1)
    versions = {name: version(name) for name in ("torch", "torchvision", "grad-cam", "torchcam", "onnx")}
    torch.manual_seed(0)
    classifier = tiny_cnn()
    recalibrated(classifier, SIZE)
    classifier.eval()
    with torch.no_grad():
        classifier.head[1].weight.mul_(HEAD_SCALE)
        classifier.head[1].bias.mul_(HEAD_SCALE)
    model = RawPixels(classifier).eval()
    path = HERE / f"{NAME}.onnx"
    export(model, path)
    pixels = images()
    batch = torch.from_numpy(pixels.astype(np.float32).transpose(0, 3, 1, 2).copy())
    top = model(batch).argmax(1)
    saved = {"images": pixels, "top": top.numpy(), "versions": json.dumps(versions)}
    layers = {"inner": classifier.features[1], "last": classifier.features}
    for name, layer in layers.items():
        print(name, flush=True)
        features, gradients = features_and_gradients(model, layer, batch, top)
        saved[f"{name}_features"], saved[f"{name}_gradients"] = features, gradients
        maps = timed({
            "gradcam": lambda: grad_cam_maps(GradCAM, model, layer, batch, top),
            "eigencam": lambda: grad_cam_maps(EigenCAM, model, layer, batch, top),
            "gradcam++": lambda: grad_cam_maps(GradCAMPlusPlus, model, layer, batch, top),
            "gradcam++_eigen_smooth": lambda: grad_cam_maps(GradCAMPlusPlus, model, layer, batch, top, eigen_smooth=True),
            "gradcamelementwise": lambda: grad_cam_maps(GradCAMElementWise, model, layer, batch, top),
            "eigengradcam": lambda: grad_cam_maps(EigenGradCAM, model, layer, batch, top),
            "kpcacam": lambda: grad_cam_maps(KPCA_CAM, model, layer, batch, top),
            "fem": lambda: grad_cam_maps(FEM, model, layer, batch, top),
            "scorecam": lambda: grad_cam_maps(ScoreCAM, model, layer, batch, top),
            "ablationcam": lambda: grad_cam_maps(AblationCAM, model, layer, batch, top, init={"ablation_layer": ZeroingAblation()}),
            "finercam_pytorch_grad_cam": lambda: grad_cam_maps(FinerCAM, model, layer, batch, top),
            "finercam": lambda: torchcam_maps(torchcam.FinerCAM, model, layer, batch, top),
            "cam": lambda: torchcam_maps(torchcam.CAM, model, layer, batch, top, fc_layer="model.head.1"),
            "iscam": lambda: torchcam_maps(torchcam.ISCAM, model, layer, batch, top),
            "sscam": lambda: torchcam_maps(torchcam.SSCAM, model, layer, batch, top, num_samples=SSCAM_SAMPLES),
            "smoothgradcam++": lambda: torchcam_maps(
                torchcam.SmoothGradCAMpp, model, layer, batch, top, num_samples=SMOOTH_SAMPLES, std=NOISE_STD
            ),
        })
        maps["eigengradcam_projection"] = get_2d_projection(gradients * features)
        maps["eigencam_projection"] = get_2d_projection(features)
        maps["kpcacam_projection"] = get_2d_projection_kernel(features)
        plus_plus = GradCAMPlusPlus(model, [layer]).get_cam_weights(batch, [layer], None, features, gradients)
        maps["gradcam++_eigen_smooth_projection"] = get_2d_projection(plus_plus[:, :, None, None] * features)
        saved |= {f"{name}_{method}": np.asarray(m, np.float32) for method, m in maps.items()}
    with torch.no_grad():
        classifier.head[1].weight.mul_(SHARP)
        classifier.head[1].bias.mul_(SHARP)
    export(model, HERE / f"{NAME}_sharp.onnx")
    sharp_top = model(batch).argmax(1)
    saved["sharp_top"] = sharp_top.numpy()
    for name, layer in layers.items():
        print("sharp", name, flush=True)
        sharp_maps = timed({
            "scorecam": lambda: grad_cam_maps(ScoreCAM, model, layer, batch, sharp_top),
            "iscam": lambda: torchcam_maps(torchcam.ISCAM, model, layer, batch, sharp_top),
            "sscam": lambda: torchcam_maps(torchcam.SSCAM, model, layer, batch, sharp_top, num_samples=SSCAM_SAMPLES),
        })
        saved |= {f"sharp_{name}_{method}": np.asarray(m, np.float32) for method, m in sharp_maps.items()}
    np.savez_compressed(HERE / f"{NAME}.npz", **saved)
    onnx.checker.check_model(str(path))
    print(f"{NAME}: {path.stat().st_size / 1024:.0f} KB onnx, "
          f"{(HERE / f'{NAME}.npz').stat().st_size / 1024:.0f} KB npz, {versions}")


if __name__ == "__main__":
    main()
