"""Built-in Keras applications: name -> constructor, preprocessing, input size, default layer.

Each entry builds the classifier with a linear (logit) head so that the wrapper can choose
between the logit and the softmax score. Adding a model is one line in `APPLICATIONS`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

import keras

from .errors import ExportError, one_line


@dataclass(frozen=True)
class Application:
    """A Keras application and what the exported graph must know about it."""

    name: str
    constructor: Callable[..., keras.Model]
    preprocessing: str  # caffe | tf | torch | none (none: the model normalises itself)
    input_size: tuple[int, int]
    default_layer: str = "auto"


def _fixed_size(constructor: Callable[..., keras.Model], size: int) -> Callable[..., keras.Model]:
    """MobileNetV3 builds with an [N, None, None, 3] input unless told its size."""

    def build(**kwargs: object) -> keras.Model:
        return constructor(input_shape=(size, size, 3), **kwargs)

    return build


_A = keras.applications
APPLICATIONS: dict[str, Application] = {
    app.name: app
    for app in (
        Application("resnet50", _A.ResNet50, "caffe", (224, 224), "conv5_block3_out"),
        Application("resnet101", _A.ResNet101, "caffe", (224, 224), "conv5_block3_out"),
        Application("resnet50v2", _A.ResNet50V2, "tf", (224, 224), "post_relu"),
        Application("mobilenet_v2", _A.MobileNetV2, "tf", (224, 224), "out_relu"),
        Application("mobilenet_v3_small", _fixed_size(_A.MobileNetV3Small, 224), "none", (224, 224)),
        Application("mobilenet_v3_large", _fixed_size(_A.MobileNetV3Large, 224), "none", (224, 224)),
        Application("efficientnet_b0", _A.EfficientNetB0, "none", (224, 224), "top_activation"),
        Application("efficientnet_v2_b0", _A.EfficientNetV2B0, "none", (224, 224), "top_activation"),
        Application("densenet121", _A.DenseNet121, "torch", (224, 224), "relu"),
        Application("xception", _A.Xception, "tf", (299, 299), "block14_sepconv2_act"),
        Application("inception_v3", _A.InceptionV3, "tf", (299, 299), "mixed10"),
        Application("vgg16", _A.VGG16, "caffe", (224, 224), "block5_conv3"),  # the paper's layer, not the pool
        Application("convnext_tiny", _A.ConvNeXtTiny, "none", (224, 224)),
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
        with _cached_weights_checked_first():
            return app.constructor(weights=keras_weights, classifier_activation=None)
    except ExportError:
        raise
    except Exception as error:  # Keras raises many types for a failed download or a bad file.
        reason = one_line(error, 200)
        if weights == "imagenet":
            raise ExportError(
                f"could not get the ImageNet weights of {name} ({reason}): {IMAGENET_WEIGHTS_HELP}"
            ) from None
        raise ExportError(f"could not load weights {weights} into {name}: {reason}") from None


@contextlib.contextmanager
def _cached_weights_checked_first() -> Iterator[None]:
    """Within the block, a weights file already in Keras' cache whose hash does not match is
    refused with its path, and kept. Keras' own get_file would try to download it again and,
    offline, delete it: the user who had just put it there would lose it, with a message that
    says to do again what they just did."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    get_file = file_utils.get_file

    def checked(fname=None, origin=None, *args, cache_subdir="datasets", file_hash=None,
                hash_algorithm="auto", cache_dir=None, **options):
        folder = os.path.join(os.path.expanduser(cache_dir or config.keras_home()), cache_subdir)
        path = os.path.join(folder, fname or "")
        if fname and file_hash and os.path.isfile(path) and not file_utils.validate_file(path, file_hash, hash_algorithm):
            raise ExportError(
                f"{path}: found, but it is not the published file (its hash does not match; a truncated "
                f"or corrupt download?); it was left in place: download it again from {origin} "
                f"({os.path.getsize(path)} bytes now), or pass a weights file with --weights PATH"
            )
        return get_file(fname, origin, *args, cache_subdir=cache_subdir, file_hash=file_hash,
                        hash_algorithm=hash_algorithm, cache_dir=cache_dir, **options)

    file_utils.get_file = checked
    try:
        yield
    finally:
        file_utils.get_file = get_file
