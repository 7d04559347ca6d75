"""The writer of backward nodes: appends ONNX nodes and constants with fresh names, and knows the
head's static shapes and constant values. Used by the VJP rules (`vjp.py`) and `autodiff.py`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import ExportError


class Emitter:
    """Appends backward nodes and constants with fresh names; knows static shapes and constant values."""

    def __init__(self, prefix: str, opset: int, shapes: dict[str, list[int | None]],
                 constants: dict[str, np.ndarray]) -> None:
        self.prefix, self.opset, self.shapes, self.constants = prefix, opset, shapes, constants
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._made = 0

    def _fresh(self, hint: str) -> str:
        self._made += 1
        return f"{self.prefix}{hint}_{self._made}"

    def op(self, op_type: str, *inputs: str, **attributes) -> str:
        """One node with one output; returns the output's name."""
        output = self._fresh(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def const(self, value, dtype=np.float32) -> str:
        name = self._fresh("const")
        self.initializers.append(onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def shape(self, name: str) -> list[int | None]:
        if name not in self.shapes:
            raise ExportError(f"tensor {name}: its shape is unknown; the head cannot be differentiated")
        return self.shapes[name]

    def value(self, name: str) -> np.ndarray | None:
        """The value of a constant input (initializer or Constant node), else None."""
        return self.constants.get(name)

    def cast_float(self, name: str) -> str:
        return self.op("Cast", name, to=TensorProto.FLOAT)

    def reduce_sum(self, name: str, axes: Sequence[int], keepdims: int) -> str:
        return self.op("ReduceSum", name, self.const(list(axes), np.int64), keepdims=keepdims)

    def unsqueeze(self, name: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", name, self.const(list(axes), np.int64))

    def like(self, gradient: str, x: str, y: str) -> str:
        """`gradient` (shaped like the broadcast result y) summed back to x's shape."""
        x_shape, y_shape = self.shape(x), self.shape(y)
        lead = len(y_shape) - len(x_shape)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(x_shape) if d == 1 and y_shape[lead + i] != 1]
        if not axes:
            return gradient
        summed = self.reduce_sum(gradient, axes, keepdims=1)
        return self.op("Reshape", summed, self.op("Shape", x))

    def total(self, names: list[str]) -> str:
        return names[0] if len(names) == 1 else self.op("Sum", *names)
