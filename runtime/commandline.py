"""What every runtime command line shares: the one-line argument parser, the common flags (one
name per idea, old spellings kept as aliases), exit codes, one-line reports, and Ctrl-C/SIGTERM.

    from . import commandline as cl
    def build_parser():
        parser = cl.OneLineParser(prog="onnxcam-batch", description="...")
        parser.add_argument("sources", nargs="+")
        cl.add_model(parser)                      # --model (required)
        cl.add_out(parser)                        # --out DIR (alias --output); required without a default
        cl.add_targets(parser)                    # --method (alias --methods), --top-k, --explain-top | --class
        cl.add_session(parser)                    # --device, --batch-size, --max-pixels
        cl.add_method_options(parser)             # --aug-smooth, --eigen-smooth, --max-channels
        return parser
    def body(args) -> int:                        # raise OnnxcamError for a one-line exit 2
        explainer = cl.explainer_from_args(args)
        targets = cl.targets_from_args(args, explainer.card)
        ...
        return cl.EXIT_OK
    def main(argv=None) -> int:
        return cl.run_main("onnxcam-batch", build_parser(), body, argv)

run_main: argument errors and OnnxcamError -> one line, exit 2; Ctrl-C -> "interrupted", 130;
SIGTERM -> "terminated", 143 (raised as Terminated, a KeyboardInterrupt, in the main thread);
stdout closed by its reader -> 141, quietly; any other exception -> one line, exit 2.
"""

import argparse
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from .errors import OnnxcamError, one_line
from .explainer import DEFAULT_BATCH_SIZE, Explainer
from .images import DEFAULT_MAX_PIXELS
from .methods import DEFAULT_MAX_CHANNELS, METHODS
from .model_card import ModelCard
from .session import DEVICES
from .targets import DEFAULT_METHOD, DEFAULT_TOP_K, Targets, TargetsError, parse_methods

