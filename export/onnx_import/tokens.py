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
the logits only through the class token, and their gradients are all 0. There, `select_tokens_early` has
the per-token ops (last MLP, final norm) run on the selected class tokens only. In a Swin (the walk meets
the pooled 4-D map first) it is the NHWC map the last windowed attention reads, its last block's norm1
(`windowed_layer`): measured more faithful than the pooled final norm (docs/vit.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError

SUFFIX = ":patches"
MAX_EXTRA = 16  # extra tokens allowed where the grid comes from the input's proportions
LAYOUT_OPS = ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")
WINDOW_OPS = (*LAYOUT_OPS, "Pad", "Slice", "Concat")  # Swin's window partition (Concat: its cyclic shift)


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
    if first is None or len(shapes[first]) not in (3, 4):
        return None
    made_by = _producers(graph)
    softmaxes = [node for node in graph.node if node.op_type == "Softmax" and node.input[0] in dependent
                 and len(shapes.get(node.input[0]) or []) >= 3]
    if len(shapes[first]) == 4:
        return windowed_layer(graph, path, shapes, dependent, floats)
    if not softmaxes:
        return first
    order = {name: index for index, node in enumerate(graph.node) for name in node.output}
    found = [tensor for tensor in map(lambda name: _through_layout(name, shapes[first], shapes, made_by),
                                      _projection_inputs(softmaxes[-1], made_by, dependent, floats))
             if tensor is not None]
    tokens = max(found, key=lambda name: order.get(name, -1)) if found else first
    return _map_behind(tokens, shapes, made_by)


def windowed_layer(graph: onnx.GraphProto, path: list[str], shapes: dict, dependent: set[str],
                   floats: set[str]) -> str | None:
    """Swin's `--layer auto`, where the first tensor of 3 or more axes on `path` (the walk back from the
    logits) is a 4-D map: the NHWC map [N, h, w, C] (the same batch axis) that the query/key projections of
    the last attention read through a window partition only (`WINDOW_OPS`: pad, cyclic shift as Slice +
    Concat, reshapes and transposes putting the windows in the batch axis): torchvision's last `norm1`
    output; None where there is none (a CNN: its pooled map stays the layer)."""
    first = next((tensor for tensor in path if len(shapes.get(tensor) or []) >= 3), None)
    softmaxes = [node for node in graph.node if node.op_type == "Softmax" and node.input[0] in dependent
                 and len(shapes.get(node.input[0]) or []) >= 3]
    if first is None or len(shapes[first]) != 4 or not softmaxes:
        return None
    made_by, found, batch = _producers(graph), [], shapes[first][0]
    for tensor in _projection_inputs(softmaxes[-1], made_by, dependent, floats):
        windows = shapes.get(tensor) or []  # [N·windows, tokens, C] (MaxViT's [N, windows, tokens, C]: no map)
        if len(windows) != 3:
            continue
        while (node := made_by.get(tensor)) is not None and node.op_type in WINDOW_OPS:
            tensor = node.input[0]
        dims = shapes.get(tensor) or []
        if len(dims) == 4 and dims[0] == batch and None not in dims[1:] and dims[3] == windows[2]:
            found.append(tensor)
    return found[-1] if found and len(set(found)) == 1 else None


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
    """`tensor`, or the tensor it is a transpose/reshape of, with `shape`'s batch axis first [N, T, ·] (T may
    differ: BEiT pools the patch tokens without the class token); None if there is none (torchvision's
    MultiheadAttention projects the tokens transposed to [T, N, C])."""
    while len(shapes.get(tensor) or []) != 3 or shapes[tensor][0] != shape[0]:
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
                                                constant("axis", [1])], [f"{x}:extra_tokens"],
                                      name=f"{x}:extra_tokens"))
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
        shapes |= {f"{x}:extra_tokens": ["N", extra, channels], rows: ["N", h * w, channels],
                   flat: ["N", h * w, channels]}
    graph.value_info.extend(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, dims)
                            for tensor, dims in shapes.items())
    return name


PER_TOKEN_OPS = ("LayerNormalization", "MatMul", "Add", "Sub", "Mul", "Div", "Erf", "Gelu", "Relu", "Sigmoid", "Tanh",
                 "Sqrt", "Pow", "Cast", "Identity", "Dropout")


def select_tokens_early(model: onnx.ModelProto, shapes: dict, dependent: set[str]) -> int:
    """Where a class-token model selects its class (and distillation) tokens after per-token ops (the last
    block's MLP, the final norm: `PER_TOKEN_OPS` along the last axis), select them before those ops instead,
    in place: the same values, and the forward and backward passes after the last attention run on 1 or 2
    tokens, not T (the backward's MLP on T tokens of which T - 1 have a zero gradient cost a third of a
    ViT's backward pass). Returns the number of nodes moved."""
    graph = model.graph
    scalars = {init.name: int(numpy_helper.to_array(init)) for init in graph.initializer
               if not init.dims and init.data_type in (TensorProto.INT64, TensorProto.INT32)}
    scalars |= {node.output[0]: int(numpy_helper.to_array(node.attribute[0].t)) for node in graph.node
                if node.op_type == "Constant" and node.attribute[0].name == "value" and not node.attribute[0].t.dims
                and node.attribute[0].t.data_type in (TensorProto.INT64, TensorProto.INT32)}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    made_by = _producers(graph)
    moved = 0
    for tokens in dict.fromkeys(node.input[0] for node in graph.node if node.op_type == "Gather"):
        picks = readers.get(tokens, [])
        indices = [_token_index(node, scalars) for node in picks]
        if not picks or None in indices or len(shapes.get(tokens) or []) != 3 or shapes[tokens][1] is None:
            continue
        chain = _per_token_chain(tokens, shapes, dependent, made_by, readers, set(map(id, picks)),
                                 {value.name for value in graph.output})
        if not chain:
            continue
        first, count = min(indices), max(indices) - min(indices) + 1
        _select_before(graph, chain, picks, [index - first for index in indices], first, count, shapes)
        moved += len(chain)
    return moved


