"""Self-check with no framework: the imported model against the original in onnxruntime, and its
gradients against central finite differences of the original head."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from .. import contract
from ..errors import ExportError, onnxruntime_line
from .graph import Classifier, Head
from .head import elem_types, head_inputs, head_model
from .shapes import batch_hint

MAX_RELATIVE_ERROR = 1e-4
FLOAT32_GRADIENT_LIMIT = 1e-2  # finite differences in float32 (no float64 kernels): rounding and kinks dominate
DIRECTIONS = 4
STEPS = {"float64": (1e-5, 1e-7), "float32": (1e-2, 3e-3, 1e-3)}  # finite-difference steps, times `_scales`


def self_check(
    imported: onnx.ModelProto, classifier: Classifier, head: Head,
    mean: tuple[float, ...], std: tuple[float, ...], bgr: bool, seed: int = 0,
) -> dict:
    """Relative error per output; ExportError when one is above its limit."""
    rng = np.random.default_rng(seed)
    height, width = classifier.input_size
    count = max(2, classifier.fixed_batch or 2)
    images = rng.uniform(0, 255, (count, height, width, 3)).astype(np.float32)
    class_index = np.array([[-1, (classifier.classes - 1) * (i % 2)] for i in range(count)], np.int64)
    ours = dict(zip(contract.OUTPUTS, _runner(imported, "the imported model", classifier)(
        list(contract.OUTPUTS), {contract.INPUT_IMAGE: images, contract.INPUT_CLASS_INDEX: class_index})))
    if not np.any(ours[contract.OUTPUT_GRADIENTS]):  # every map would be empty, and the check below prove nothing
        raise ExportError(f"self-check failed: the gradients at {head.target} are all 0 on random images (a "
                          "transformer's tokens after its last attention reach the logits only through the class "
                          "token; a zero-initialised head); explain an earlier tensor (--layer auto); nothing was written")
    reference = _reference(classifier, head, images, mean, std, bgr)
    expected_scores = np.take_along_axis(reference["logits"], ours[contract.OUTPUT_EXPLAINED_CLASS], axis=1)
    maps = reference["target"] if head.target_layout == "nhwc" else reference["target"].transpose(0, 2, 3, 1)
    errors = {
        contract.OUTPUT_PROBABILITIES: _relative(ours[contract.OUTPUT_PROBABILITIES], reference["probabilities"]),
        contract.OUTPUT_SCORE: _relative(ours[contract.OUTPUT_SCORE], expected_scores),
        contract.OUTPUT_FEATURE_MAPS: _relative(ours[contract.OUTPUT_FEATURE_MAPS], maps),
    }
    gradient_error, precision = _finite_differences(classifier, head, reference, ours, rng)
    errors[contract.OUTPUT_GRADIENTS] = gradient_error
    limits = {name: MAX_RELATIVE_ERROR for name in errors}
    limits[contract.OUTPUT_GRADIENTS] = _gradient_limit(precision)
    for name, error in errors.items():
        if not error <= limits[name]:
            raise ExportError(f"self-check failed: {name} is {error:.1e} relative from the original model "
                              f"(limit {limits[name]:.0e}); nothing was written")
    return {
        "reference": "the original ONNX model in onnxruntime; gradients: central finite differences "
                     f"in {DIRECTIONS} random directions ({precision}, the best of steps "
                     f"{', '.join(f'{step:g}' for step in STEPS[precision])} x the std of the target, or x 1 where those fail)",
        "outputs": {name: {"relative": float(error), "limit": limits[name]} for name, error in errors.items()},
    }


def _session(model: onnx.ModelProto) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failure is reported in our own one line
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _runner(model: onnx.ModelProto, what: str, classifier: Classifier):
    """run(names, feeds) for `model` in onnxruntime; ExportError (one line) where onnxruntime cannot."""
    def failed(error: Exception) -> ExportError:
        return ExportError(f"self-check: onnxruntime cannot run {what} ({onnxruntime_line(error)})"
                           f"{batch_hint(classifier.fixed_batch)}; nothing was written")

    try:
        session = _session(model)
    except Exception as error:
        raise failed(error) from None

    def run(names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return session.run(names, feeds)
        except Exception as error:
            raise failed(error) from None
    return run


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|."""
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale


