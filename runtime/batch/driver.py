"""The batch job's driver: inputs expanded, model and output folder checked (nothing written
before every check passed), Ray started, the job run, every input checked to be there once."""

import argparse
import collections
import os
import time

import pyarrow.fs as pafs

from .. import commandline as cl
from ..errors import UsageError, one_line
from ..model_card import file_sha256
from ..targets import Targets

from . import PROG, manifest, shards, sources
from .storage import filesystem


def run(args: argparse.Namespace, job) -> int:
    """The job; raises OnnxcamError (one line, exit 2) when it cannot start, before writing anything."""
    inputs = sources.expand(args.sources, exclude=args.out)
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"workers {args.workers}: must be at least 1")
    checker = cl.explainer_from_args(argparse.Namespace(**vars(args) | {"device": "cpu"}))  # the card, checked
    targets = cl.targets_from_args(args, checker.card)
    model = {"path": args.model, "sha256": file_sha256(args.model), "name": checker.card.model}
    if not inputs:
        raise UsageError(f"{' '.join(args.sources)}: no images found")
    settings = row_settings(args, targets)
    fs, root, done, run_number = _output_folder(args, model, settings)
    skip = set(done.column("path").to_pylist())
    todo = [path for path in inputs if cl.shown(path) not in skip]
    workers, ray_seconds = _workers(args, job) if todo else (0, 0.0)  # nothing left: no Ray to start
    record = {"model": model, "settings": settings, "runs": run_number + 1, "versions": manifest.versions(),
              "inputs": len(inputs), "counts": None}
    try:
        shards.sweep(fs, root, orphans=True)
        for folder in [shards.RESULTS] + [name for name in shards.IMAGE_FOLDERS if getattr(args, name)]:
            fs.create_dir(f"{root}/{folder}", recursive=True)
        manifest.write(fs, root, record)
    except OSError as error:
        raise UsageError(f"{args.out}: cannot write to the output folder ({one_line(error)}); "
                         "choose another --out") from None
    cl.report(PROG, f"{len(inputs)} inputs, {len(inputs) - len(todo)} already done; {workers} workers; "
                    f"Ray ready in {ray_seconds:.1f} s" if todo else f"{len(inputs)} inputs, all already done")
    settings_for_actors = job.Settings(
        os.path.abspath(args.model), args.device, args.batch_size, args.max_pixels, args.aug_smooth,
        args.eigen_smooth, args.max_channels, targets, args.out, run_number, args.overlays, args.heatmaps)
    started = time.perf_counter()
    write_error = job.run(todo, settings_for_actors, workers)
    if write_error is not None:
        shards.sweep(fs, root, orphans=False)
        kept = len(shards.shard_names(fs, root))
        cl.report(PROG, f"{write_error}; {kept} shards kept, temporary files removed; "
                        "make room, then finish with --resume")
        return cl.EXIT_FAILED
    return _finish(args, fs, root, inputs, record, len(todo) / (time.perf_counter() - started))


def _workers(args: argparse.Namespace, job) -> tuple[int, float]:
    """Ray started (or joined) and the number of workers: --workers, at most the cluster's CPUs
    (GPUs with cuda), else all of them; and the seconds Ray took."""
    ray_seconds = job.start_ray(args.ray_address)
    slots = job.cluster_slots(args.device)
    if args.workers is not None and args.workers > slots:
        unit = "GPUs" if args.device == "cuda" else "CPUs"
        raise UsageError(f"workers {args.workers}: the cluster has {slots} {unit} (one per worker); give at most {slots}")
    return args.workers or slots, ray_seconds


def _output_folder(args: argparse.Namespace, model: dict, settings: dict):
    """The output folder's filesystem, root, rows already written and this run's number; the
    resume rules checked (ManifestError); nothing written."""
    try:
        fs, root = filesystem(args.out)
        if fs.get_file_info(root).type == pafs.FileType.File:
            raise UsageError(f"{args.out}: is a file, not a folder; choose another --out")
        done = shards.written(fs, root)
        previous = manifest.read(fs, root)
    except (OSError, ValueError) as error:  # pyarrow's errors: an unreadable folder, a bad URI
        raise UsageError(f"{args.out}: cannot use the output folder ({one_line(error)}); choose another --out") from None
    return fs, root, done, manifest.check_resume(previous, done.num_rows > 0, model, settings, args.resume, args.out)


def _finish(args: argparse.Namespace, fs, root: str, inputs: list[str], record: dict, speed: float) -> int:
    """Every input checked to be in the results once; the counts in the manifest; the last line."""
    rows = shards.written(fs, root)
    counts = collections.Counter(rows.column("path").to_pylist())
    missing = [path for path in map(cl.shown, inputs) if path not in counts]
    twice = [path for path, count in counts.items() if count > 1]
    ok = sum(rows.column("ok").to_pylist())
    failed = rows.num_rows - ok
    try:
        manifest.write(fs, root, record | {"counts": {"ok": ok, "failed": failed, "rows": rows.num_rows,
                                                      "missing": len(missing), "duplicated": len(twice)}})
    except OSError as error:
        cl.report(PROG, f"{args.out}: cannot write {manifest.MANIFEST} ({one_line(error)}); the results are complete")
    for path in (missing + twice)[:10]:
        cl.report(PROG, f"{path}: {'missing from' if path in missing else 'more than once in'} the results")
    print(f"{ok} ok, {failed} failed, {speed:.1f} img/s, {args.out}")
    return cl.EXIT_FAILED if failed or missing or twice else cl.EXIT_OK


def row_settings(args: argparse.Namespace, targets: Targets) -> dict:
    """Every setting that changes a row, as the manifest keeps it for --resume to compare."""
    return {"method": list(targets.methods), "top_k": targets.top_k,
            "explain_top": targets.maps_per_method if targets.classes is None else None,
            "class_index": list(targets.classes) if targets.classes is not None else None,
            "max_pixels": args.max_pixels, "aug_smooth": args.aug_smooth, "eigen_smooth": args.eigen_smooth,
            "max_channels": args.max_channels, "overlays": args.overlays, "heatmaps": args.heatmaps}


def stopped(output: str, job, what: str, code: int) -> int:
    """After Ctrl-C or SIGTERM: stop Ray's workers, remove temporaries, one line."""
    job.stop_ray()
    try:
        fs, root = filesystem(output)
        shards.sweep(fs, root, orphans=False)
        kept = f"{len(shards.shard_names(fs, root))} shards kept"
    except (OSError, ValueError):
        kept = "the shards written are kept"
    cl.report(PROG, f"{what}; {kept}, no file half-written; finish with --resume")
    return code
