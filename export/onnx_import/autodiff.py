"""onnxcam's own reverse-mode autodiff over ONNX nodes: from a seed d score / d output, emit the
nodes computing d score / d target. The op rules (vector-Jacobian products) live in `vjp.py`."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from ..errors import ExportError
from .emitter import Emitter
from . import vjp_attention  # noqa: F401  (registers the transformer ops' rules into REGISTRY)
from .vjp import MULTI_OUTPUT, REGISTRY


def active_tensors(nodes: Sequence[onnx.NodeProto], target: str, floats: set[str]) -> set[str]:
    """The float tensors that depend on `target` (gradients flow through these only)."""
    active = {target}
    for node in nodes:
        if any(name in active for name in node.input):
            active.update(name for name in node.output if name in floats)
    return active


def backward(nodes: Sequence[onnx.NodeProto], target: str, output: str, seed: str, emitter: Emitter,
             floats: set[str], origin: dict[str, str] | None = None) -> str:
    """Emit d score / d target given `seed` = d score / d output; `nodes` in graph order.
    ExportError naming the first op (from the output back) outside the op set, and its node
    (by `origin`'s name for it, when the nodes are renamed copies)."""
    active = active_tensors(nodes, target, floats)
    gradients: dict[str, list[str]] = {output: [seed]}
    for node in reversed(nodes):
        reached = [name for name in node.output if name in gradients]
        wanted = {index for index, name in enumerate(node.input) if name in active}
        if not reached or not wanted:
            continue
        where = f"node {(origin or {}).get(node.name, node.name or node.output[0])}"
        if node.op_type in MULTI_OUTPUT:  # the gradient of each output, None where the score does not reach it
            outputs = [emitter.total(gradients.pop(name)) if name in gradients else None for name in node.output]
            found = MULTI_OUTPUT[node.op_type](emitter, node, outputs, wanted)
        elif node.op_type in REGISTRY:
            if reached != [node.output[0]]:
                raise ExportError(f"unsupported head op {node.op_type} ({where}): only its first output is "
                                  "differentiated")
            found = REGISTRY[node.op_type](emitter, node, emitter.total(gradients.pop(node.output[0])), wanted)
        else:
            raise ExportError(f"unsupported head op {node.op_type} ({where}): onnxcam differentiates "
                              f"{', '.join(sorted([*REGISTRY, *MULTI_OUTPUT]))}")
        for index, value in found.items():
            gradients.setdefault(node.input[index], []).append(value)
    if target not in gradients:
        raise ExportError(f"tensor {target}: the logits do not depend on it through differentiable ops")
    return emitter.total(gradients[target])