EXIT_OK = 0
EXIT_FAILED = 1  # some inputs failed (one line each); the others were done
EXIT_CANNOT_START = 2  # bad arguments, model, output folder, device, targets: nothing was done
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_PIPE_CLOSED = 141  # stdout closed by its reader (e.g. | head)
EXIT_TERMINATED = 143  # SIGTERM
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}  every input succeeded
  {EXIT_FAILED}  at least one input failed (one line each on stderr); the others were done
  {EXIT_CANNOT_START}  the run could not start: bad arguments, missing or invalid model, output folder
     not writable, CUDA unavailable, class index or top-k out of range
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_PIPE_CLOSED}  stdout was closed by its reader (e.g. | head): the run stopped quietly
  {EXIT_TERMINATED}  terminated (SIGTERM)"""


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line, '<prog>: arguments: <problem> (see --help)', exit 2."""

    def error(self, message: str) -> None:
        self.exit(EXIT_CANNOT_START, f"{self.prog}: arguments: {message} (see --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def method_list(text: str) -> list[str]:
    """argparse type: 'gradcam,scorecam' (or 'all') -> ['gradcam', 'scorecam']."""
    try:
        return list(parse_methods(text))
    except TargetsError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_model(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="the onnxcam .onnx file (python -m export.build)")


def add_out(parser: argparse.ArgumentParser, default: str | None = None, help: str = "output folder") -> None:
    """--out DIR, also spelled --output; required when there is no default."""
    shown_default = f" (default: {default})" if default is not None else ""
    parser.add_argument(
        "--out", "--output", dest="out", metavar="DIR", default=default, required=default is None,
        help=f"{help}{shown_default}",
    )


def add_targets(parser: argparse.ArgumentParser) -> None:
    """--method M[,M...] (also --methods), --top-k N, and one of --explain-top N or --class N..."""
    parser.add_argument(
        "--method", "--methods", dest="method", type=method_list, default=[DEFAULT_METHOD], metavar="M[,M...]",
        help=f"CAM methods, comma-separated, or all: {', '.join(METHODS)} (default: {DEFAULT_METHOD})",
    )
    parser.add_argument(
        "--top-k", type=int, metavar="N",
        help=f"predictions to report (default: {DEFAULT_TOP_K}, or every class of a smaller model)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--explain-top", type=int, metavar="N",
        help="maps for the N most probable classes (default: 1, the predicted class)",
    )
    which.add_argument(
        "--class", dest="class_index", type=int, nargs="+", action="extend", metavar="N",
        help="maps for these class indices instead",
    )


def add_session(parser: argparse.ArgumentParser, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
    """--device, --batch-size, --max-pixels: the Explainer's session and input limits."""
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto = CUDA when available (default)")
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, metavar="N", help=f"images per model run (default: {batch_size})"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
        help=f"refuse larger images (default: {DEFAULT_MAX_PIXELS})",
    )


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """--aug-smooth, --eigen-smooth, --max-channels: how the maps are made."""
    parser.add_argument(
        "--aug-smooth", action="store_true", help="average over horizontal flips x intensity 0.9/1/1.1"
    )
    parser.add_argument(
        "--eigen-smooth", action="store_true",
        help="first principal component of the weighted activations instead of their sum",
    )
    parser.add_argument(
        "--max-channels", type=int, default=DEFAULT_MAX_CHANNELS, metavar="N",
        help=f"scorecam: model runs per image, for the most active channels (default: {DEFAULT_MAX_CHANNELS})",
    )


def explainer_from_args(args: argparse.Namespace) -> Explainer:
    """The Explainer of --model with the flags of add_session and add_method_options (those not
    given keep the Explainer's defaults); its method is the first of --method."""
    options = {
        name: getattr(args, name)
        for name in ("device", "batch_size", "max_pixels", "aug_smooth", "eigen_smooth", "max_channels")
        if hasattr(args, name)
    }
    methods = getattr(args, "method", [DEFAULT_METHOD])
    return Explainer(args.model, method=methods[0], **options)


def targets_from_args(args: argparse.Namespace, card: ModelCard) -> Targets:
    """The Targets of add_target's flags, checked against the model's card (TargetsError); --top-k
    defaults to DEFAULT_TOP_K, or every class of a model with fewer."""
    top_k = args.top_k if args.top_k is not None else min(DEFAULT_TOP_K, card.num_classes)
    return Targets(top_k, args.explain_top, args.class_index, tuple(args.method)).check(card)


def run_main(
    prog: str,
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse argv, run body(args) and return its exit code; never lets a traceback out (see the
    module's docstring for the codes). SIGTERM raises Terminated while body runs."""
    warnings.showwarning = lambda message, *_, **__: report(prog, f"warning: {one_line(message)}")
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_CANNOT_START
    previous = _raise_on_sigterm()
    try:
        return body(args)
    except Terminated:
        report(prog, "terminated")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        report(prog, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. --json | head: the reader has gone; nothing more to say
        _silence_stdout()
        return EXIT_PIPE_CLOSED
    except OnnxcamError as error:
        report(prog, str(error))
        return EXIT_CANNOT_START
    except Exception as error:  # the last guard: one line, never a traceback
        report(prog, f"unexpected error: {type(error).__name__}: {one_line(error)}")
        return EXIT_CANNOT_START
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def report(prog: str, message: str) -> None:
    """'<prog>: <message>' on stderr, on one line (control characters escaped), above a progress bar."""
    write_line(f"{prog}: {shown(message)}", sys.stderr)


def write_line(text: str, file: TextIO) -> None:
    """Print a line; above the tqdm progress bar when one shows (tqdm.write clears and redraws it)."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        tqdm.tqdm.write(text, file=file)
    else:
        print(text, file=file)


def shown(text: str) -> str:
    """`text` safe to print on one line: bytes that were not UTF-8 as \\xNN, control characters
    (newlines included) as \\n, \\x1b, ..."""
    try:
        readable = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        readable = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return CONTROL_CHARACTERS.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), readable)


def _raise_on_sigterm() -> signal.Handlers | None:
    """Turn SIGTERM into Terminated (in the main thread only); returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
