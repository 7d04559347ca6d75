"""`python -m benchmarks.torch_vit`: vision transformers through the ONNX import with `--layer auto` and no
reshape_transform (issue #26), against torch autograd and pytorch-grad-cam with its documented ViT
reshape_transform at the same tensor (the last block's attention input: `blocks[-1].norm1` and its
equivalents; torchvision swin_t at its third stage's output, given with --layer, NHWC).

Needs the scratch venv of benchmarks/torch_compare.py plus timm and transformers. For each model (random
weights after `torch.manual_seed(0)`, `.eval()`; a Linear layer initialised to all zeros, torchvision ViT's
head, re-drawn from N(0, 0.02): with it every gradient is 0 and any comparison passes): export (legacy
exporter, opset 17, dynamic batch), import as a subprocess (time, peak RSS), then on 4 images (224x224,
skimage.data):

- feature maps (the patch tokens as [N, h, w, C]) and token gradients of torch's top class against torch
  autograd at the torch module, ||a - b|| / ||b||; a row whose gradients are all 0 FAILS;
- Grad-CAM, Grad-CAM++, LayerCAM, XGrad-CAM, HiResCAM and Eigen-CAM: the runtime's methods on the
  imported model's outputs against pytorch-grad-cam's classes on the torch model, both through
  pytorch-grad-cam's `scale_cam_image`; Pearson r, worst image (target >= 0.999);
- batch-8 latency in onnxruntime of the onnxcam model (probabilities, explained_class, cam: the runtime's
  default) against the original ONNX, median of --repeats alternating runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.torch_compare import (MEAN, STD, export_onnx, images, import_onnx, missing, pearson,
                                      redraw_zero_linears, relative, torch_reference)

METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM", "xgradcam": "XGradCAM",
           "hirescam": "HiResCAM", "eigencam": "EigenCAM"}
COLUMNS = ("model", "layer (h x w x c)", "extra tokens", "feature maps err", "token grads err",
           *[f"{method} r" for method in METHODS], "import s", "import peak GiB", "onnxcam ms (b8)", "original ms (b8)",
           "ratio", "verdict")
BATCH = 8


def build(name: str):
    """(model, the torch module whose output `--layer auto` should pick)."""
    import torch

    torch.manual_seed(0)
    if name == "torchvision:swin_t@stage3":  # an NHWC stage output, named with --layer (see onnx_layer)
        import torchvision

        model = torchvision.models.swin_t(weights=None)
        return model, model.features[5]
    if name == "torchvision:vit_b_16":
        import torchvision

        model = torchvision.models.vit_b_16(weights=None)
        return model, model.encoder.layers[-1].ln_1
    if name == "hf:ViTForImageClassification":
        from transformers import ViTConfig, ViTForImageClassification

        config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                           image_size=224, patch_size=16, num_labels=1000)

        class Logits(torch.nn.Module):  # the logits tensor, not a ModelOutput
            def __init__(self):
                super().__init__()
                self.inner = ViTForImageClassification(config)

            def forward(self, x):
                return self.inner(pixel_values=x).logits

        model = Logits()
        norms = [module for name, module in model.named_modules() if name.endswith("layernorm_before")]
        return model, norms[-1]  # transformers 5: vit.layers[-1]; 4: vit.encoder.layer[-1]
    import timm

    options = {"img_size": 224} if "dinov2" in name else {}
    model = timm.create_model(name.removeprefix("timm:"), pretrained=False, **options)
    return model, model.blocks[-1].norm1


def onnx_layer(name: str, source: Path) -> str:
    """`--layer`: auto, or for Swin's third stage the last tensor the legacy exporter names under it."""
    import onnx

    if "@stage3" not in name:
        return "auto"
    nodes = [node for node in onnx.load(str(source), load_external_data=False).graph.node
             if node.name.startswith("/features/features.5/")]
    return nodes[-1].output[0]