def _token_index(node: onnx.NodeProto, scalars: dict[str, int]) -> int | None:
    """The token a Gather along axis 1 at a constant 0-d index >= 0 selects, else None."""
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
    index = scalars.get(node.input[1]) if node.op_type == "Gather" and axis == 1 else None
    return index if index is not None and index >= 0 else None


def _per_token_chain(tokens: str, shapes: dict, dependent: set[str], made_by: dict, readers: dict, picks: set[int],
                     outputs: set[str]) -> list[onnx.NodeProto]:
    """The per-token nodes before `tokens` (back through per-token nodes) whose outputs only they and the
    picks read (no graph output), in graph order; [] where the node making `tokens` is not one of them."""
    chain: dict[int, onnx.NodeProto] = {}
    wanted = [tokens]
    while wanted:
        node = made_by.get(wanted.pop())
        if node is not None and id(node) not in chain and _per_token(node, shapes, dependent):
            chain[id(node)] = node
            wanted.extend(name for name in node.input if name in dependent)
    settled = False
    while not settled:  # drop nodes read from outside, until none is (their readers then read them whole)
        outside = [key for key, node in chain.items() if node.output[0] in outputs or any(
            id(reader) not in chain and id(reader) not in picks for reader in readers.get(node.output[0], []))]
        settled = not outside
        for key in outside:
            del chain[key]
    if id(made_by[tokens]) not in chain:
        return []
    order = {id(node): index for index, node in enumerate(made_by.values())}
    return sorted(chain.values(), key=lambda node: order[id(node)])


def _per_token(node: onnx.NodeProto, shapes: dict, dependent: set[str]) -> bool:
    """Whether `node` acts on each token alone: 3-D [N, T, ·] image-dependent inputs with the same N, T, and
    constants that do not vary along the token axis."""
    if node.op_type not in PER_TOKEN_OPS or len(node.output) != 1:
        return False
    variable = [name for name in node.input if name in dependent]
    if not variable or any(len(shapes.get(name) or []) != 3 for name in [*variable, node.output[0]]):
        return False
    if len({tuple(shapes[name][1:2]) for name in [*variable, node.output[0]]}) != 1:
        return False
    fixed = [shapes.get(name) for name in node.input if name and name not in dependent]  # weights: their shapes
    if None in fixed:
        return False
    if node.op_type == "MatMul":
        return node.input[0] in dependent and len(fixed) == 1 and len(fixed[0]) == 2
    if node.op_type == "LayerNormalization":
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
        return axis in (-1, 2) and all(len(dims) == 1 for dims in fixed)
    return all(len(dims) <= 1 or dims[-2] == 1 for dims in fixed)


def _select_before(graph: onnx.GraphProto, chain: list[onnx.NodeProto], picks: list[onnx.NodeProto],
                   indices: list[int], first: int, count: int, shapes: dict) -> None:
    """Replace `chain` and `picks` by: Slice of the chain's outside inputs to tokens first..first+count,
    the chain on them, and each pick as a Gather at its index in that slice."""
    made = {node.output[0] for node in chain}
    outside = list(dict.fromkeys(name for node in chain for name in node.input
                                 if name not in made and len(shapes.get(name) or []) == 3))
    tag = f":tokens{first}-{first + count - 1}"
    starts, ends, axis = (tag + suffix for suffix in ("/starts", "/ends", "/axis"))
    graph.initializer.extend([numpy_helper.from_array(np.array([first], np.int64), starts),
                              numpy_helper.from_array(np.array([first + count], np.int64), ends),
                              numpy_helper.from_array(np.array([1], np.int64), axis)])
    renamed = {name: name + tag for name in [*outside, *made]}
    added = [helper.make_node("Slice", [name, starts, ends, axis], [renamed[name]], name=renamed[name])
             for name in outside]
    for node in chain:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = (node.name or node.output[0]) + tag
        copy.input[:] = [renamed.get(name, name) for name in node.input]
        copy.output[:] = [renamed[node.output[0]]]
        added.append(copy)
    for pick, index in zip(picks, indices):
        constant = f"{pick.output[0]}{tag}/index"
        graph.initializer.append(numpy_helper.from_array(np.array(index, np.int64), constant))
        added.append(helper.make_node("Gather", [renamed[pick.input[0]], constant], list(pick.output), axis=1,
                                      name=pick.name or pick.output[0]))
    gone = {id(node) for node in [*chain, *picks]}
    nodes = list(graph.node)
    at = max(index for index, node in enumerate(nodes) if id(node) in gone)
    kept = [node for node in nodes[:at + 1] if id(node) not in gone]
    del graph.node[:]
    graph.node.extend(kept + added + nodes[at + 1:])
    graph.value_info.extend(
        helper.make_tensor_value_info(new, TensorProto.FLOAT,
                                      [d if d is not None else "N" for d in [shapes[old][0], count, *shapes[old][2:]]])
        for old, new in renamed.items())
