"""python -m runtime.batch SOURCE... --model M.onnx --output DIR: a whole collection on Ray Data.

Exit codes: 0 every row written and ok; 1 some rows failed, inputs are missing from the results,
or the output could not be written (finish with --resume); 2 the job could not start (bad
arguments, model, sources or output folder); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM):
shards being written were finished or discarded whole, finish with --resume. --resume compares the
model file's sha256 and every setting that shapes a row with the manifest, and refuses otherwise.
The last line: `N ok, M failed, X img/s, DIR`."""

import argparse
from collections.abc import Sequence

from .. import commandline as cl

from . import PROG

INSTALL_RAY = 'Ray is not installed: pip install "onnxcam[ray]" (or pip install "ray[data]")'
OPTIONAL = ("ray", "pyarrow")  # what the ray extra brings


def build_parser() -> argparse.ArgumentParser:
    parser = cl.OneLineParser(prog="onnxcam-batch", description=__doc__.split("\n\n")[0],
                              epilog=__doc__.split("\n\n")[1])
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="folders, globs, image files, .txt lists, .parquet/.csv with a path column; local or URIs")
    cl.add_model(parser)
    cl.add_out(parser, help="results/, manifest.json (local or a URI)")
    parser.add_argument("--ray-address", help="an existing Ray cluster (default: start a local Ray)")
    cl.add_targets(parser)
    cl.add_session(parser)
    cl.add_method_options(parser)
    parser.add_argument("--overlays", action="store_true", help="also write DIR/overlays/*.png")
    parser.add_argument("--heatmaps", action="store_true", help="also write DIR/heatmaps/*.npy")
    parser.add_argument("--workers", type=int, help="actors (default: the cluster's CPUs, or GPUs with cuda)")
    parser.add_argument("--resume", action="store_true", help="finish a stopped job in DIR (same model and settings)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the batch job; returns the exit code. Never lets a traceback out."""
    return cl.run_main(PROG, build_parser(), body, argv)


def body(args: argparse.Namespace) -> int:
    try:
        from . import driver, job
    except ImportError as error:
        if error.name and error.name.split(".")[0] in OPTIONAL:
            cl.report(PROG, INSTALL_RAY)
            return cl.EXIT_CANNOT_START
        raise
    try:
        return driver.run(args, job)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM as commandline.Terminated
        if isinstance(stop, cl.Terminated):
            return driver.stopped(args.out, job, "terminated", cl.EXIT_TERMINATED)
        return driver.stopped(args.out, job, "interrupted", cl.EXIT_INTERRUPTED)


if __name__ == "__main__":
    raise SystemExit(main())