def torch_maps(model, module, batch, top, extra: int, grid: tuple[int, int]):
    """{method: pytorch-grad-cam's maps}, with its ViT reshape_transform (extra tokens dropped)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def reshape_transform(tensor):
        if tensor.dim() == 4:  # Swin's NHWC stages
            return tensor.permute(0, 3, 1, 2)
        result = tensor[:, extra:, :].reshape(tensor.size(0), grid[0], grid[1], tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    maps = {}
    for method, cls in METHODS.items():
        with getattr(pytorch_grad_cam, cls)(model=model, target_layers=[module], reshape_transform=reshape_transform) as cam:
            maps[method] = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in top])
    return maps


def our_maps(outputs: dict, size: int):
    """{method: the runtime's maps from the imported model's outputs, through scale_cam_image}."""
    import numpy as np
    from pytorch_grad_cam.utils.image import scale_cam_image

    from runtime.methods import METHODS as RUNTIME_METHODS, LayerInputs, first_component

    layer = LayerInputs(outputs=outputs, images=None, run=None, batch_size=BATCH)
    maps = {method: scale_cam_image(scale_cam_image(RUNTIME_METHODS[method]().raw_maps(layer)[:, 0], (size, size)))
            for method in METHODS}
    flipped = np.maximum(-first_component(outputs["feature_maps"]), 0)  # the other sign of the SVD
    return maps | {"eigencam flipped": scale_cam_image(scale_cam_image(flipped, (size, size)))}


def measure(name: str, folder: Path, pixels, repeats: int) -> dict[str, str]:
    import numpy as np
    import onnxruntime
    import torch

    from benchmarks.timing import Budget, interleaved

    model, module = build(name)
    redrawn = redraw_zero_linears(model)
    model.eval()
    source, imported = folder / "model.onnx", folder / "model_gradcam.onnx"
    try:
        export_onnx(model, source, "legacy")
    except Exception as error:
        return {"model": name, "verdict": f"not exported: {' '.join(str(error).split())[:160]}"}
    code, out, err, seconds, peak = import_onnx(source, imported, layer=onnx_layer(name, source))
    row = {"model": name + (f" (zero {', '.join(redrawn)} re-drawn)" if redrawn else ""), "import s": f"{seconds:.1f}",
           "import peak GiB": f"{peak:.2f}"}
    if code != 0:
        return row | {"verdict": "refused: " + (err.strip().splitlines() or ["?"])[-1][15:220]}
    raw = pixels.astype(np.float32)
    batch = torch.from_numpy(((raw / 255 - np.float32(MEAN)) / np.float32(STD)).transpose(0, 3, 1, 2).copy())
    logits, tokens, token_gradients = torch_reference(model, module, batch)
    top = torch.from_numpy(logits.argmax(1))

    session = onnxruntime.InferenceSession(str(imported), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    ours = dict(zip(names, session.run(None, {"image": raw, "class_index": top.numpy()[:, None].astype(np.int64)})))
    _, h, w, channels = ours["feature_maps"].shape
    extra = tokens.shape[1] - h * w if tokens.ndim == 3 else 0
    patches = lambda values: values[:, extra:].reshape(len(values), h, w, channels)  # noqa: E731 (NHWC as is)
    row |= {"layer (h x w x c)": f"{h}x{w}x{channels}", "extra tokens": str(extra),
            "feature maps err": f"{relative(ours['feature_maps'], patches(tokens)):.1e}",
            "token grads err": f"{relative(ours['gradients'][:, 0], patches(token_gradients)):.1e}"}
    theirs = torch_maps(model, module, batch, top.numpy(), extra, (h, w))
    mine = our_maps(ours, raw.shape[1])
    worst = {method: min(pearson(mine[method][i], theirs[method][i]) for i in range(len(raw))) for method in METHODS}
    row |= {f"{method} r": f"{r:.4f}" for method, r in worst.items()}
    signed = min(max(pearson(mine[key][i], theirs["eigencam"][i]) for key in ("eigencam", "eigencam flipped"))
                 for i in range(len(raw)))
    row["eigencam r"] += f" ({signed:.4f} with its SVD sign)"

    original = onnxruntime.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    eight = np.concatenate([raw] * (BATCH // len(raw)))
    eight_nchw = np.ascontiguousarray(np.concatenate([batch.numpy()] * (BATCH // len(raw))))
    feeds = {"image": eight, "class_index": np.full((BATCH, 1), -1, np.int64)}
    input_name, output_name = original.get_inputs()[0].name, original.get_outputs()[0].name
    times = interleaved({
        "onnxcam": lambda: session.run(["probabilities", "explained_class", "cam"], feeds),
        "original": lambda: original.run([output_name], {input_name: eight_nchw}),
    }, Budget(warmup=1, min_rounds=repeats, min_seconds=0.0, max_rounds=repeats))
    ratio = statistics.median(a / b for a, b in zip(times["onnxcam"], times["original"]))
    below = [f"{method} {r:.4f}" for method, r in (worst | {"eigencam": signed}).items() if r < 0.999]
    gradient_error = relative(ours["gradients"][:, 0], patches(token_gradients))
    if not np.any(ours["gradients"]):
        verdict = "FAIL: gradients all 0"
    elif below or gradient_error > 1e-5:
        verdict = "differs: " + ", ".join(below + ([f"token grads {gradient_error:.1e}"] if gradient_error > 1e-5 else []))
    else:
        verdict = "equal (Eigen-CAM up to its SVD sign)"
    for path in folder.iterdir():
        path.unlink()
    return row | {"onnxcam ms (b8)": f"{statistics.median(times['onnxcam']) * 1e3:.0f}",
                  "original ms (b8)": f"{statistics.median(times['original']) * 1e3:.0f}", "ratio": f"{ratio:.2f}",
                  "verdict": verdict}


MODELS = ("timm:vit_tiny_patch16_224", "timm:deit_tiny_distilled_patch16_224", "torchvision:vit_b_16",
          "timm:vit_small_patch14_reg4_dinov2", "hf:ViTForImageClassification", "torchvision:swin_t@stage3",
          "timm:beit_base_patch16_224")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_vit", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds of each model at batch 8 (default 10)")
    parser.add_argument("--output", help="also write the table with a header to this .md file")
    args = parser.parse_args(argv)
    absent = missing() + [package for package in ("timm", "transformers") if not _has(package)]
    if absent:
        print(f"benchmarks.torch_vit: needs {', '.join(absent)}: set up the venv of benchmarks/torch_compare.py",
              file=sys.stderr)
        return 1
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(os.cpu_count() or 1)
    pixels, where = images(4)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    print("\n".join(lines), flush=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            try:
                values = measure(name, Path(folder), pixels, args.repeats)
            except Exception as error:  # the comparison itself broke: say where, keep going
                values = {"model": name, "verdict": f"comparison failed: {type(error).__name__}: "
                                                    f"{' '.join(str(error).split())[:160]}"}
            lines.append("| " + " | ".join(values.get(column, "") for column in COLUMNS) + " |")
            print(lines[-1], flush=True)
    if args.output:
        header = (f"# Vision transformers through the ONNX import (issue #26)\n\n`python -m benchmarks.torch_vit`, "
                  f"{started}, {os.cpu_count()} shared cores, {_versions()}; 4 images ({where}) at 224x224.\n\n")
        Path(args.output).write_text(header + "\n".join(lines) + "\n")
    return 0


def _has(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def _versions() -> str:
    from importlib import metadata

    names = ("torch", "torchvision", "timm", "transformers", "grad-cam", "onnxruntime")
    return ", ".join(f"{name} {metadata.version(name)}" for name in names)


if __name__ == "__main__":
    raise SystemExit(main())
