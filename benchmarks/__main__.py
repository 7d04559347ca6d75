"""`python -m benchmarks`: onnxcam against plain classification and the TensorFlow recipe, measured
in one run on this machine (offline).

    python -m benchmarks                 # full CPU run (about 5 minutes on 2 cores)
    python -m benchmarks --quick         # fewer repetitions and batch sizes: under 5 minutes
    python -m benchmarks --device cuda   # on a GPU, with onnxruntime-gpu (TensorFlow optional)

Prints the tables, writes the figures as JSON (benchmarks/results.json, or results-cuda.json for
cuda; --json PATH) and rewrites this device's section of BENCHMARKS.md (--markdown PATH). The
models are models/resnet50_gradcam.onnx and models/resnet50_plain.onnx (--models DIR), reused
when the runtime can open them, else exported with random weights (needs TensorFlow). Rows that
need TensorFlow (the recipe, its cold start, export, install footprint) are skipped with a note
where it is not installed. Exit codes: 0 every row measured, 1 a row failed (the tables say
which; the others are written), 2 the run could not start.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Callable
from time import perf_counter
from typing import Any

import onnxruntime as ort

from benchmarks import cli_speed, cold_start, machine, methods, models, report
from benchmarks.onnx_runs import CPU_VARIANTS, CUDA_VARIANTS
from benchmarks.process import run_measured
from benchmarks.timing import FULL, QUICK, Budget
from runtime.errors import UsageError
from runtime.session import choose_providers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCHES = {  # (device, quick) -> onnxruntime batch sizes
    ("cpu", False): [1, 8, 32], ("cpu", True): [1, 8], ("cuda", False): [1, 32, 128], ("cuda", True): [1, 32, 128],
}
TF_BATCHES = [1, 8]
CLI_PHOTOS = 32
CLI_RUNS, CLI_RUNS_QUICK = 5, 3  # alternated whole-process runs of each command
NO_TF = "skipped: TensorFlow is not installed here"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and batch sizes (under 5 minutes)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="onnxruntime device (default cpu)")
    parser.add_argument("--models", default=os.path.join(ROOT, "models"), help="folder of the two .onnx files")
    parser.add_argument("--json", help="where to write the figures (default benchmarks/results[-cuda].json)")
    parser.add_argument("--markdown", default=os.path.join(ROOT, "BENCHMARKS.md"), help="the Markdown to update")
    return parser.parse_args(argv)


def progress(message: str, started: float) -> None:
    print(f"[{perf_counter() - started:5.0f} s] {message}", file=sys.stderr, flush=True)


def run_worker(spec: dict[str, Any], work: str) -> dict[str, Any]:
    """Run one measurement (benchmarks/worker.py) in a fresh process; its result."""
    name = f"{spec['kind']}-{spec.get('variant', 'all')}"
    spec = {**spec, "result": os.path.join(work, f"{name}.result.json")}
    spec_path = os.path.join(work, f"{name}.spec.json")
    with open(spec_path, "w") as file:
        json.dump(spec, file)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    finished = run_measured([sys.executable, "-m", "benchmarks.worker", spec_path], env=env)
    if finished.returncode != 0:
        raise RuntimeError(finished.last_error_line())
    with open(spec["result"]) as file:
        return json.load(file)


class Run:
    """One benchmark run: each step fills `results`; a failed step leaves a note instead."""

    def __init__(self, args: argparse.Namespace, work: str):
        self.args = args
        self.work = work
        self.started = perf_counter()
        self.budget: Budget = QUICK if args.quick else FULL
        self.has_tf = importlib.util.find_spec("tensorflow") is not None
        self.results: dict[str, Any] = {
            "device": args.device,
            "quick": args.quick,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine.describe(args.device),
            "batches": BATCHES[args.device, args.quick],
            "tf_batches": TF_BATCHES if self.has_tf else [],
            "budget": self.budget.to_json(),
            "latency": {},
            "peak_rss_mb": {},
            "notes": {},
        }
        self.models: models.Models | None = None

    def step(self, row: str, action: Callable[[], None]) -> None:
        """Run one step; on failure record '<row>: failed: <reason>'."""
        progress(row, self.started)
        try:
            action()
        except Exception as error:  # a measurement that fails must not lose the others
            self.results["notes"][row] = f"failed: {' '.join(str(error).split())[:300]}"

    def prepare_models(self) -> None:
        """Reuse the models when valid; else export them into --models (and keep the figures)."""
        gradcam = os.path.join(self.args.models, models.GRADCAM_NAME)
        plain = os.path.join(self.args.models, models.PLAIN_NAME)
        exported = False
        try:
            self.models = models.check(gradcam, plain)
        except Exception as error:
            if not self.has_tf:
                raise RuntimeError(f"no usable models in {self.args.models} ({error}), "
                                   "and no TensorFlow here to export them") from None
            progress(f"models not usable ({' '.join(str(error).split())[:200]}): exporting", self.started)
            self.results["export"] = models.export(self.args.models)
            try:
                self.models = models.check(gradcam, plain)
            except Exception as error:
                raise RuntimeError(f"the exported models are not usable either ({error})") from None
            exported = True
        self.results["models"] = {
            "gradcam": os.path.relpath(gradcam, ROOT), "plain": os.path.relpath(plain, ROOT),
            "weights": self.models.weights, "exported_in_this_run": exported,
        }

    def onnx_latency(self) -> None:
        variants = CUDA_VARIANTS if self.args.device == "cuda" else CPU_VARIANTS
        self.results["latency"].update(run_worker({
            "kind": "onnx_latency", "device": self.args.device, "gradcam": self.models.gradcam,
            "plain": self.models.plain, "variants": list(variants), "batches": self.results["batches"],
            "budget": self.budget.to_json(),
        }, self.work))

    def onnx_peak_rss(self) -> None:
        for variant in CPU_VARIANTS:
            self.results["peak_rss_mb"][variant] = run_worker({
                "kind": "onnx_rss", "device": self.args.device, "gradcam": self.models.gradcam,
                "plain": self.models.plain, "variant": variant, "batches": self.results["batches"],
            }, self.work)

    def tf_latency(self) -> None:
        same_network = self.models.weights == models.RANDOM_WEIGHTS
        tf = run_worker({
            "kind": "tf_latency", "batches": TF_BATCHES, "budget": self.budget.to_json(),
            "save_weights": self.weights_file(), "compare_with": self.models.gradcam if same_network else None,
        }, self.work)
        self.results["latency"].update(tf.pop("latency"))
        self.results["tf"] = tf

    def weights_file(self) -> str:
        return os.path.join(self.work, "resnet50_random.weights.h5")

    def cold_start(self) -> None:
        figures = self.results.setdefault("cold_start", {})
        command = cold_start.runtime_command(self.models.gradcam, self.args.device)
        figures["runtime"] = cold_start.measure(command, os.path.join(self.work, "cold-runtime"))
        if not self.has_tf:
            self.results["notes"]["cold start, TF recipe script"] = NO_TF
        elif not os.path.exists(self.weights_file()):
            self.results["notes"]["cold start, TF recipe script"] = "not measured: the TF row failed"
        else:
            command = cold_start.tf_command(self.weights_file())
            figures["tf_recipe"] = cold_start.measure(command, os.path.join(self.work, "cold-tf"))

    def export(self) -> None:
        """Measure an export (into a scratch folder) unless this run already exported the models."""
        if "export" not in self.results:
            self.results["export"] = models.export(os.path.join(self.work, "export"))

    def footprint(self) -> None:
        from benchmarks import footprint

        self.results["footprint"] = footprint.measure()

    def cli_end_to_end(self) -> None:
        """python -m runtime on photos, whole processes, against plain classification (CPU)."""
        runs = CLI_RUNS_QUICK if self.args.quick else CLI_RUNS
        seconds = cli_speed.measure(self.models.gradcam, self.models.plain, CLI_PHOTOS, runs)
        self.results["cli"] = {"photos": CLI_PHOTOS, "batch": cli_speed.BATCH_SIZE, "runs": runs, "seconds": seconds}

    def cam_methods(self) -> None:
        """Each CAM method's time per image against Grad-CAM's, on one image (not SS-CAM and IS-CAM:
        thousands of ResNet50 runs per image; python -m benchmarks.methods --model times them)."""
        self.results["methods_seconds"] = methods.timings(self.models.gradcam, 1, 2, skip=methods.SLOW)

    def execute(self) -> None:
        self.step("ONNX latency", self.onnx_latency)
        if self.args.device == "cpu":
            self.step("CAM methods", self.cam_methods)
        self.step("ONNX peak RSS", self.onnx_peak_rss)
        if self.args.device == "cpu":
            self.step("CLI end to end", self.cli_end_to_end)
        if self.has_tf:
            self.step("TensorFlow recipe", self.tf_latency)
        self.step("cold start", self.cold_start)
        if self.has_tf:
            self.step("export", self.export)
            self.step("install footprint", self.footprint)
        else:
            for row in ("TensorFlow recipe", "export", "install footprint"):
                self.results["notes"][row] = NO_TF
        self.results["seconds"] = perf_counter() - self.started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        choose_providers(args.device, ort.get_available_providers())
    except UsageError as error:
        print(f"benchmarks: {error}", file=sys.stderr)
        return 2
    json_path = args.json or os.path.join(HERE, "results-cuda.json" if args.device == "cuda" else "results.json")
    with tempfile.TemporaryDirectory(prefix="onnxcam-benchmarks-") as work:
        run = Run(args, work)
        try:
            run.prepare_models()
        except Exception as error:
            print(f"benchmarks: cannot start: {' '.join(str(error).split())[:400]}", file=sys.stderr)
            return 2
        run.execute()
    results = run.results
    print(report.section(results, report.text_table))
    if "methods_seconds" in results:
        print(methods.table(results["methods_seconds"]))
    with open(json_path, "w") as file:
        json.dump(results, file, indent=1)
    report.write_markdown(args.markdown, results)
    print(f"wrote {os.path.relpath(json_path)} and {os.path.relpath(args.markdown)}")
    return 1 if any(note.startswith("failed") for note in results["notes"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
