"""The runtime against TensorFlow: same numbers as a GradientTape Grad-CAM, and heatmaps that
point at the object for a model trained here (the pointing game)."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest
import skimage.data

from export.classifier import logits_model
from export.verify import reference_outputs, relative_error
from runtime import Explainer
from tests.keras_models import draw_shapes
from tests.pointing import pointing_game


def tensorflow_heatmaps(model, layer, preprocessing, image: np.ndarray, classes: list[int]) -> list[np.ndarray]:
    """The seed recipe's map: GradientTape Grad-CAM, divided by its max, bilinear to the image."""
    cams = reference_outputs(model, [layer], preprocessing, "logit", image[None].astype(np.float32), np.array([classes]))["cam"][0]
    height, width = image.shape[:2]
    return [cv2.resize(cam / max(cam.max(), 1e-7), (width, height), interpolation=cv2.INTER_LINEAR) for cam in cams]


@pytest.mark.parametrize("picture", ["random", "chelsea"])
def test_resnet50_heatmaps_equal_tensorflow_grad_cam(resnet50_export, random_resnet50, picture):
    if picture == "random":
        image = np.random.default_rng(9).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    else:
        image = cv2.resize(skimage.data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    explanation = Explainer(resnet50_export.onnx_path, device="cpu").explain(image, top_k=3, explain_top=3)
    classes = [class_map.class_index for class_map in explanation.maps]
    assert classes == [prediction.index for prediction in explanation.predictions]
    expected = tensorflow_heatmaps(random_resnet50, "conv5_block3_out", "caffe", image, classes)
    for actual, wanted in zip(explanation.heatmaps, expected):
        assert actual.shape == (224, 224)
        assert relative_error(actual, wanted) <= 1e-4


def test_user_model_heatmaps_equal_tensorflow_grad_cam(user_model):
    model = logits_model(keras.models.load_model(user_model.keras_path, compile=False))[0]
    image = cv2.resize(skimage.data.astronaut(), (48, 48), interpolation=cv2.INTER_AREA)
    explanation = Explainer(user_model.onnx_path, device="cpu").explain(image, class_index=[4, 0, 2])
    expected = tensorflow_heatmaps(model, "block_out", "tf", image, [4, 0, 2])
    for actual, wanted in zip(explanation.heatmaps, expected):
        assert relative_error(actual, wanted) <= 1e-4


def test_trained_model_classifies_and_points_at_the_object(shapes_model):
    images, labels, boxes = draw_shapes(200, seed=99)
    explainer = Explainer(shapes_model.onnx_path, device="cpu", batch_size=32)
    predicted = [e.predictions[0].index for e in explainer.explain(list(images), top_k=1)]
    assert np.mean(np.array(predicted) == labels) >= 0.9
    assert pointing_game(explainer, images, labels, boxes) >= 0.9


def test_pointing_survives_resizing_a_non_square_image(shapes_model):
    """Stretched 3x wide and 2x high: a transposed map or a misaligned resize would miss."""
    images, labels, boxes = draw_shapes(120, seed=98)
    stretched = np.stack([cv2.resize(image, (192, 128), interpolation=cv2.INTER_NEAREST) for image in images])
    scaled = boxes * np.array([3, 2, 3, 2]) + np.array([0, 0, 2, 1])
    explainer = Explainer(shapes_model.onnx_path, device="cpu", batch_size=32)
    assert pointing_game(explainer, stretched, labels, scaled) >= 0.9
