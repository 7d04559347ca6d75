"""Keep the user's tensor names apart from the contract's: an input called `image` or a tensor called
`score`, `cam`, `probabilities`... is common, and the wrapped graph adds tensors of those names (and
its own under `onnxcam/`). Such user tensors are renamed before anything else reads the graph."""

from __future__ import annotations

import onnx

from .. import contract

PREFIX = "onnxcam/"  # every tensor the import adds is named under it, or is one of the contract's names
RESERVED = frozenset((contract.INPUT_IMAGE, contract.INPUT_CLASS_INDEX, *contract.OUTPUTS))


def reserved(name: str) -> bool:
    return name in RESERVED or name.startswith(PREFIX)


def rename_reserved(model: onnx.ModelProto) -> dict[str, str]:
    """Rename, in place, every tensor of `model` (subgraphs included) whose name is reserved to
    `user/<name>` (with a number where that is taken too). Returns {new name: the user's name}."""
    taken = _names(model.graph)
    renamed: dict[str, str] = {}
    for name in sorted(name for name in taken if reserved(name)):
        new, number = f"user/{name}", 1
        while new in taken or reserved(new):
            number += 1
            new = f"user/{name}_{number}"
        taken.add(new)
        renamed[name] = new
    if renamed:
        _rename(model.graph, renamed)
    return {new: old for old, new in renamed.items()}


def _graphs(graph: onnx.GraphProto):
    """`graph` and every subgraph in its nodes' attributes (If, Loop, Scan bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _graphs(sub)


def _names(graph: onnx.GraphProto) -> set[str]:
    names = set()
    for g in _graphs(graph):
        names.update(value.name for value in [*g.input, *g.output, *g.value_info])
        names.update(init.name for init in g.initializer)
        names.update(name for node in g.node for name in [*node.input, *node.output] if name)
    return names


def _rename(graph: onnx.GraphProto, renamed: dict[str, str]) -> None:
    for g in _graphs(graph):
        for value in [*g.input, *g.output, *g.value_info, *g.initializer]:
            value.name = renamed.get(value.name, value.name)
        for node in g.node:
            node.input[:] = [renamed.get(name, name) for name in node.input]
            node.output[:] = [renamed.get(name, name) for name in node.output]
