"""The CLI end to end against plain classification of the same photos (issue #11).

python -m benchmarks.cli_speed [--models DIR] [--photos 32] [--runs 3]

Whole processes, alternated run by run: `python -m runtime` at its default settings (and other
settings) against a process that only decodes, resizes and classifies the same photos with the
plain ResNet50 through onnxruntime, in batches of 8. DIR holds resnet50_gradcam.onnx and
resnet50_plain.onnx, written by
  python -m export.build --weights none --output DIR/resnet50_gradcam.onnx \\
      --plain-output DIR/resnet50_plain.onnx
Prints a table of median wall times and their ratio to plain; exits 0. `python -m benchmarks`
runs the same measure() for its "CLI end to end" rows.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

GRADCAM_NAME = "resnet50_gradcam.onnx"
PLAIN_NAME = "resnet50_plain.onnx"
BATCH_SIZE = 8
CLI_SETTINGS = {  # name: extra arguments to python -m runtime
    "cli, defaults": [],  # top-3 predictions, the top class's overlay (png) and heatmap (full)
    "cli, --method gradcam,layercam": ["--method", "gradcam,layercam"],
    "cli, --overlay-format jpg": ["--overlay-format", "jpg"],
    "cli, --explain-top 3": ["--explain-top", "3"],
    "cli, --explain-top 3, jpg, low": ["--explain-top", "3", "--overlay-format", "jpg", "--heatmaps", "low"],
}
PLAIN = "plain classification"
TARGETS = {"cli, defaults": 1.2, "cli, --method gradcam,layercam": 1.3}
PLAIN_CLASSIFICATION = f"""
import sys
from pathlib import Path
import numpy as np
from runtime import contract
from runtime.images import decode_image, resize_for_model
from runtime.session import open_session

session = open_session(sys.argv[1], "cpu")
paths = sorted(Path(sys.argv[2]).iterdir())
size = tuple(session.get_inputs()[0].shape[1:3])
for start in range(0, len(paths), {BATCH_SIZE}):
    batch = np.stack([resize_for_model(decode_image(p, str(p)), size) for p in paths[start:start + {BATCH_SIZE}]])
    probabilities = session.run([contract.OUTPUT_PROBABILITIES], {{contract.INPUT_IMAGE: batch}})[0]
    print(*probabilities.argmax(axis=1))
"""


def sample_photos() -> list[np.ndarray]:
    """skimage's colour sample photos (300x451 to 512x512), HxWx3 uint8 RGB."""
    import skimage.data

    return [skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket()]


def write_photos(folder: Path, count: int) -> None:
    """`count` JPEGs cycling through the sample photos, each shifted so that no two are equal."""
    photos = sample_photos()
    for index in range(count):
        photo = np.roll(photos[index % len(photos)], 5 * index, axis=1)
        Image.fromarray(photo).save(folder / f"photo{index:03d}.jpg", quality=92)


def timed(command: list[str], env: dict[str, str], folder: str) -> float:
    """Wall seconds of one whole process run in `folder`; raises RuntimeError with its last
    line if it fails."""
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}...: {(finished.stderr.strip().splitlines() or ['?'])[-1]}")
    return seconds


def measure(
    gradcam: str, plain: str, photos: int = 32, runs: int = 3, settings: Sequence[str] = tuple(CLI_SETTINGS),
    runtime_from: str | None = None,
) -> dict[str, list[float]]:
    """Wall seconds of each run: plain classification, then the CLI at each setting, alternated
    run by run (each run times every command once, so a change in load hits them alike)."""
    repo = str(Path(__file__).resolve().parents[1])
    plain_env = os.environ | {"PYTHONPATH": repo}
    cli_folder = os.path.abspath(runtime_from or repo)  # python -m runtime finds runtime/ here first
    cli_env = os.environ | {"PYTHONPATH": os.pathsep.join([cli_folder, repo])}
    with tempfile.TemporaryDirectory(prefix="cli_speed-") as scratch:
        folder = Path(scratch) / "photos"
        folder.mkdir()
        write_photos(folder, photos)
        commands = {PLAIN: ([sys.executable, "-c", PLAIN_CLASSIFICATION, plain, str(folder)], plain_env, repo)}
        for name in settings:
            out = os.path.join(scratch, f"out{len(commands)}")
            cli = [sys.executable, "-m", "runtime", str(folder), "--model", gradcam, "--out", out, "--device", "cpu"]
            commands[name] = ([*cli, "--batch-size", str(BATCH_SIZE), *CLI_SETTINGS[name]], cli_env, cli_folder)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, (command, env, cwd) in commands.items():
                times[name].append(timed(command, env, cwd))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="models", help="folder of the two .onnx files (default: models)")
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runtime-from", help="run the CLI from this folder's runtime/ (e.g. an older commit)")
    parser.add_argument("--settings", nargs="+", choices=CLI_SETTINGS, default=list(CLI_SETTINGS), metavar="NAME")
    args = parser.parse_args(argv)
    gradcam, plain = os.path.join(args.models, GRADCAM_NAME), os.path.join(args.models, PLAIN_NAME)
    if not (os.path.isfile(gradcam) and os.path.isfile(plain)):
        print(f"cli_speed: {args.models} lacks {GRADCAM_NAME} or {PLAIN_NAME}; see python -m benchmarks.cli_speed -h")
        return 0
    times = measure(os.path.abspath(gradcam), os.path.abspath(plain), args.photos, args.runs, args.settings, args.runtime_from)
    plain_median = statistics.median(times[PLAIN])
    print(f"{args.photos} photos, batch {BATCH_SIZE}, median of {args.runs} alternated runs, {os.cpu_count()} CPUs")
    print(f"| {'what':<34} | wall s | × plain | target |")
    print(f"| {'-' * 34} | ------ | ------- | ------ |")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        target = f"≤ {TARGETS[name]}" if name in TARGETS else ""
        print(f"| {name:<34} | {median:6.2f} | {median / plain_median:7.2f} | {target:>6} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
