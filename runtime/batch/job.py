"""The Ray Data pipeline: groups of paths -> an actor pool of Explainers -> one Parquet shard per group.

Each group of `batch_size` inputs is one row of the dataset and one shard, named by the run and
the group's number: a retried group (its actor killed, restarted by Ray) rewrites the same shard
name, so an input can never land in two shards. Each file is written to a hidden temporary and
moved into place, a group's overlays and heatmaps before its shard: a group whose shard is missing
is not done (runtime.batch.shards). A row is the job's path, ok and error, then the record every
front end shares (runtime.results.record)."""

import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from .. import Explainer
from ..commandline import Terminated, shown
from ..errors import ImageError, one_line
from ..render import encoded_image, encoded_npy
from ..results import record
from ..targets import Targets

from .shards import RESULTS, SCHEMA, shard_name
from .storage import delete_quietly, filesystem, read_input, write_atomically

CRASHES_PER_INPUT = 2  # deaths of its worker with an input in flight before it is a failed row


@dataclass(frozen=True)
class Settings:
    """What an actor needs to explain and write a group."""

    model: str
    device: str
    batch_size: int
    max_pixels: int
    aug_smooth: bool
    eigen_smooth: bool
    max_channels: int
    targets: Targets
    output: str  # the output folder's URI
    run: int
    overlays: bool
    heatmaps: bool


class OutputError(Exception):
    """An output file could not be written (a full disk, a lost permission); the message is one
    line naming the output folder. The group being written is removed whole."""


class Attempts:
    """A group's attempts, in a hidden file beside its shard (shared by every node): which input
    positions were in flight when a worker died, and how often each was."""

    def __init__(self, writer: "ShardExplainer", path: str) -> None:
        self.writer, self.path = writer, path
        self.deaths: dict[int, int] = {}
        try:
            with writer.fs.open_input_stream(path) as stream:
                state = json.loads(stream.read())
        except (OSError, ValueError):  # none yet (or a torn one): a first attempt
            return
        for position in state.get("in_flight", []):  # the last attempt died with these in flight
            state["deaths"][str(position)] = state["deaths"].get(str(position), 0) + 1
        self.deaths = {int(position): count for position, count in state["deaths"].items()}

    def start(self, positions) -> None:
        """These positions are about to be explained."""
        state = {"in_flight": list(positions), "deaths": {str(p): n for p, n in self.deaths.items()}}
        self.writer.write(self.path, json.dumps(state).encode())

    def finish(self) -> None:
        delete_quietly(self.writer.fs, self.path)


def failed_row(path: str, error: str) -> dict:
    return {"path": path, "ok": False, "error": error, "predictions": [], "maps": []}


