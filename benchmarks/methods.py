"""`python -m benchmarks.methods`: every CAM method's time per image against Grad-CAM's, and its
agreement (Pearson r) with pytorch-grad-cam 1.5.7 / torchcam 0.5.0 on the same weights.

    python -m benchmarks.methods                    # the test fixture's tiny CNN (seconds)
    python -m benchmarks.methods --model X.onnx     # timings on any onnxcam file (no agreement)

The default model is tests/torch_fixtures/methods_tiny_cnn.onnx (64x64 input, a 16x16x32 layer)
imported at its pooled layer; the references are the fixtures' (make_methods_fixtures.py). Times:
the best of --repeats runs of --images random images in one batch, per image; score methods re-run
the model for at most 256 channels (SS-CAM 35 times over). Exit 0 when every method ran.
"""

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import numpy as np

from runtime import Explainer
from runtime.errors import UsageError
from runtime.methods import METHODS, SsCam

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "torch_fixtures"
NAME = "methods_tiny_cnn"
LAYERS = {"inner": "/model/features/features.1/features.1.2/Mul_output_0", "pooled": "auto"}
# onnxcam method -> the reference's map in the fixtures (L_<key> or sharp_L_<key>) and its library
REFERENCES = {
    "gradcam": "pytorch-grad-cam GradCAM", "gradcam++": "pytorch-grad-cam GradCAMPlusPlus",
    "xgradcam": None, "hirescam": None, "layercam": None,
    "eigencam": "pytorch-grad-cam EigenCAM", "scorecam": "pytorch-grad-cam ScoreCAM",
    "cam": "torchcam CAM", "gradcamelementwise": "pytorch-grad-cam GradCAMElementWise",
    "eigengradcam": "pytorch-grad-cam EigenGradCAM", "kpcacam": "pytorch-grad-cam KPCA_CAM",
    "fem": "pytorch-grad-cam FEM", "finercam": "torchcam FinerCAM", "ablationcam": "pytorch-grad-cam AblationCAM",
    "sscam": "torchcam SSCAM", "iscam": "torchcam ISCAM", "smoothgradcam++": "torchcam SmoothGradCAMpp",
}
SHARP = {"scorecam", "sscam", "iscam"}  # compared on the fixture whose head is 10x sharper
SIGNED = {"eigencam", "eigengradcam", "kpcacam"}  # the references keep an arbitrary sign
SLOW = ("sscam", "iscam")  # samples x channels runs of the model per image: left out of python -m benchmarks


def imported(model: str, layer: str, folder: str) -> str:
    from export.onnx_import.cli import main as import_model

    output = f"{folder}/{model}_{layer.replace('/', '_')}.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        if import_model(["--model", str(FIXTURES / f"{model}.onnx"), "--preprocessing", "none", "--layer", layer,
                         "--output", output]) != 0:
            raise RuntimeError(f"cannot import {model} at {layer}")
    return output


def time_per_image(explainer: Explainer, images: list[np.ndarray], repeats: int) -> float | None:
    """Seconds per image, the best of `repeats` batches; None where the method refuses the model."""
    best = float("inf")
    for _ in range(repeats):
        start = perf_counter()
        try:
            explainer.explain(images)
        except UsageError:
            return None
        best = min(best, perf_counter() - start)
    return best / len(images)


def timings(model: str, image_count: int, repeats: int, skip: tuple[str, ...] = ()) -> dict[str, float | None]:
    """Seconds per image of each method but `skip` (None: refused by the model)."""
    rng = np.random.default_rng(0)
    explainer = Explainer(model, device="cpu", batch_size=image_count)
    height, width = explainer.card.input_size
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(image_count)]
    return {name: time_per_image(explainer.with_method(name), images, repeats) for name in METHODS if name not in skip}


def table(seconds: dict[str, float | None]) -> str:
    """Markdown: ms per image and the ratio to Grad-CAM's."""
    rows = ["| method | ms per image | x Grad-CAM |", "|---|---|---|"]
    for name, value in seconds.items():
        rows.append(f"| {name} | refused by this model | |" if value is None else
                    f"| {name} | {value * 1e3:.2f} | {value / seconds['gradcam']:.1f} |")
    return "\n".join(rows)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def agreement(folder: str) -> dict[str, dict[str, list[float]]]:
    """Per method and layer, Pearson r with the reference for each fixture image (eigen-type
    methods: under onnxcam's sign, i.e. the reference's projection times -1 where it disagrees)."""
    references = dict(np.load(FIXTURES / f"{NAME}.npz"))
    found: dict[str, dict[str, list[float]]] = {}
    for layer, tensor in LAYERS.items():
        key_layer = "inner" if layer == "inner" else "last"
        plain = Explainer(imported(NAME, tensor, folder), device="cpu")
        sharp = Explainer(imported(f"{NAME}_sharp", tensor, folder), device="cpu")
        for method, library in REFERENCES.items():
            if library is None:
                continue
            explainer, prefix, top = (sharp, "sharp_", references["sharp_top"]) if method in SHARP else (
                plain, "", references["top"])
            theirs = references[f"{prefix}{key_layer}_{method}"]
            if method in SIGNED:
                theirs = signed_to_agree(references[f"{key_layer}_{method}_projection"], references, key_layer, method)
            try:
                ours = [explainer.with_method(method).explain(image, class_index=int(c)).maps[0].cam
                        for image, c in zip(references["images"], top, strict=True)]
            except UsageError:
                continue
            found.setdefault(method, {})[layer] = [pearson(m, np.maximum(t, 0)) for m, t in zip(ours, theirs, strict=True)]
    return found


def signed_to_agree(projections: np.ndarray, references: dict, layer: str, method: str) -> np.ndarray:
    """The projections [N, h, w] signed as onnxcam signs them: agreeing with the magnitude of what
    was decomposed (the activations, or gradients x activations for Eigen-Grad-CAM)."""
    values = references[f"{layer}_features"]
    if method == "eigengradcam":
        values = values * references[f"{layer}_gradients"]
    magnitude = np.abs(values).sum(axis=1)
    signs = np.where((projections * magnitude).sum(axis=(1, 2)) >= 0, 1, -1)
    return projections * signs[:, None, None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.methods", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an onnxcam .onnx to time (default: the fixture's tiny CNN)")
    parser.add_argument("--images", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="batches timed per method (default 3)")
    parser.add_argument("--sscam-samples", type=int, default=SsCam.samples, help="SS-CAM's samples (default 35)")
    args = parser.parse_args(argv)
    if min(args.images, args.repeats, args.sscam_samples) < 1:
        print("benchmarks.methods: --images, --repeats and --sscam-samples must be at least 1", file=sys.stderr)
        return 2
    SsCam.samples = args.sscam_samples
    with tempfile.TemporaryDirectory(prefix="onnxcam-methods-") as folder:
        model = args.model or imported(NAME, LAYERS["pooled"], folder)
        seconds = timings(model, args.images, args.repeats)
        print(f"{model if args.model else NAME + ' (pooled layer)'}: {args.images} images per batch, best of {args.repeats}")
        print(table(seconds))
        if not args.model:
            print("\n| method | reference | r inner layer (4 images) | r pooled layer |\n|---|---|---|---|")
            for method, per_layer in agreement(folder).items():
                cells = [f"{min(per_layer[layer]):.4f}-{max(per_layer[layer]):.4f}" if layer in per_layer
                         else "refused" for layer in LAYERS]
                print(f"| {method} | {REFERENCES[method]} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
