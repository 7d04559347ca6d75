"""The classifier's graph made fit for the import: a fixed height and width, any batch size, and a known
shape for every tensor.

- A model exported for a fixed batch (torch.onnx.export without dynamic axes) folds `x.view(x.size(0), -1)`
  or ShuffleNet's channel shuffle into Reshape targets that start with that batch size ([1, -1]); the
  contract takes any number of images, and the head's gradients run on K copies of the batch. Those
  first entries become 0 (copy the input's first dimension); the self-check then compares the result
  with the original model run at its own batch size.
- Where onnx's shape inference stops (ShuffleNet's channel split computes Slice ends from Shape), the
  missing shapes are measured: the model run once in onnxruntime, at batch sizes 1 and 2, with those
  tensors as outputs; a dimension that follows the batch size is left unknown, as inference leaves it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from onnx import helper, numpy_helper

from ..errors import ExportError, one_line, onnxruntime_line


def prepared(model: onnx.ModelProto, name: str, layout: str, size: tuple[int, int]) -> onnx.ModelProto:
    """A copy whose image input `name` is `size` high and wide with any batch size, shapes inferred
    and, where inference left them unknown, measured."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    image = next(value for value in copy.graph.input if value.name == name)
    dims = image.type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    if batch is not None:
        _free_batch(copy.graph, name, batch)
    dims[0].Clear()
    dims[0].dim_param = "N"
    for axis, value in zip((2, 3) if layout == "nchw" else (1, 2), size):
        dims[axis].Clear()
        dims[axis].dim_value = value
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, strict_mode=False, data_prop=True)
    except Exception as error:  # a model onnx cannot type is not one we can cut safely
        raise ExportError(f"onnx cannot infer the model's shapes ({one_line(error, 200)})") from None
    _measure_unknown_shapes(inferred, name, layout, size, batch)
    return inferred


def batch_hint(batch: int | None) -> str:
    """What to do when a model exported for a fixed batch does not run on other batch sizes."""
    if batch is None:
        return ""
    return (f"; the model was exported for a fixed batch of {batch}: export it with a dynamic batch "
            "(torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))")


def _free_batch(graph: onnx.GraphProto, image: str, batch: int) -> None:
    """Reshapes of image-dependent tensors to a constant target starting with `batch`: that entry
    becomes 0, the input's own first dimension."""
    constants = {init.name: init for init in graph.initializer}
    constants |= {node.output[0]: node.attribute[0].t for node in graph.node
                  if node.op_type == "Constant" and node.attribute[0].name == "value"}
    dependent = {image}
    for node in graph.node:
        if not any(name in dependent for name in node.input):
            continue
        dependent.update(node.output)
        allowzero = next((a.i for a in node.attribute if a.name == "allowzero"), 0)
        if node.op_type != "Reshape" or allowzero or node.input[1] not in constants:
            continue
        target = numpy_helper.to_array(constants[node.input[1]])
        if target.ndim == 1 and target.size > 1 and target[0] == batch:
            freed = f"{node.input[1]}/any_batch"
            graph.initializer.append(numpy_helper.from_array(np.concatenate([[0], target[1:]]).astype(target.dtype),
                                                             freed))
            node.input[1] = freed


def _measure_unknown_shapes(model: onnx.ModelProto, image: str, layout: str, size: tuple[int, int],
                            fixed_batch: int | None) -> None:
    """Fill in the shapes inference left unknown (beyond the batch axis), run at batch sizes 1 and 2."""
    graph = model.graph
    known = {value.name: value for value in [*graph.value_info, *graph.output]}
    unknown = [name for node in graph.node for name in node.output
               if name and not _complete_beyond_batch(known.get(name))]
    if not unknown:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    listed = {value.name for value in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(name, known[name].type.tensor_type.elem_type
                                                            if name in known else 0, None)
                              for name in unknown if name not in listed)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failure is reported in our own one line
    try:
        session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # a graph cycle, an op of a custom domain, dims that disagree with the data...
        raise ExportError(f"onnxruntime cannot load the model ({onnxruntime_line(error)})") from None
    runs = []
    for batch in (1, 2):
        shape = (batch, 3, *size) if layout == "nchw" else (batch, *size, 3)
        try:
            runs.append(session.run(unknown, {image: np.zeros(shape, np.float32)}))
        except Exception as error:
            raise ExportError(f"onnxruntime cannot run the model on {batch} image(s) of {size[0]}x{size[1]} "
                              f"({onnxruntime_line(error)}){batch_hint(fixed_batch)}") from None
    for value in [value for value in graph.value_info if value.name in unknown]:
        graph.value_info.remove(value)
    for name, one, two in zip(unknown, *runs):
        dims = [a if a == b else None for a, b in zip(one.shape, two.shape)]
        measured = helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(one.dtype), dims)
        output = next((value for value in graph.output if value.name == name), None)
        if output is not None:
            output.CopyFrom(measured)
        else:
            graph.value_info.append(measured)


def _complete_beyond_batch(value: onnx.ValueInfoProto | None) -> bool:
    if value is None or not value.type.tensor_type.HasField("shape"):
        return False
    return all(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim[1:])
