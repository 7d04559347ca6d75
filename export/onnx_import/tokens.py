"""Vision transformers: a token tensor [N, T, C] explained as the contract's NHWC map of its patch tokens.

The patch grid h x w is the largest output of a Conv before the tokens (the patch embedding: timm,
torchvision, Hugging Face; a hybrid's last CNN stage) with h·w <= T; where there is none (LeViT's pooled
tokens), the h x w of the input's proportions with T - h·w <= MAX_EXTRA. The T - h·w tokens left over are
the extra tokens every exporter puts first (class, DeiT's distillation, DINOv2's registers). The graph
gets, right after the tokens X: extra = X[:, :E], `X:patches` = X[:, E:] reshaped to [N, h, w, C], and
X's readers read Concat(extra, `X:patches` reshaped back) instead: the same values, and the patch grid is
a tensor of the graph that the general head differentiates like any NHWC map.

`--layer auto` in a transformer (the walk back from the logits meets a token tensor [N, T, C] before any
4-D map): the input of the last attention (the tensor its query/key/value projections read), as
pytorch-grad-cam's `blocks[-1].norm1`: after the last attention, a class-token model's patch tokens reach
the logits only through the class token, and their gradients are all 0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError

SUFFIX = ":patches"
MAX_EXTRA = 16  # extra tokens allowed where the grid comes from the input's proportions
LAYOUT_OPS = ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")


@dataclass(frozen=True)
class TokenGrid:
    tokens: str  # the [N, T, C] tensor
    extra: int  # E: the leading tokens that are not patches
    size: tuple[int, int]  # (h, w), h·w = T - E
    channels: int


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def transformer_layer(graph: onnx.GraphProto, path: list[str], shapes: dict, dependent: set[str],
                      floats: set[str]) -> str | None:
    """`--layer auto`'s tensor when the first tensor of 3 or more axes on `path` (the walk back from the
    logits) is a token tensor: the input of the last attention, else that token tensor; None: no tokens."""
    first = next((tensor for tensor in path if len(shapes.get(tensor) or []) >= 3), None)
    if first is None or len(shapes[first]) != 3:
        return None
    made_by = _producers(graph)
    softmaxes = [node for node in graph.node if node.op_type == "Softmax" and node.input[0] in dependent
                 and len(shapes.get(node.input[0]) or []) >= 3]
    if not softmaxes:
        return first
    order = {name: index for index, node in enumerate(graph.node) for name in node.output}
    found = [tensor for tensor in map(lambda name: _through_layout(name, shapes[first], shapes, made_by),
                                      _projection_inputs(softmaxes[-1], made_by, dependent, floats))
             if tensor is not None]
    tokens = max(found, key=lambda name: order.get(name, -1)) if found else first
    return _map_behind(tokens, shapes, made_by)


def _map_behind(tokens: str, shapes: dict, made_by: dict) -> str:
    """The NCHW map [N, C, h, w] that `tokens` [N, h·w, C] only reshapes and transposes (EfficientFormer's
    and MobileViT's flattened maps), else `tokens`: a map is explained as itself, with no grid to add."""
    _, count, channels = shapes[tokens]
    source = tokens
    while (node := made_by.get(source)) is not None and node.op_type in LAYOUT_OPS:
        source = node.input[0]
        shape = shapes.get(source) or []
        if len(shape) == 4 and shape[1] == channels and None not in shape[2:] and shape[2] * shape[3] == count:
            return source
    return tokens


def _projection_inputs(softmax: onnx.NodeProto, made_by: dict, dependent: set[str], floats: set[str]) -> list[str]:
    """The image-dependent inputs of the MatMul/Gemm nodes with a weight (an operand that does not depend
    on the image) nearest before `softmax`: its query and key projections."""
    found, seen, wanted = [], set(), [softmax.input[0]]
    while wanted:
        tensor = wanted.pop()
        if tensor in seen or tensor not in made_by:
            continue
        seen.add(tensor)
        node = made_by[tensor]
        if node.op_type in ("MatMul", "Gemm") and node.input[1] not in dependent:
            found.append(node.input[0])
            continue
        wanted.extend(name for name in node.input if name in dependent and name in floats)
    return found


def _through_layout(tensor: str, shape: list, shapes: dict, made_by: dict) -> str | None:
    """`tensor`, or the tensor it is a transpose/reshape of, with `shape`'s batch and token axes [N, T, ·];
    None if there is none (torchvision's MultiheadAttention projects the tokens transposed to [T, N, C])."""
    while len(shapes.get(tensor) or []) != 3 or shapes[tensor][:2] != shape[:2]:
        node = made_by.get(tensor)
        if node is None or node.op_type not in LAYOUT_OPS:
            return None
        tensor = node.input[0]
    return tensor


def patch_grid(graph: onnx.GraphProto, tokens: str, shapes: dict, input_size: tuple[int, int]) -> TokenGrid:
    """The patch grid of token tensor `tokens` [N, T, C]; ExportError where none is found."""
    _, count, channels = shapes[tokens]
    if count is None or channels is None:
        raise ExportError(f"tensor {tokens} {shapes[tokens]}: its token count or width is unknown")
    made_by = _producers(graph)
    before, wanted = set(), [tokens]
    while wanted:
        node = made_by.get(wanted.pop())
        if node is not None and node.output[0] not in before:
            before.update(node.output)
            wanted.extend(node.input)
    grids = [tuple(shapes[node.output[0]][2:]) for node in graph.node
             if node.op_type == "Conv" and node.output[0] in before and len(shapes.get(node.output[0]) or []) == 4]
    grids = [(h, w) for h, w in grids if h is not None and w is not None and 1 < h * w <= count]
    if grids:
        h, w = max(grids, key=lambda size: size[0] * size[1])
        return TokenGrid(tokens, count - h * w, (h, w), channels)
    height, width = input_size
    for extra in range(min(MAX_EXTRA, count - 2) + 1):
        h = round(np.sqrt((count - extra) * height / width))
        if h and (count - extra) % h == 0 and (count - extra) // h * height == h * width:
            return TokenGrid(tokens, extra, (h, (count - extra) // h), channels)
    raise ExportError(f"tensor {tokens} [N, {count}, {channels}]: no patch grid: no Conv output before it with "
                      f"h·w <= {count}, and {count} tokens are not an h x w grid of the input's proportions plus "
                      f"at most {MAX_EXTRA} extra tokens; give a 4-D tensor with --layer")


def add_patch_grid(model: onnx.ModelProto, grid: TokenGrid) -> str:
    """Put the patch grid into `model` (in place: the import's own copy) and return its name `X:patches`."""
    graph, x, extra = model.graph, grid.tokens, grid.extra
    (h, w), channels, count = grid.size, grid.channels, grid.extra + grid.size[0] * grid.size[1]
    name = x + SUFFIX
    rows, flat, joined = f"{x}:patch_rows", f"{x}:patch_rows_again", f"{x}:tokens_again"

    def constant(suffix: str, value: list[int]) -> str:
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), f"{x}:{suffix}"))
        return f"{x}:{suffix}"

    added = []
    if extra:
        added.append(helper.make_node("Slice", [x, constant("zero", [0]), constant("extra", [extra]),
                                                constant("axis", [1])], [f"{x}:extra_tokens"], name=f"{x}:extra_tokens"))
        added.append(helper.make_node("Slice", [x, f"{x}:extra", constant("count", [count]), f"{x}:axis"], [rows],
                                      name=rows))
    added.append(helper.make_node("Reshape", [rows if extra else x, constant("grid", [0, h, w, channels])], [name],
                                  name=name))
    added.append(helper.make_node("Reshape", [name, constant("rows", [0, h * w, channels])],
                                  [flat if extra else joined], name=flat if extra else joined))
    if extra:
        added.append(helper.make_node("Concat", [f"{x}:extra_tokens", flat], [joined], axis=1, name=joined))
    for node in graph.node:
        node.input[:] = [joined if value == x else value for value in node.input]
    nodes = list(graph.node)
    at = next(index for index, node in enumerate(nodes) if x in node.output) + 1
    del graph.node[:]
    graph.node.extend(nodes[:at] + added + nodes[at:])
    shapes = {name: ["N", h, w, channels], joined: ["N", count, channels]}
    if extra:
        shapes |= {f"{x}:extra_tokens": ["N", extra, channels], rows: ["N", h * w, channels], flat: ["N", h * w, channels]}
    graph.value_info.extend(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, dims) for tensor, dims in shapes.items())
    return name
