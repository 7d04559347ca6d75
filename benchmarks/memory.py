"""The CLI's peak memory on large photos (issue #10).

python -m benchmarks.memory [--model PATH | --fake] [--photos 8] [--settings NAME ...] [--runtime-from DIR]

Writes `--photos` JPEGs of 7360x4912 (36 Mpx, under the default --max-pixels of 40 M): skimage's
chelsea photo upscaled, with a little noise so that no two are equal. Then runs
`python -m runtime PHOTOS --model PATH --out OUT` once per setting, each in a whole process of its
own, and reports its peak RSS (the kernel's VmHWM, see benchmarks/process.py) and wall time. The
model is models/resnet50_gradcam.onnx by default, written by
  python -m export.build --weights none
(the ResNet50 figure is the one that counts); --fake uses the tiny test model of
tests/fake_model.py instead, to measure without TensorFlow. --runtime-from DIR runs DIR/runtime
(e.g. an older commit's copy) instead of this checkout's. Prints a table; exits 0.
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.process import run_measured

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "resnet50_gradcam.onnx"
PHOTO_SIZE = (7360, 4912)  # width, height: 36.2 Mpx
NOISE = 6  # standard deviation of the added noise, in 0..255 levels
CLI_SETTINGS = {  # name: extra arguments to python -m runtime
    "default settings": [],
    "--heatmaps low": ["--heatmaps", "low"],
    "--batch-size 1": ["--batch-size", "1"],
}
TARGETS_MIB = {"default settings": 1536}


def write_photos(folder: Path, count: int) -> None:
    """`count` JPEGs of PHOTO_SIZE: chelsea upscaled bicubically, plus noise of its own each."""
    import skimage.data

    upscaled = cv2.resize(skimage.data.chelsea(), PHOTO_SIZE, interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    for index in range(count):
        noise = rng.normal(0, NOISE, upscaled.shape).astype(np.int16)
        photo = np.clip(upscaled + noise, 0, 255).astype(np.uint8)
        Image.fromarray(photo).save(folder / f"photo{index:02d}.jpg", quality=90)
        del noise, photo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="the onnxcam .onnx file")
    parser.add_argument("--fake", action="store_true", help="use the tiny test model (no TensorFlow needed)")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--settings", nargs="+", choices=CLI_SETTINGS, default=list(CLI_SETTINGS), metavar="NAME")
    parser.add_argument("--runtime-from", help="run the CLI from this folder's runtime/ (e.g. an older commit)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memory-") as scratch:
        model = args.model
        if args.fake:
            sys.path.insert(0, str(ROOT))
            from tests.fake_model import write_fake_model

            model = str(write_fake_model(Path(scratch) / "fake.onnx"))
        elif not os.path.isfile(model):
            print(f"memory: {model} not found; write it with `python -m export.build --weights none`, "
                  "or measure with the tiny test model: python -m benchmarks.memory --fake")
            return 0
        photos = Path(scratch) / "photos"
        photos.mkdir()
        write_photos(photos, args.photos)
        runtime_from = os.path.abspath(args.runtime_from or ROOT)
        env = os.environ | {"PYTHONPATH": runtime_from}
        rows = []
        for name in args.settings:
            out = Path(scratch) / "out"
            # -P: runtime/ comes from PYTHONPATH, not from the current folder
            command = [sys.executable, "-P", "-m", "runtime", str(photos), "--model", model, "--out", str(out),
                       *CLI_SETTINGS[name]]
            finished = run_measured(command, env)
            shutil.rmtree(out, ignore_errors=True)
            if finished.returncode != 0:
                print(f"memory: {name}: {finished.last_error_line()}")
            rows.append((name, finished))
    which = "tiny test model (--fake)" if args.fake else os.path.basename(model)
    print(f"{args.photos} JPEGs of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, {which}, {os.cpu_count()} CPUs")
    print(f"| {'python -m runtime':<20} | peak RSS MiB | wall s | target MiB |")
    print(f"| {'-' * 20} | ------------ | ------ | ---------- |")
    for name, finished in rows:
        target = f"≤ {TARGETS_MIB[name]}" if name in TARGETS_MIB else ""
        failed = "" if finished.returncode == 0 else f" (exit {finished.returncode})"
        print(f"| {name:<20} | {finished.peak_rss_mb:12.0f} | {finished.seconds:6.1f} | {target:>10} |{failed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
