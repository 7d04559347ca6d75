"""Writes the reference outputs of tests/test_evaluate_references.py: what RISE, torchcam and
pytorch-grad-cam compute for deletion, insertion, average drop / increase in confidence, the
confidence change and ROAD, on a tiny random CNN, 3 images and 2 maps each. CI has no torch: the
test runs the same CNN from evaluate_model.onnx (raw NHWC 0..255 in, ImageNet normalisation and
softmax inside) through runtime.evaluate and compares.

/work/torchvenv/bin/python tests/torch_fixtures/evaluate_make_references.py
Needs torch, onnx, scipy, grad-cam 1.5.7, torchcam 0.5.0 (torchvision not needed: the scratch
venv's is broken, so pytorch_grad_cam's metrics modules are imported without its __init__).

RISE is no package: `rise_single_run` transcribes its CausalMetric.single_run, gkern and auc
(github.com/eclique/RISE, evaluation.py) for one image. ROAD runs with the imputation noise set to
0 (NoisyLinearImputer's default is 0.01 of torch's randn, which numpy cannot replay).
"""

import importlib
import json
import sys
import types
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

HERE = Path(__file__).resolve().parent
SIZE, CLASSES, STEPS = 32, 5, 16  # 32x32 = 1024 pixels: 64 per step
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def grad_cam_metrics() -> types.SimpleNamespace:
    """pytorch_grad_cam.metrics.* without pytorch_grad_cam/__init__ (it imports torchvision)."""
    root = Path(importlib.util.find_spec("torch").origin).parent.parent / "pytorch_grad_cam"
    for name, path in (("pytorch_grad_cam", root), ("pytorch_grad_cam.metrics", root / "metrics")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
    road = importlib.import_module("pytorch_grad_cam.metrics.road")
    cam_mult = importlib.import_module("pytorch_grad_cam.metrics.cam_mult_image")
    return types.SimpleNamespace(road=road, cam_mult=cam_mult)


class Network(nn.Module):
    """A tiny CNN on normalised NCHW input; logits scaled so that the probabilities spread."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 400 * self.fc(self.features(x).mean(dim=(2, 3)))


class RawProbabilities(nn.Module):
    """What the ONNX file holds: raw NHWC RGB 0..255 -> softmax probabilities."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images.permute(0, 3, 1, 2) - MEAN) / STD).softmax(-1)


def softmax_target(category: int):
    """pytorch-grad-cam's ClassifierOutputSoftmaxTarget (its module imports torchvision)."""
    return lambda output: torch.softmax(output, dim=-1)[..., category]


def gkern(klen: int, nsig: float) -> torch.Tensor:
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    for i in range(3):
        kern[i, i] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_auc(arr: np.ndarray) -> float:
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


def rise_single_run(model, img_tensor, explanation, mode, step, substrate_fn) -> np.ndarray:
    """RISE's CausalMetric.single_run (softmax of the model, class = its argmax on the image)."""
    hw = img_tensor.shape[2] * img_tensor.shape[3]
    with torch.no_grad():
        c = int(model(img_tensor).softmax(1).argmax())
        n_steps = (hw + step - 1) // step
        start, finish = ((img_tensor.clone(), substrate_fn(img_tensor)) if mode == "del"
                         else (substrate_fn(img_tensor), img_tensor.clone()))
        scores = np.empty(n_steps + 1)
        salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1), axis=-1)
        for i in range(n_steps + 1):
            scores[i] = float(model(start).softmax(1)[0, c])
            if i < n_steps:
                coords = salient_order[:, step * i:step * (i + 1)]
                start.numpy().reshape(1, 3, hw)[0, :, coords] = finish.numpy().reshape(1, 3, hw)[0, :, coords]
    return scores


class GivenCams:
    """A torchcam CAM extractor that returns the maps it was given (the metric's input)."""

    def __init__(self, model: nn.Module, cams: torch.Tensor) -> None:
        self.model, self.cams = model, cams

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.cams]

    def fuse_cams(self, cams):
        return cams[0]

    @contextmanager
    def _hooks_off(self):
        yield


def inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """3 smooth-ish images (raw 0..255 float32) and 2 maps each in 0..1 with maximum 1, no ties."""
    import cv2

    images, maps = [], []
    for _ in range(3):
        coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.float32)
        image = cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 12, (SIZE, SIZE, 3))
        images.append(np.clip(np.rint(image), 0, 255).astype(np.float32))
        per_image = []
        for cells in (4, 8):
            smooth = cv2.resize(rng.random((cells, cells)).astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            smooth = smooth + rng.random((SIZE, SIZE)).astype(np.float32) * 1e-3  # no ties
            smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
            per_image.append(np.float32(0.02) + np.float32(0.98) * smooth)
        maps.append(per_image)
    return np.stack(images), np.asarray(maps, np.float32)


def main() -> None:
    from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

    torch.manual_seed(0)
    network = Network().eval()
    images, maps = inputs(np.random.default_rng(0))
    raw = RawProbabilities(network).eval()
    torch.onnx.export(raw, (torch.zeros(1, SIZE, SIZE, 3),), str(HERE / "evaluate_model.onnx"), opset_version=17,
                      input_names=["image"], output_names=["probabilities"], dynamic_axes={"image": {0: "n"}},
                      dynamo=False)
    library = grad_cam_metrics()
    road = library.road
    road.NoisyLinearImputer.__init__.__defaults__ = (0.0, road.neighbors_weights)  # no noise: replayable
    normalised = (torch.from_numpy(images).permute(0, 3, 1, 2) - MEAN) / STD
    with torch.no_grad():
        classes = network(normalised).argmax(1).tolist()
    kern = gkern(11, 5)
    blur = lambda x: nn.functional.conv2d(x, kern, padding=11 // 2)  # noqa: E731 RISE's substrate
    out: dict[str, list] = {name: [] for name in (
        "rise_deletion", "rise_insertion", "rise_deletion_curve", "rise_insertion_curve", "torchcam_deletion",
        "torchcam_insertion", "torchcam_average_drop", "torchcam_increase", "gradcam_confidence_change",
        "gradcam_drop_in_confidence", "gradcam_increase_in_confidence", "road_morf", "road_lerf", "road_combined")}
    for n, (image_maps, c) in enumerate(zip(maps, classes)):
        x = normalised[n:n + 1]
        for saliency in image_maps:
            deletion = rise_single_run(network, x, saliency, "del", SIZE * SIZE // STEPS, torch.zeros_like)
            insertion = rise_single_run(network, x, saliency, "ins", SIZE * SIZE // STEPS, blur)
            out["rise_deletion_curve"].append(deletion.tolist())
            out["rise_insertion_curve"].append(insertion.tolist())
            out["rise_deletion"].append(rise_auc(deletion))
            out["rise_insertion"].append(rise_auc(insertion))
            cam = torch.from_numpy(saliency)[None]
            metric = DeletionInsertionMetric(GivenCams(network, cam), lambda z: z.softmax(-1), steps=STEPS)
            metric.update(x, class_idx=c)
            out["torchcam_deletion"].append(metric.deletion)
            out["torchcam_insertion"].append(metric.insertion)
            metric = ClassificationMetric(GivenCams(network, cam), lambda z: z.softmax(-1))
            metric.update(x, class_idx=c)
            out["torchcam_average_drop"].append(metric.drop)
            out["torchcam_increase"].append(metric.increase)
            cams, targets = saliency[None], [softmax_target(c)]
            out["gradcam_confidence_change"].append(float(library.cam_mult.CamMultImageConfidenceChange()(x, cams, targets, network)[0]))
            out["gradcam_drop_in_confidence"].append(float(library.cam_mult.DropInConfidence()(x, cams, targets, network)[0]))
            out["gradcam_increase_in_confidence"].append(float(library.cam_mult.IncreaseInConfidence()(x, cams, targets, network)[0]))
            out["road_morf"].append(float(road.ROADMostRelevantFirstAverage()(x, cams, targets, network)[0]))
            out["road_lerf"].append(float(road.ROADLeastRelevantFirstAverage()(x, cams, targets, network)[0]))
            out["road_combined"].append(float(road.ROADCombined()(x, cams, targets, network)[0]))
    np.savez_compressed(HERE / "evaluate_references.npz", images=images.astype(np.uint8), maps=maps,
                        classes=np.array(classes))
    versions = {name: version(name) for name in ("torch", "grad-cam", "torchcam", "scipy")}
    (HERE / "evaluate_references.json").write_text(json.dumps(
        {"versions": versions, "steps": STEPS, "size": SIZE, **out}, indent=1) + "\n")
    print(json.dumps({k: np.round(v, 4).tolist() for k, v in out.items() if "curve" not in k}))


if __name__ == "__main__":
    main()