def _reference(classifier: Classifier, head, images, mean, std, bgr: bool) -> dict[str, np.ndarray]:
    """The original model's output, logits, target tensor and the head's other inputs on `images`."""
    rgb = images[..., ::-1] if bgr else images
    order = [2, 1, 0] if bgr else [0, 1, 2]
    pixels = ((rgb - np.float32([mean[i] for i in order])) / np.float32([std[i] for i in order])).astype(np.float32)
    if classifier.layout == "nchw":
        pixels = pixels.transpose(0, 3, 1, 2)
    output = classifier.original.graph.output[0].name
    compared = list(dict.fromkeys([output, classifier.scores, head.target]))
    others = [name for name in head_inputs(classifier, head) if name not in compared]
    original = {name for node in classifier.original.graph.node for name in node.output}
    if head.target not in original:  # a transformer's patch grid (tokens.py): the model's own tensors
        compared.remove(head.target)
        others = [head.target, *others]
    if classifier.fixed_batch is None and not set(others) - original:
        values = _values(classifier.original, "the original model", compared + others, pixels, len(pixels),
                         classifier)
    else:  # the original at its own batch size; what the head reads besides, from the model that takes any
        # (and that has the tensors the import added: a transformer's patch grid, tokens.py)
        values = (_values(classifier.original, "the original model", compared, pixels,
                          classifier.fixed_batch or len(pixels), classifier)
                  | _values(classifier.model, "the model made batch-free", others, pixels, len(pixels), classifier))
    logits = values[classifier.scores].astype(np.float64)
    if classifier.squashed:  # the model's own probabilities
        probabilities = values[output].astype(np.float64)
    else:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    if classifier.binary:  # one sigmoid unit z, p: two classes (-z, z), (1 - p, p)
        logits, probabilities = np.concatenate([-logits, logits], 1), np.concatenate([1 - probabilities, probabilities], 1)
    return values | {"probabilities": probabilities, "logits": logits, "target": values[head.target]}


def _values(model: onnx.ModelProto, what: str, names: list[str], pixels: np.ndarray, step: int,
            classifier: Classifier) -> dict[str, np.ndarray]:
    """Tensors `names` of `model` on `pixels`, run `step` images at a time."""
    if not names:
        return {}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    types = elem_types(classifier.model)
    listed = {value.name for value in copy.graph.output}
    copy.graph.output.extend(onnx.helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None)
                             for name in names if name not in listed)
    run = _runner(copy, what, classifier)
    runs = [run(names, {classifier.input_name: np.ascontiguousarray(pixels[start:start + step])})
            for start in range(0, len(pixels), step)]
    # one run: as it is; several: batched tensors joined (a 0-d tensor has no batch axis: a constant, kept whole)
    return {name: parts[0] if len(parts) == 1 or not parts[0].ndim else np.concatenate(parts)
            for name, parts in zip(names, zip(*runs))}


def _finite_differences(classifier, head, reference: dict, ours: dict, rng) -> tuple[float, str]:
    """Max over random directions d of |(f(T + εd) - f(T - εd)) / 2ε - <gradients, d>| relative, for
    the best of a few steps ε (a step that crosses a ReLU's kink is off in every precision; a wrong
    gradient is off at every step). d is 0 where T is exactly 0 (a ReLU's zeros: ties of a MaxPool
    after it are not differentiable)."""
    extracted, inputs = head_model(classifier, head)
    run, precision = _head_runner(extracted, inputs, classifier.logits, reference, classifier)
    del extracted  # onnxruntime holds its own copy
    dtype = np.float64 if precision == "float64" else np.float32
    limit = _gradient_limit(precision)
    target = reference["target"]
    classes = ours[contract.OUTPUT_EXPLAINED_CLASS]
    gradients = ours[contract.OUTPUT_GRADIENTS].astype(np.float64)  # [N, K, h, w, C]
    worst = 0.0
    for _ in range(DIRECTIONS):
        direction = rng.standard_normal(target.shape) * (target != 0)
        nhwc = direction if head.target_layout == "nhwc" else direction.transpose(0, 2, 3, 1)
        analytic = np.einsum("nkhwc,nhwc->nk", gradients, nhwc)
        best = np.inf
        for scale in _scales(target):  # the next scale only where the steps of this one all fail
            for epsilon in (step * scale for step in STEPS[precision]):
                plus = run((target + epsilon * direction).astype(dtype))
                minus = run((target - epsilon * direction).astype(dtype))
                numeric = np.take_along_axis((plus - minus) / (2 * epsilon), classes, axis=1)
                best = min(best, _relative(numeric, analytic))
            if best <= limit:
                break
        worst = max(worst, best)
    return worst, precision


