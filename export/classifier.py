"""Load the classifier to export: a built-in application or a user's `.keras` file.

Whatever the source, the result is a `Classifier`: a Keras model whose output is the
pre-softmax logits, plus what the exported graph must know to take raw RGB pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import keras
import numpy as np

from .applications import APPLICATIONS, build_application
from .errors import ExportError, one_line
from .labels import labels_for
from .preprocessing import PREPROCESSING


@dataclass(frozen=True)
class Classifier:
    """A logit-output Keras model and its description."""

    name: str
    model: keras.Model
    preprocessing: str
    input_size: tuple[int, int]
    labels: list[str]
    default_layer: str
    weights_source: str
    random_weights: bool = False  # built with --weights none: its maps and predictions mean nothing
    activation: str = "softmax"  # what turns the logits into probabilities: softmax, or sigmoid per class


def load_classifier(
    model: str, weights: str, preprocessing: str | None, labels_path: str | None, seed: int
) -> Classifier:
    """Build `model` (a built-in name or a .keras path) with logits out."""
    if model in APPLICATIONS:
        app = APPLICATIONS[model]
        keras_model = build_application(model, weights, seed)
        freeze_normalization(keras_model)
        labels = labels_for(labels_path, int(keras_model.output.shape[-1]))
        source = "none (random, seed %d)" % seed if weights == "none" else weights
        return Classifier(
            name=model,
            model=keras_model,
            preprocessing=preprocessing or app.preprocessing,
            input_size=app.input_size,
            labels=labels,
            default_layer=app.default_layer,
            weights_source=source,
            random_weights=weights == "none",
        )
    if not model.endswith(".keras"):
        known = ", ".join(APPLICATIONS)
        raise ExportError(f"--model {model}: not a built-in model ({known}) nor a .keras file")
    if not os.path.isfile(model):
        raise ExportError(f"--model {model}: no such file")
    if weights != "imagenet":
        raise ExportError("--weights applies to built-in models; a .keras file carries its own")
    if preprocessing is None:
        raise ExportError(
            f"--model {model}: say what the graph must do to raw 0..255 RGB pixels with "
            f"--preprocessing {'|'.join(PREPROCESSING)}"
        )
    try:
        keras_model = keras.models.load_model(model, compile=False)
    except Exception as error:
        raise ExportError(f"--model {model}: Keras cannot load it ({one_line(error)})") from None
    if len(keras_model.outputs) != 1:
        raise ExportError(
            f"--model {model}: has {len(keras_model.outputs)} outputs; onnxcam explains a classifier "
            "with one output of class scores (build a model that returns only that one)"
        )
    input_size = _static_input_size(keras_model, model)
    freeze_normalization(keras_model)
    logits, activation = logits_model(keras_model)
    classes = int(logits.output.shape[-1])
    if classes == 1 and activation != "sigmoid":
        raise ExportError(
            f"--model {model}: its output has 1 unit and no sigmoid; onnxcam explains classifiers "
            "(a regression is not one; a binary classifier ends in Dense(1, sigmoid) or Dense(2, softmax))"
        )
    binary = classes == 1
    if binary:
        logits, classes = binary_as_two_classes(logits), 2
    labels = labels_for(labels_path, classes, binary) if labels_path else [f"class {i}" for i in range(classes)]
    return Classifier(
        name=os.path.basename(model),
        model=logits,
        preprocessing=preprocessing,
        input_size=input_size,
        labels=labels,
        default_layer="auto",
        weights_source=os.path.basename(model),
        activation=activation,
    )


def binary_as_two_classes(model: keras.Model) -> keras.Model:
    """One sigmoid unit z -> two classes with logits (-z, z): their sigmoids are exactly 1 - p and
    p, and the map of class 0 is the evidence against class 1. A fixed Dense(2), not a Concatenate:
    tf2onnx cannot convert ConcatOffset, the op in Concatenate's gradient."""
    signs = keras.layers.Dense(2, use_bias=False, trainable=False, name="onnxcam_binary_as_two_classes")
    logits = signs(model.output)
    signs.set_weights([np.array([[-1.0, 1.0]], np.float32)])
    return keras.Model(model.inputs, logits)


def freeze_normalization(model: keras.Model) -> None:
    """Make each Normalization layer's mean and variance plain arrays.

    Keras keeps them as eager tensors; traced, those become captured inputs and tf2onnx
    turns them into extra required ONNX inputs. Arrays are embedded as constants instead.
    """
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Normalization) and layer.built:
            for name in ("mean", "variance"):
                value = getattr(layer, name, None)
                if value is not None and not isinstance(value, keras.Variable):
                    setattr(layer, name, np.asarray(value))


def logits_model(model: keras.Model) -> tuple[keras.Model, str]:
    """The model with its trailing softmax or sigmoid taken off (logits out), and which it was
    ("softmax" also for a model that already ends in logits)."""
    last = model.layers[-1]
    for activation in ("softmax", "sigmoid"):
        if _is_activation_layer(last, activation):
            return keras.Model(model.inputs, last.input), activation
        if _is(getattr(last, "activation", None), activation):
            last.activation = keras.activations.linear  # our own loaded copy: safe to change
            return model, activation
    return model, "softmax"


def _is(activation: object, name: str) -> bool:
    return getattr(activation, "__name__", "") == name


def _is_activation_layer(layer: keras.layers.Layer, name: str) -> bool:
    if name == "softmax" and isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and _is(layer.activation, name)


def _static_input_size(model: keras.Model, path: str) -> tuple[int, int]:
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[3] != 3 or None in shape[1:3]:
        raise ExportError(
            f"--model {path}: needs one input of fixed size [N, H, W, 3], got {shape}"
        )
    return int(shape[1]), int(shape[2])
