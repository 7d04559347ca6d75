"""The ONNX import as the tests run it: one command line, and what a refusal must look like."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import onnx

from export.build import main


def import_onnx(source: str | Path, output: str | Path, *flags: str, preprocessing: str | None = "torch") -> int:
    """`python -m export.build --model source --output output [--preprocessing p] flags...`'s exit code."""
    chosen = ["--preprocessing", preprocessing] if preprocessing else []
    return main(["--model", str(source), *chosen, "--output", str(output), *flags])


def refusal(source: str | Path, output: str | Path, capsys, *flags: str) -> str:
    """The one line of an import that must fail: exit 1, one line on stderr, nothing written."""
    capsys.readouterr()
    assert import_onnx(source, output, *flags) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    assert error.startswith("export failed: ") and "Traceback" not in error
    assert not Path(output).exists()
    return error.strip()


def with_nodes(model: onnx.ModelProto, nodes: Iterable[onnx.NodeProto]) -> onnx.ModelProto:
    """`model` with its graph's nodes replaced by `nodes` (in that order)."""
    nodes = list(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