def _gradient_limit(precision: str) -> float:
    return MAX_RELATIVE_ERROR if precision == "float64" else FLOAT32_GRADIENT_LIMIT


def _scales(target: np.ndarray) -> tuple[float, ...]:
    """The target's std, then 1: where activations vanish (random weights, BatchNorm statistics from the
    init: torchvision's googlenet has std 5e-12 at inception5b), steps relative to the std are lost in the
    logits' rounding, even in float64."""
    return tuple(dict.fromkeys([float(np.std(target)) or 1.0, 1.0]))


def _head_runner(head: onnx.ModelProto, inputs: list[str], logits: str, reference: dict, classifier: Classifier):
    """Run the head on a target value (its other inputs from `reference`) in float64 where
    onnxruntime has the kernels (ops without one rewritten, `_with_double_kernel`), else in float32."""
    try:
        run, precision = _runner(_as_float64(head), "the head in float64", classifier), "float64"
    except ExportError:  # an op without a double kernel and no rewrite
        run, precision = _runner(head, "the head alone", classifier), "float32"
    dtype = np.float64 if precision == "float64" else np.float32
    others = {name: reference[name].astype(dtype) if reference[name].dtype == np.float32 else reference[name]
              for name in inputs[1:]}
    return (lambda value: run([logits], {inputs[0]: value} | others)[0].astype(np.float64)), precision


def _as_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy computing in float64: float initializers, values, constants and Cast targets become double;
    some ops without a double kernel are rewritten (`_with_double_kernel`)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[index].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float64), init.name))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    opset = next(o.version for o in copy.opset_import if o.domain in ("", "ai.onnx"))
    dims = {init.name: list(init.dims) for init in graph.initializer}
    nodes = [rewritten for node in graph.node for rewritten in _with_double_kernel(node, opset, dims)]
    del graph.node[:]
    graph.node.extend(nodes)
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.DOUBLE
            if node.op_type == "Constant" and attribute.name == "value" and attribute.t.data_type == TensorProto.FLOAT:
                attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float64)))
    return copy


