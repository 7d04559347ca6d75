"""python -m runtime.batch SOURCE... --model M.onnx --output DIR: a whole collection on Ray Data.

Exit codes: 0 every row written and ok; 1 some rows failed, inputs are missing from the results,
or the output could not be written (finish with --resume); 2 the job could not start (bad
arguments, model, sources or output folder); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM):
shards being written were finished or discarded whole, finish with --resume. --resume compares the
model file's sha256 and every setting that shapes a row with the manifest, and refuses otherwise.
The last line: `N ok, M failed, X img/s, DIR`."""

import argparse
import collections
import signal
import sys
import time
from collections.abc import Sequence

from runtime.cli import (DEFAULT_TOP_K, EXIT_INTERRUPTED, EXIT_TERMINATED, OneLineParser, Terminated,
                         _handle_sigterm, method_list, shown)
from runtime.errors import ModelError, UsageError, one_line
from runtime.images import DEFAULT_MAX_PIXELS
from runtime.session import DEVICES

from . import manifest, sources
from .storage import filesystem

EXIT_OK, EXIT_SOME_FAILED, EXIT_CANNOT_START = 0, 1, 2
INSTALL_RAY = 'onnxcam batch: Ray is not installed: pip install "onnxcam[ray]" (or pip install "ray[data]")'


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="onnxcam-batch", description=__doc__.split("\n\n")[0],
                           epilog=__doc__.split("\n\n")[1])
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="folders, globs, image files, .txt lists, .parquet/.csv with a path column; local or URIs")
    parser.add_argument("--model", required=True, help="the .onnx file written by python -m export.build")
    parser.add_argument("--output", required=True, metavar="DIR", help="results/, manifest.json (local or a URI)")
    parser.add_argument("--ray-address", help="an existing Ray cluster (default: start a local Ray)")
    parser.add_argument("--method", type=method_list, default=["gradcam"], metavar="M[,M...]")
    parser.add_argument("--top-k", type=int, help="predictions to report (default: 3)")
    parser.add_argument("--explain-top", type=int, metavar="N",
                        help="maps for the N most probable classes (default: 1, the predicted class)")
    parser.add_argument("--class", dest="class_index", type=int, nargs="+", action="extend", metavar="N",
                        help="maps for these class indices instead")
    parser.add_argument("--overlays", action="store_true", help="also write DIR/overlays/*.png")
    parser.add_argument("--heatmaps", action="store_true", help="also write DIR/heatmaps/*.npy")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model run and per shard (default 8)")
    parser.add_argument("--workers", type=int, help="actors (default: the cluster's CPUs, or GPUs with cuda)")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    parser.add_argument("--resume", action="store_true", help="finish a stopped job in DIR (same model and settings)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the batch job; returns the exit code. Never lets a traceback out."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_CANNOT_START
    try:
        from . import job
    except ImportError as error:
        if error.name and error.name.split(".")[0] == "ray":
            print(INSTALL_RAY, file=sys.stderr)
            return EXIT_CANNOT_START
        raise
    previous = _handle_sigterm()
    try:
        return run(args, job)
    except Terminated:
        return _stopped(args.output, job, "terminated", EXIT_TERMINATED)
    except KeyboardInterrupt:
        return _stopped(args.output, job, "interrupted", EXIT_INTERRUPTED)
    except Exception as error:  # the last guard: one line, never a traceback
        _report(f"job failed: {type(error).__name__}: {one_line(error)}")
        return EXIT_CANNOT_START
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace, job) -> int:
    from runtime import Explainer

    try:
        inputs = sources.expand(args.sources)
        if args.workers is not None and args.workers < 1:
            raise UsageError(f"workers {args.workers}: must be at least 1")
        checker = Explainer(args.model, "cpu", args.batch_size, args.max_pixels, args.method[0])
        top_k = args.top_k if args.top_k is not None else min(DEFAULT_TOP_K, checker.card.num_classes)
        if args.explain_top is not None and args.class_index is not None:
            raise UsageError("--explain-top and --class: give one of them")
        explain_top = args.explain_top if args.explain_top is not None else 1
        checker._targets(top_k, args.class_index, explain_top)
        model = {"path": args.model, "sha256": manifest.file_sha256(args.model), "name": checker.card.model}
    except (sources.SourceError, ModelError, UsageError) as error:
        _report(str(error))
        return EXIT_CANNOT_START
    if not inputs:
        _report(f"{' '.join(args.sources)}: no images found")
        return EXIT_CANNOT_START
    settings = {"method": args.method, "top_k": top_k, "explain_top": explain_top, "class_index": args.class_index,
                "max_pixels": args.max_pixels, "overlays": args.overlays, "heatmaps": args.heatmaps}
    try:
        fs, root = filesystem(args.output)
        done = job.written(fs, root)
        run_number = manifest.check_resume(manifest.read(fs, root), done.num_rows > 0, model, settings,
                                           args.resume, args.output)
        job.sweep(fs, root, orphans=True)
        for folder in [job.RESULTS] + [name for name, wanted in (("overlays", args.overlays),
                                                              ("heatmaps", args.heatmaps)) if wanted]:
            fs.create_dir(f"{root}/{folder}", recursive=True)
        record = {"model": model, "settings": settings, "runs": run_number + 1, "versions": manifest.versions(),
                  "inputs": len(inputs), "counts": None}
        manifest.write(fs, root, record)
    except manifest.ManifestError as error:
        _report(str(error))
        return EXIT_CANNOT_START
    except (OSError, ValueError) as error:  # pyarrow's errors: an unwritable folder, a bad URI
        _report(f"{args.output}: cannot use the output folder ({one_line(error)}); choose another --output")
        return EXIT_CANNOT_START
    skip = set(done.column("path").to_pylist())
    todo = [path for path in inputs if shown(path) not in skip]
    ray_seconds = job.start_ray(args.ray_address)
    workers = args.workers or job.default_workers(args.device)
    _report(f"{len(inputs)} inputs, {len(inputs) - len(todo)} already done; {workers} workers; "
            f"Ray ready in {ray_seconds:.1f} s")
    settings_for_actors = job.Settings(
        args.model, args.device, args.batch_size, args.max_pixels, tuple(args.method), top_k,
        explain_top, tuple(args.class_index) if args.class_index else None, args.output, run_number,
        args.overlays, args.heatmaps)
    started = time.perf_counter()
    write_error = job.run(todo, settings_for_actors, workers)
    if write_error is not None:
        job.sweep(fs, root, orphans=False)
        shards = len(job.shard_names(fs, root))
        _report(f"{write_error}; {shards} shards kept, temporary files removed; make room, then finish with --resume")
        return EXIT_SOME_FAILED
    seconds = time.perf_counter() - started
    rows = job.written(fs, root)
    counts = collections.Counter(rows.column("path").to_pylist())
    missing = [path for path in map(shown, inputs) if path not in counts]
    twice = [path for path, count in counts.items() if count > 1]
    ok = sum(rows.column("ok").to_pylist())
    failed = rows.num_rows - ok
    try:
        manifest.write(fs, root, record | {"counts": {"ok": ok, "failed": failed, "rows": rows.num_rows,
                                                      "missing": len(missing), "duplicated": len(twice)}})
    except OSError as error:
        _report(f"{args.output}: cannot write {manifest.MANIFEST} ({one_line(error)}); the results are complete")
    for path in (missing + twice)[:10]:
        _report(f"{path}: {'missing from' if path in missing else 'more than once in'} the results")
    print(f"{ok} ok, {failed} failed, {len(todo) / seconds if seconds else 0:.1f} img/s, {args.output}")
    return EXIT_SOME_FAILED if failed or missing or twice else EXIT_OK


def _stopped(output: str, job, what: str, code: int) -> int:
    """After Ctrl-C or SIGTERM: stop Ray's workers, remove what no shard accounts for, one line."""
    job.stop_ray()
    try:
        fs, root = filesystem(output)
        job.sweep(fs, root, orphans=False)
        kept = f"{len(job.shard_names(fs, root))} shards kept"
    except (OSError, ValueError):
        kept = "the shards written are kept"
    _report(f"{what}; {kept}, no file half-written; finish with --resume")
    return code


def _report(message: str) -> None:
    print(f"onnxcam batch: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
