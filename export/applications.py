"""Built-in Keras applications: name -> constructor, preprocessing, input size, default layer.

Each entry builds the classifier with a linear (logit) head so that the wrapper can choose
between the logit and the softmax score. Adding a model is one line in `APPLICATIONS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import keras

from export.errors import ExportError


@dataclass(frozen=True)
class Application:
    """A Keras application and what the exported graph must know about it."""

    name: str
    constructor: Callable[..., keras.Model]
    preprocessing: str  # caffe | tf | torch | none (none: the model normalises itself)
    input_size: tuple[int, int]
    default_layer: str = "auto"


APPLICATIONS: dict[str, Application] = {
    app.name: app
    for app in (
        Application("resnet50", keras.applications.ResNet50, "caffe", (224, 224), "conv5_block3_out"),
        Application("resnet101", keras.applications.ResNet101, "caffe", (224, 224), "conv5_block3_out"),
        Application("resnet50v2", keras.applications.ResNet50V2, "tf", (224, 224), "post_relu"),
        Application("mobilenet_v2", keras.applications.MobileNetV2, "tf", (224, 224), "out_relu"),
        Application("vgg16", keras.applications.VGG16, "caffe", (224, 224), "block5_conv3"),
        Application("densenet121", keras.applications.DenseNet121, "torch", (224, 224), "relu"),
        Application("xception", keras.applications.Xception, "tf", (299, 299), "block14_sepconv2_act"),
        Application("inception_v3", keras.applications.InceptionV3, "tf", (299, 299), "mixed10"),
        Application("efficientnet_b0", keras.applications.EfficientNetB0, "none", (224, 224), "top_activation"),
    )
}

IMAGENET_WEIGHTS_HELP = (
    "download the ImageNet weights on a machine with internet into ~/.keras/models/, "
    "or pass --weights PATH (a Keras weights file), or --weights none for random weights"
)


def build_application(name: str, weights: str, seed: int) -> keras.Model:
    """Build a built-in application with logits out; weights is imagenet, none or a path."""
    app = APPLICATIONS[name]
    keras_weights: str | None
    if weights == "none":
        keras.utils.set_random_seed(seed)
        keras_weights = None
    elif weights == "imagenet":
        keras_weights = "imagenet"
    else:
        if not os.path.isfile(weights):
            raise ExportError(f"--weights {weights}: no such file")
        keras_weights = weights
    try:
        return app.constructor(weights=keras_weights, classifier_activation=None)
    except Exception as error:  # Keras raises many types for a failed download or a bad file.
        reason = " ".join(str(error).split())[:200]
        if weights == "imagenet":
            raise ExportError(
                f"could not get the ImageNet weights of {name} ({reason}): {IMAGENET_WEIGHTS_HELP}"
            ) from None
        raise ExportError(f"could not load weights {weights} into {name}: {reason}") from None