def _with_double_kernel(node: onnx.NodeProto, opset: int, dims: dict[str, list[int]]) -> list[onnx.NodeProto]:
    """`node`, or the same function with ops that have double kernels: GlobalAveragePool as ReduceMean,
    AveragePool as a sum of strided Slices (`_average_pool`), a plain 1x1 Conv as Einsum (+ bias),
    HardSigmoid and HardSwish from Mul, Add and Clip, Erf and Gelu from Exp (`_erf_like`)."""
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    out, make = node.output[0], helper.make_node
    if node.op_type in ("Erf", "Gelu"):
        return _erf_like(node, values)
    if node.op_type == "AveragePool" and opset >= 11:
        rewritten = _average_pool(node, values)
        if rewritten:
            return rewritten
    if node.op_type == "GlobalAveragePool":
        if opset >= 18:
            axes = make("Constant", [], [out + "/axes"], value=numpy_helper.from_array(np.array([2, 3], np.int64)))
            return [axes, make("ReduceMean", [node.input[0], out + "/axes"], [out])]
        return [make("ReduceMean", [node.input[0]], [out], axes=[2, 3])]
    if (node.op_type == "Conv" and dims.get(node.input[1], [])[2:] == [1, 1] and values.get("group", 1) == 1
            and set(values.get("strides", [1])) == {1} and set(values.get("pads", [0])) == {0}
            and values.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID")):
        if len(node.input) < 3 or not node.input[2]:
            return [make("Einsum", node.input[:2], [out], equation="nchw,mcij->nmhw")]
        shape = make("Constant", [], [out + "/shape"], value=numpy_helper.from_array(np.array([-1, 1, 1], np.int64)))
        return [make("Einsum", node.input[:2], [out + "/product"], equation="nchw,mcij->nmhw"), shape,
                make("Reshape", [node.input[2], out + "/shape"], [out + "/bias"]),
                make("Add", [out + "/product", out + "/bias"], [out])]
    if node.op_type in ("HardSigmoid", "HardSwish"):
        alpha, beta = (values.get("alpha", 0.2), values.get("beta", 0.5)) if node.op_type == "HardSigmoid" else (1 / 6, 0.5)
        constant = lambda name, v: make("Constant", [], [out + name], value=numpy_helper.from_array(np.array(v)))
        gate = out + "/gate" if node.op_type == "HardSwish" else out
        rewritten = [constant("/alpha", alpha), constant("/beta", beta), constant("/zero", 0.0),
                     constant("/one", 1.0), make("Mul", [node.input[0], out + "/alpha"], [out + "/scaled"]),
                     make("Add", [out + "/scaled", out + "/beta"], [out + "/shifted"]),
                     make("Clip", [out + "/shifted", out + "/zero", out + "/one"], [gate])]
        return rewritten + ([make("Mul", [node.input[0], gate], [out])] if node.op_type == "HardSwish" else [])
    return [node]


ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
        -0.82215223, 0.17087277)  # Numerical Recipes' erfc: t exp(-z² + P(t)), t = 1 / (1 + z/2), error < 1.2e-7


def _erf_like(node: onnx.NodeProto, values: dict) -> list[onnx.NodeProto]:
    """Erf (onnxruntime has no double kernel: transformers' GELU), or Gelu, from Abs, Exp and a polynomial:
    relative error < 1.2e-7, smooth, so float64 finite differences of the head stay within 1e-6 of its
    derivative where float32 ones were off by 3e-2 (timm BEiT)."""
    out, make = node.output[0], helper.make_node
    constant = lambda name, v: make("Constant", [], [out + name], value=numpy_helper.from_array(np.array(v, np.float64)))  # noqa: E731
    approximate = values.get("approximate", b"none")
    if node.op_type == "Gelu" and (approximate.decode() if isinstance(approximate, bytes) else approximate) != "none":
        return [node]  # tanh form: Tanh has a double kernel, but the op does not; left to the float32 fallback
    x = node.input[0]
    nodes = [constant("/half", 0.5), constant("/one", 1.0)]
    if node.op_type == "Gelu":
        nodes += [constant("/root_half", 1 / math.sqrt(2)), make("Mul", [x, out + "/root_half"], [out + "/x"])]
        x = out + "/x"
    nodes += [make("Abs", [x], [out + "/z"]), make("Mul", [out + "/z", out + "/half"], [out + "/z2"]),
              make("Add", [out + "/z2", out + "/one"], [out + "/t1"]), make("Reciprocal", [out + "/t1"], [out + "/t"])]
    polynomial = out + "/c9"
    nodes.append(constant("/c9", ERFC[9]))
    for index in range(8, -1, -1):  # Horner: P = c0 + t (c1 + t (... + t c9))
        nodes += [constant(f"/c{index}", ERFC[index]),
                  make("Mul", [polynomial, out + "/t"], [out + f"/m{index}"]),
                  make("Add", [out + f"/m{index}", out + f"/c{index}"], [out + f"/p{index}"])] if index else [
                  constant("/c0", ERFC[0]), make("Add", [out + "/m0", out + "/c0"], [out + "/p0"])]
        if index:
            polynomial = out + f"/p{index}"
        else:
            nodes.insert(-2, make("Mul", [polynomial, out + "/t"], [out + "/m0"]))
    nodes += [make("Mul", [out + "/z", out + "/z"], [out + "/zz"]), make("Sub", [out + "/p0", out + "/zz"], [out + "/e"]),
              make("Exp", [out + "/e"], [out + "/exp"]), make("Mul", [out + "/t", out + "/exp"], [out + "/erfc"]),
              make("Sub", [out + "/one", out + "/erfc"], [out + "/erf_abs"]), make("Sign", [x], [out + "/sign"])]
    if node.op_type == "Erf":
        return nodes + [make("Mul", [out + "/sign", out + "/erf_abs"], [out])]
    return nodes + [make("Mul", [out + "/sign", out + "/erf_abs"], [out + "/erf"]),
                    make("Add", [out + "/erf", out + "/one"], [out + "/erf1"]),
                    make("Mul", [node.input[0], out + "/erf1"], [out + "/xerf1"]),
                    make("Mul", [out + "/xerf1", out + "/half"], [out])]