class ShardExplainer:
    """One actor: one onnxruntime session; each call explains groups and writes their shards."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        s = settings
        self.explainer = Explainer(s.model, s.device, s.batch_size, s.max_pixels, s.targets.methods[0],
                                   s.aug_smooth, s.eigen_smooth, s.max_channels)
        self.fs, self.root = filesystem(settings.output)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each group written, or the one line of the OutputError that stopped it (the driver
        stops the job on it: no exception travels through Ray's wrappers)."""
        ok, failed, errors = [], [], []
        for group, paths in zip(batch["group"], batch["paths"], strict=True):
            try:
                rows = self.write_group(int(group), [os.fsdecode(bytes(path)) for path in paths])
                errors.append("")
            except OutputError as error:
                rows = []
                errors.append(str(error))
            ok.append(sum(row["ok"] for row in rows))
            failed.append(len(rows) - ok[-1])
        return {"group": batch["group"], "ok": np.array(ok), "failed": np.array(failed), "error": np.array(errors)}

    def write_group(self, group: int, paths: list[str]) -> list[dict]:
        """Explain a group and write its images, then its shard; on a write failure, remove the
        group's files and raise OutputError.

        Ray restarts a worker that died (a crash, out of memory) without limit, so an input that
        kills its worker would be retried for ever. The group's attempts are kept beside its
        shard: a group that was in flight when its worker died is redone one input at a time,
        and an input in flight at CRASHES_PER_INPUT deaths becomes a failed row."""
        written: list[str] = []
        shard = f"{self.root}/{RESULTS}/{shard_name(self.settings.run, group)}"
        attempts = Attempts(self, f"{self.root}/{RESULTS}/.{shard_name(self.settings.run, group)}.attempts")
        try:
            if attempts.deaths:
                rows = {}
                for position, path in enumerate(paths):
                    if attempts.deaths.get(position, 0) >= CRASHES_PER_INPUT:
                        rows[position] = failed_row(shown(path), f"{shown(path)}: its worker died on it "
                                                    f"{CRASHES_PER_INPUT} times (a crash, or out of memory)")
                        continue
                    attempts.start([position])
                    rows |= self.explain_group(group, [(position, path)], written)
            else:
                attempts.start(range(len(paths)))
                rows = self.explain_group(group, list(enumerate(paths)), written)
            ordered = [rows[position] for position in range(len(paths))]
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pylist(ordered, schema=SCHEMA), sink)
            self.write(shard, sink.getvalue(), written)
            attempts.finish()
            return ordered
        except OutputError:
            for path in [*written, attempts.path]:
                delete_quietly(self.fs, path)
            raise

    def write(self, path: str, data: bytes | memoryview, written: list[str] | None = None) -> None:
        """One output file, atomically, appended to `written`; OutputError when it cannot be written."""
        try:
            write_atomically(self.fs, path, data)
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else one_line(error)
            raise OutputError(f"{self.settings.output}: cannot write ({reason})") from None
        if written is not None:
            written.append(path)

    def explain_group(self, group: int, items: list[tuple[int, str]], written: list[str]) -> dict[int, dict]:
        """A row per (position, path); a path that cannot be read or explained is a failed row.
        The images written are appended to `written`."""
        rows: dict[int, dict] = {}
        paths = dict(items)
        readable: list[tuple[int, bytes]] = []
        for position, path in items:
            try:
                readable.append((position, read_input(path)))
            except ImageError as error:  # the CLI's messages
                rows[position] = failed_row(shown(path), shown(str(error)))
            except Exception as error:  # any other reading failure is this input's row, never the job's
                rows[position] = failed_row(shown(path), f"{shown(path)}: cannot read ({one_line(error)})")
        try:
            outcomes = self.explainer.explain_targets([data for _, data in readable], self.settings.targets)
            for (position, _), per_method in zip(readable, outcomes, strict=True):
                rows[position] = self.row(group, position, paths[position], per_method, written)
        except OutputError:
            raise
        except Exception as error:  # onnxruntime failing: this group's remaining inputs fail, the job goes on
            for position, _ in readable:
                rows.setdefault(position, failed_row(shown(paths[position]),
                                                     f"{shown(paths[position])}: {one_line(error)}"))
        return rows

    def row(self, group: int, position: int, path: str, per_method: tuple, written: list[str]) -> dict:
        """The job's fields (path, ok, error) and the shared record (runtime.results.record) with
        its cams; the overlays and heatmaps written."""
        if per_method[0].error is not None:
            return failed_row(shown(path), f"{shown(path)}: {per_method[0].error.problem}")
        explanations = [outcome.explanation for outcome in per_method]
        for explanation in explanations:
            self.write_images(group, position, path, explanation, written)
        shared = record(explanations, cam=True)  # its "image" is <bytes>: the job's path names the input
        return {"path": shown(path), "ok": True, "error": None} | {
            key: value for key, value in shared.items() if key != "image"}

    def write_images(self, group: int, position: int, path: str, explanation, written: list[str]) -> None:
        """DIR/overlays/ and DIR/heatmaps/, when asked, one file per map:
        <run>-<group>-<position>_<stem>_<method>_c<class>."""
        s = self.settings
        if not (s.overlays or s.heatmaps):
            return
        stem = os.path.splitext(shown(path).rstrip("/").rsplit("/", 1)[-1])[0][:100]
        prefix = f"r{s.run:03d}-{group:07d}-{position}_{stem}_{explanation.method}"
        overlays = explanation.overlays if s.overlays else None
        for number, class_map in enumerate(explanation.maps):
            name = f"{prefix}_c{class_map.class_index}"
            for folder, wanted, encode in (("overlays", s.overlays, lambda: encoded_image(overlays[number])),
                                           ("heatmaps", s.heatmaps, lambda: encoded_npy(class_map.heatmap))):
                if wanted:
                    self.write(f"{self.root}/{folder}/{name}{'.png' if folder == 'overlays' else '.npy'}", encode(),
                               written)


def start_ray(address: str | None) -> float:
    """Join `address`, or start a local Ray when none is given and none is running; seconds taken.
    Ray's own SIGTERM handler (a stack dump, then abort) is replaced by the one set before."""
    started = time.perf_counter()
    if not ray.is_initialized():
        handler = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except SystemExit as stop:  # ray.init's own SIGTERM handler exits with the signal's number
            if stop.code != signal.SIGTERM:
                raise
            raise Terminated() from None
        finally:
            if handler is not None:
                signal.signal(signal.SIGTERM, handler)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return time.perf_counter() - started


def stop_ray() -> None:
    """Disconnect from Ray: the job's actors end with their driver (a local Ray ends too, even
    one stopped while it started)."""
    ray.shutdown()


def cluster_slots(device: str) -> int:
    """How many actors the cluster can run at once: its CPUs, or its GPUs with cuda."""
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU" if device == "cuda" else "CPU", 1)))


def run(inputs: Sequence[str], settings: Settings, workers: int) -> str | None:
    """Explain `inputs` into shards of run `settings.run`, `workers` actors at a time; returns the
    first write error (one line), which stops the job, or None. Ray Data restarts a killed actor
    and retries its groups (its defaults for actor pools: no limit). Paths travel as bytes
    (os.fsencode): a file name that is not UTF-8 stays the same file."""
    size = settings.batch_size
    groups = [{"group": i, "paths": [os.fsencode(path) for path in inputs[start:start + size]]}
              for i, start in enumerate(range(0, len(inputs), size))]
    if not groups:
        return None
    resources = {"num_gpus": 1} if settings.device == "cuda" else {"num_cpus": 1}
    dataset = ray.data.from_items(groups, override_num_blocks=min(len(groups), 4 * workers))
    results = dataset.map_batches(
        ShardExplainer, fn_constructor_args=(settings,), batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
        **resources,
    )
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        errors = [error for error in batch["error"] if error]
        if errors:
            return str(errors[0])
    return None


