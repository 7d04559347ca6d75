"""The Ray Data pipeline: groups of paths -> an actor pool of Explainers -> one Parquet shard per group.

Each group of `batch_size` inputs is one row of the dataset and one shard, named by the run and
the group's number: a retried group (its actor killed, restarted by Ray) rewrites the same shard
name, so an input can never land in two shards. Shards are written to a hidden temporary and
moved into place: a shard appears whole or not at all."""

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from runtime import Explainer
from runtime.errors import one_line
from runtime.render import encoded_image, encoded_npy

from .sources import filesystem

RESULTS = "results"
RETRIES = 4  # restarts of a killed actor, and retries of its lost calls
PREDICTION = pa.struct([("index", pa.int64()), ("label", pa.string()), ("probability", pa.float64())])
CLASS_MAP = pa.struct([
    ("method", pa.string()), ("class_index", pa.int64()), ("label", pa.string()),
    ("peak_x", pa.int64()), ("peak_y", pa.int64()),
    ("height", pa.int64()), ("width", pa.int64()), ("cam", pa.list_(pa.float32())),
])
SCHEMA = pa.schema([
    ("path", pa.string()), ("ok", pa.bool_()), ("error", pa.string()),
    ("predictions", pa.list_(PREDICTION)), ("maps", pa.list_(CLASS_MAP)),
])


@dataclass(frozen=True)
class Settings:
    """What an actor needs to explain and write a group."""

    model: str
    device: str
    batch_size: int
    max_pixels: int
    methods: tuple[str, ...]
    top_k: int
    explain_top: int
    class_index: tuple[int, ...] | None
    output: str  # the output folder's URI
    run: int
    overlays: bool
    heatmaps: bool


def shard_name(run: int, group: int) -> str:
    return f"r{run:03d}-{group:07d}.parquet"


def read_bytes(path: str) -> bytes:
    fs, inner = filesystem(path)
    with fs.open_input_stream(inner) as stream:
        return stream.read()


def write_atomically(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """A hidden temporary beside `path` (Parquet readers skip '.' names), then moved over it."""
    folder, name = path.rsplit("/", 1)
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(temporary) as stream:
        stream.write(data)
    fs.move(temporary, path)


def failed_row(path: str, error: str) -> dict:
    return {"path": path, "ok": False, "error": error, "predictions": [], "maps": []}


class ShardExplainer:
    """One actor: one onnxruntime session; each call explains groups and writes their shards."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.explainer = Explainer(settings.model, settings.device, settings.batch_size, settings.max_pixels)
        self.fs, self.root = filesystem(settings.output)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok, failed = [], []
        for group, paths in zip(batch["group"], batch["paths"], strict=True):
            rows = self.explain_group(int(group), [str(path) for path in paths])
            table = pa.Table.from_pylist(rows, schema=SCHEMA)
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            write_atomically(self.fs, f"{self.root}/{RESULTS}/{shard_name(self.settings.run, int(group))}",
                             sink.getvalue().to_pybytes())
            ok.append(sum(row["ok"] for row in rows))
            failed.append(len(rows) - ok[-1])
        return {"group": batch["group"], "ok": np.array(ok), "failed": np.array(failed)}

    def explain_group(self, group: int, paths: list[str]) -> list[dict]:
        """One row per path, in order; a path that cannot be read or explained is a failed row."""
        rows: dict[int, dict] = {}
        readable: list[tuple[int, bytes]] = []
        for position, path in enumerate(paths):
            try:
                readable.append((position, read_bytes(path)))
            except Exception as error:  # any reading failure is this input's row, never the job's
                rows[position] = failed_row(path, f"{path}: cannot read ({one_line(error)})")
        s = self.settings
        try:
            outcomes = self.explainer.explain_methods(
                [data for _, data in readable], s.methods, s.top_k, list(s.class_index) if s.class_index else None,
                s.explain_top,
            )
            for (position, _), per_method in zip(readable, outcomes, strict=True):
                rows[position] = self.row(group, position, paths[position], per_method)
        except Exception as error:  # onnxruntime failing: this group's remaining inputs fail, the job goes on
            for position, _ in readable:
                rows.setdefault(position, failed_row(paths[position], f"{paths[position]}: {one_line(error)}"))
        return [rows[position] for position in range(len(paths))]

    def row(self, group: int, position: int, path: str, per_method: tuple) -> dict:
        if per_method[0].error is not None:
            return failed_row(path, f"{path}: {per_method[0].error.problem}")
        first = per_method[0].explanation
        maps = []
        for outcome in per_method:
            explanation = outcome.explanation
            for class_map in explanation.maps:
                height, width = class_map.cam.shape
                maps.append({
                    "method": explanation.method, "class_index": class_map.class_index, "label": class_map.label,
                    "peak_x": class_map.peak[0], "peak_y": class_map.peak[1], "height": height, "width": width,
                    "cam": class_map.cam.astype(np.float32).ravel().tolist(),
                })
            self.write_images(group, position, path, explanation)
        predictions = [{"index": p.index, "label": p.label, "probability": p.probability} for p in first.predictions]
        return {"path": path, "ok": True, "error": None, "predictions": predictions, "maps": maps}

    def write_images(self, group: int, position: int, path: str, explanation) -> None:
        """DIR/overlays/ and DIR/heatmaps/, when asked: <run>-<group>-<position>_<stem>_<method>_c<class>."""
        s = self.settings
        stem = os.path.splitext(path.rstrip("/").rsplit("/", 1)[-1])[0][:100]
        prefix = f"r{s.run:03d}-{group:07d}-{position}_{stem}_{explanation.method}"
        for class_map, overlay in zip(explanation.maps, explanation.overlays if s.overlays else [None] * 99):
            name = f"{prefix}_c{class_map.class_index}"
            if s.overlays:
                write_atomically(self.fs, f"{self.root}/overlays/{name}.png", encoded_image(overlay))
            if s.heatmaps:
                write_atomically(self.fs, f"{self.root}/heatmaps/{name}.npy", encoded_npy(class_map.heatmap))


def start_ray(address: str | None) -> float:
    """Join `address`, or start a local Ray when none is given and none is running; seconds taken."""
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - started


def default_workers(device: str) -> int:
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU" if device == "cuda" else "CPU", 1)))


def run(inputs: Sequence[str], settings: Settings, workers: int) -> None:
    """Explain `inputs` into shards of run `settings.run`, `workers` actors at a time."""
    size = settings.batch_size
    groups = [{"group": i, "paths": list(inputs[start:start + size])}
              for i, start in enumerate(range(0, len(inputs), size))]
    if not groups:
        return
    resources = {"num_gpus": 1} if settings.device == "cuda" else {"num_cpus": 1}
    dataset = ray.data.from_items(groups, override_num_blocks=min(len(groups), 4 * workers))
    results = dataset.map_batches(
        ShardExplainer, fn_constructor_args=(settings,), batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
        max_restarts=RETRIES, max_task_retries=RETRIES, **resources,
    )
    for _ in results.iter_batches(batch_size=None):
        pass


def written(fs: pafs.FileSystem, root: str) -> pa.Table:
    """The path and ok columns of every shard under DIR/results/ (empty when there are none)."""
    folder = f"{root}/{RESULTS}"
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        return SCHEMA.empty_table().select(["path", "ok"])
    dataset = pads.dataset(folder, filesystem=fs, format="parquet", schema=SCHEMA)
    return dataset.to_table(columns=["path", "ok"])