def _average_pool(node: onnx.NodeProto, values: dict) -> list[onnx.NodeProto]:
    """AveragePool (explicit or no pads, no dilation, no ceil_mode) as the sum over the kernel's offsets of
    strided Slices of the (zero-padded) input, divided by the window's size, or, where pads are left out of
    the count, by the same sum over a padded tensor of ones. [] where the attributes are outside that."""
    kernel = [int(k) for k in values.get("kernel_shape", [])]
    rank = len(kernel)
    strides = [int(s) for s in values.get("strides", [1] * rank)]
    pads = [int(p) for p in values.get("pads", [0] * 2 * rank)]
    if (not kernel or values.get("ceil_mode", 0) or set(values.get("dilations", [1])) != {1}
            or values.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID")):
        return []
    if values.get("auto_pad") in (b"VALID", "VALID"):
        pads = [0] * 2 * rank
    x, out, make = node.input[0], node.output[0], helper.make_node
    tensor = lambda name, value: make("Constant", [], [out + name], value=numpy_helper.from_array(np.array(value)))
    nodes = []
    padded = any(pads)
    if padded:
        nodes += [tensor("/pads", np.array([0, 0, *pads[:rank], 0, 0, *pads[rank:]], np.int64)),
                  make("Pad", [x, out + "/pads"], [out + "/padded"])]
    source = out + "/padded" if padded else x
    axes = np.arange(2, 2 + rank, dtype=np.int64)
    nodes += [tensor("/axes", axes), tensor("/steps", np.array(strides, np.int64))]
    ends_last = np.iinfo(np.int64).max

    def window_sum(tensor_name: str, tag: str) -> tuple[list[onnx.NodeProto], str]:
        made, parts = [], []
        for index, offset in enumerate(np.ndindex(*kernel)):
            # from the offset, every stride-th element up to padded size - (kernel - 1 - offset)
            ends = [o - (k - 1) if o < k - 1 else ends_last for o, k in zip(offset, kernel)]
            name = f"{out}/{tag}{index}"
            made += [tensor(f"/{tag}{index}/starts", np.array(offset, np.int64)),
                     tensor(f"/{tag}{index}/ends", np.array(ends, np.int64)),
                     make("Slice", [tensor_name, name + "/starts", name + "/ends", out + "/axes", out + "/steps"],
                          [name])]
            parts.append(name)
        made.append(make("Sum", parts, [f"{out}/{tag}sum"]))
        return made, f"{out}/{tag}sum"

    summed, total = window_sum(source, "window")
    nodes += summed
    if padded and not values.get("count_include_pad", 0):
        nodes += [tensor("/zero", 0.0), tensor("/one", 1.0), make("Mul", [x, out + "/zero"], [out + "/zeros"]),
                  make("Add", [out + "/zeros", out + "/one"], [out + "/ones"]),
                  make("Pad", [out + "/ones", out + "/pads"], [out + "/ones_padded"])]
        counted, count = window_sum(out + "/ones_padded", "count")
        return nodes + counted + [make("Div", [total, count], [out])]
    return nodes + [tensor("/size", float(np.prod(kernel))), make("Div", [total, out + "/size"], [out])]
