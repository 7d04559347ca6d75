"""`python -m benchmarks.torch_zoo`: how many of the classifiers PyTorch users deploy the ONNX import
takes, with no workaround: torchvision and timm models (random weights, `torch.manual_seed(0)`,
`.eval()`) exported by `torch.onnx.export` (legacy exporter, opset 17, dynamic batch; --batch fixed:
batch 1, no dynamic axes), then `python -m export.build --model X.onnx --preprocessing torch` with
`--layer auto`. A Linear layer initialised to all zeros (torchvision vit_b_16's head) is re-drawn from
N(0, 0.02) first: with it every gradient is 0, and the import refuses a model whose gradients are all 0.
Each row: the exit, the tensor picked, the head, the self-check's worst figure, import time and peak RSS
(VmHWM). The gradients are checked by the import's own self-check against
finite differences of the original model; benchmarks/torch_compare.py compares with torch itself.

Needs the scratch venv of benchmarks/torch_compare.py, plus `pip install timm`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.torch_compare import import_onnx, missing, redraw_zero_linears

TORCHVISION = ("alexnet", "googlenet", "inception_v3", "mnasnet0_5", "mobilenet_v2", "regnet_x_400mf",
               "resnext50_32x4d", "squeezenet1_1", "shufflenet_v2_x1_0", "efficientnet_v2_s", "swin_t",
               "maxvit_t", "vit_b_16")
TIMM = ("resnet50d", "efficientnet_b0", "mobilenetv3_large_100", "convnext_nano", "regnety_008", "rexnet_100",
        "ghostnet_100", "cspdarknet53", "dla34", "repvgg_a2", "nf_resnet26", "hrnet_w18_small", "mobilevit_xs",
        "efficientformer_l1", "lcnet_050", "tf_efficientnet_b0", "inception_v4", "xception41", "dpn68",
        "res2net50_26w_4s", "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "levit_128s",
        "vit_small_r26_s32_224")
COLUMNS = ("model", "import", "layer (h x w x c)", "head", "self-check worst", "import s", "peak GiB")


def build(source: str, name: str):
    """(the model in eval mode, its input size)."""
    import torch

    torch.manual_seed(0)
    if source == "timm":
        import timm

        model = timm.create_model(name, pretrained=False)
        redraw_zero_linears(model)
        return model.eval(), model.default_cfg["input_size"][1]
    import torchvision

    options = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(weights=None, **options)
    redraw_zero_linears(model)  # vit_b_16's head is zeros: every gradient 0 (the import refuses that)
    return model.eval(), 299 if name == "inception_v3" else 224


def row(source: str, name: str, folder: Path, fixed_batch: bool) -> dict[str, str]:
    import torch

    label = f"{source} {name}"
    try:
        model, size = build(source, name)
        path = folder / f"{name}.onnx"
        dynamic = {} if fixed_batch else {"dynamic_axes": {"input": {0: "N"}, "logits": {0: "N"}}}
        torch.onnx.export(model, (torch.zeros(1 if fixed_batch else 2, 3, size, size),), str(path), opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["logits"], **dynamic)
    except Exception as error:
        return {"model": label, "import": f"not exported: {' '.join(str(error).split())[:120]}"}
    code, out, err, seconds, peak = import_onnx(path, folder / f"{name}_gradcam.onnx")
    for file in folder.iterdir():
        file.unlink()
    layer = re.search(r"layer: \S+ \((\d+x\d+x\d+)\)", out)
    head = re.search(r"head: (.+), score", out)
    worst = re.search(r"worst (\w+) (\S+) relative", out)
    kind = "" if head is None else (
        "exact GAP+linear" if head.group(1).startswith("global average pooling") else
        f"autodiff: {' -> '.join(dict.fromkeys(head.group(1).removesuffix(' (reverse-mode autodiff)').split(' -> ')))}")
    result = "imported" if code == 0 else f"refused: {(err.strip().splitlines() or ['?'])[-1][15:200]}"
    return {"model": label, "import": result, "layer (h x w x c)": layer.group(1) if layer else "",
            "head": kind[:140], "self-check worst": f"{worst.group(1)} {worst.group(2)}" if worst else "",
            "import s": f"{seconds:.1f}", "peak GiB": f"{peak:.2f}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated subset, as torchvision:NAME or timm:NAME")
    parser.add_argument("--batch", choices=["dynamic", "fixed"], default="dynamic")
    parser.add_argument("--output", help="also write the table with a header to this .md file")
    args = parser.parse_args(argv)
    absent = missing() + ([] if _has("timm") else ["timm"])
    if absent:
        print(f"benchmarks.torch_zoo: needs {', '.join(absent)}: set up the venv of benchmarks/torch_compare.py",
              file=sys.stderr)
        return 1
    import warnings

    warnings.filterwarnings("ignore")
    models = ([tuple(item.split(":", 1)) for item in args.models.split(",")] if args.models else
              [("torchvision", name) for name in TORCHVISION] + [("timm", name) for name in TIMM])
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    print("\n".join(lines), flush=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as folder:
        for source, name in models:
            values = row(source, name, Path(folder), args.batch == "fixed")
            lines.append("| " + " | ".join(values.get(column, "") for column in COLUMNS) + " |")
            print(lines[-1], flush=True)
    imported = sum("| imported |" in line for line in lines)
    summary = f"\n{imported} of {len(models)} imported."
    print(summary)
    if args.output:
        header = (f"# The ONNX import on torchvision and timm classifiers\n\n`python -m benchmarks.torch_zoo "
                  f"--batch {args.batch}`, {started}, {_versions()}.\n\n")
        Path(args.output).write_text(header + "\n".join(lines) + "\n" + summary + "\n")
    return 0


def _has(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def _versions() -> str:
    from importlib import metadata

    names = ("torch", "torchvision", "timm", "onnx", "onnxruntime")
    return ", ".join(f"{name} {metadata.version(name)}" for name in names)


if __name__ == "__main__":
    raise SystemExit(main())
