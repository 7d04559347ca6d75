"""runtime.commandline: shared flags and aliases, exit codes, one-line errors, Ctrl-C and SIGTERM."""

import os
import signal
import time
from types import SimpleNamespace

import pytest

from runtime import commandline as cl
from runtime.errors import ModelError
from runtime.targets import TargetsError


def parser():
    parser = cl.OneLineParser(prog="tool")
    cl.add_model(parser)
    cl.add_out(parser)
    cl.add_targets(parser)
    cl.add_session(parser)
    cl.add_method_options(parser)
    return parser


def run(body, *argv):
    return cl.run_main("tool", parser(), body, ["--model", "m.onnx", "--out", "o", *argv])


def test_old_spellings_are_aliases():
    new = parser().parse_args(["--model", "m", "--out", "o", "--method", "gradcam,scorecam"])
    old = parser().parse_args(["--model", "m", "--output", "o", "--methods", "gradcam,scorecam"])
    assert new == old and new.out == "o" and new.method == ["gradcam", "scorecam"]


def test_the_defaults():
    args = parser().parse_args(["--model", "m", "--out", "o"])
    assert (args.method, args.top_k, args.explain_top, args.class_index) == (["gradcam"], None, None, None)
    assert (args.device, args.batch_size) == ("auto", cl.DEFAULT_BATCH_SIZE)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        ([], "the following arguments are required: --model, --out/--output"),
        (["--model", "m", "--out", "o", "--explain-top", "2", "--class", "1"], "not allowed with argument"),
        (["--model", "m", "--out", "o", "--method", "magic"], "method 'magic': unknown"),
        (["--model", "m", "--out", "o", "--top-k", "two"], "argument --top-k: invalid int value: 'two'"),
    ],
)
def test_argument_errors_are_one_line_exit_2(capsys, argv, problem):
    assert cl.run_main("tool", parser(), lambda args: 0, argv) == cl.EXIT_CANNOT_START
    err = capsys.readouterr().err
    assert err.startswith("tool: arguments: ") and err.endswith(" (see --help)\n") and err.count("\n") == 1
    assert problem in err


def raising(error):
    def body(args):
        raise error
    return body


@pytest.mark.parametrize(
    ("error", "code", "said"),
    [
        (KeyboardInterrupt(), 130, "tool: interrupted\n"),
        (cl.Terminated(), 143, "tool: terminated\n"),
        (ModelError("m.onnx: not an onnxcam model"), 2, "tool: m.onnx: not an onnxcam model\n"),
        (ValueError("bad\nthing"), 2, "tool: unexpected error: ValueError: bad thing\n"),
    ],
)
def test_exit_codes_and_one_line(capsys, error, code, said):
    assert run(raising(error)) == code
    assert capsys.readouterr().err == said


def test_sigterm_while_the_body_runs_exits_143_and_the_handler_is_restored(capsys):
    before = signal.getsignal(signal.SIGTERM)

    def body(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts it
        return 0

    assert run(body) == cl.EXIT_TERMINATED
    assert capsys.readouterr().err == "tool: terminated\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_targets_from_args_defaults_top_k_to_the_models_classes():
    args = parser().parse_args(["--model", "m", "--out", "o", "--class", "1", "0"])
    targets = cl.targets_from_args(args, SimpleNamespace(num_classes=2))
    assert (targets.top_k, targets.classes, targets.methods) == (2, (1, 0), ("gradcam",))
    args = parser().parse_args(["--model", "m", "--out", "o", "--explain-top", "3"])
    with pytest.raises(TargetsError, match="explain_top 3: must be between 1 and the model's 2 classes"):
        cl.targets_from_args(args, SimpleNamespace(num_classes=2))


def test_shown_escapes_control_characters_and_bad_bytes():
    assert cl.shown("a\nb\x1b") == "a\\nb\\x1b"
    assert cl.shown(os.fsdecode(b"x\xffy")) == "x\\xffy"
