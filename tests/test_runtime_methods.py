"""CAM methods against plain numpy formulas; Grad-CAM fetches only the graph's cam."""

import numpy as np
import onnxruntime as ort
import pytest

from runtime import contract
from runtime.explainer import Explainer
from runtime.methods import METHODS, GradCam, WeightedCam
from tests.fake_model import blob_image, write_fake_model

EPS = 1e-7


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("model") / "fake.onnx")


@pytest.fixture(scope="module")
def outputs(model_path):
    """All outputs of the fake model for two images, three classes each."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    feeds = {contract.INPUT_IMAGE: images, contract.INPUT_CLASS_INDEX: np.array([[-1, 2, 0], [1, -1, -1]])}
    return dict(zip(contract.OUTPUTS, session.run(list(contract.OUTPUTS), feeds), strict=True))


@pytest.fixture
def random_outputs():
    """Feature maps and gradients with no structure, signs mixed: [N=2, K=3, h=4, w=5, C=6]."""
    rng = np.random.default_rng(6)
    return {
        contract.OUTPUT_FEATURE_MAPS: rng.random((2, 4, 5, 6), dtype=np.float32),
        contract.OUTPUT_GRADIENTS: rng.normal(size=(2, 3, 4, 5, 6)).astype(np.float32),
    }


def grad_cam_by_hand(feature_maps, gradients, n, k):
    """Grad-CAM for one image and class, written out with loops over channels."""
    pooled = gradients[n, k].mean(axis=(0, 1))
    cam = sum(pooled[c] * feature_maps[n, :, :, c] for c in range(feature_maps.shape[-1]))
    return np.maximum(cam, 0)


def test_gradcam_reads_the_graphs_cam_which_is_the_grad_cam_formula(outputs):
    maps = GradCam().raw_maps({contract.OUTPUT_CAM: outputs[contract.OUTPUT_CAM]})
    assert maps.shape == (2, 3, 8, 8)
    for n in range(2):
        for k in range(3):
            expected = grad_cam_by_hand(
                outputs[contract.OUTPUT_FEATURE_MAPS], outputs[contract.OUTPUT_GRADIENTS], n, k
            )
            np.testing.assert_allclose(maps[n, k], expected, rtol=1e-5, atol=1e-7)


def test_gradcam_asks_only_for_the_cam_output():
    assert GradCam.required_outputs == (contract.OUTPUT_CAM,)


def test_explainer_fetches_only_predictions_and_cam(model_path):
    explainer = Explainer(model_path, device="cpu")
    fetched = []

    class RecordingSession:
        def __init__(self, session):
            self.session = session

        def run(self, output_names, feeds):
            fetched.append(list(output_names))
            return self.session.run(output_names, feeds)

    explainer._session = RecordingSession(explainer._session)
    explainer.explain(blob_image(32, 32, (0, 0, 8, 8)))
    assert fetched == [[contract.OUTPUT_PROBABILITIES, contract.OUTPUT_EXPLAINED_CLASS, contract.OUTPUT_CAM]]


def test_weighted_cam_with_pooled_gradients_equals_the_graphs_cam(outputs):
    class PooledGradients(WeightedCam):
        name = "pooled"

        def cam_weights(self, outputs):
            return outputs[contract.OUTPUT_GRADIENTS].mean(axis=(2, 3))

    np.testing.assert_allclose(
        PooledGradients().raw_maps(outputs), outputs[contract.OUTPUT_CAM], rtol=1e-5, atol=1e-7
    )


def by_hand(method, feature_maps, gradients, n, k):
    """Each method's formula for one image and class, from its paper's definition."""
    A, g = feature_maps[n].astype(np.float64), gradients[n, k].astype(np.float64)  # [h, w, C]
    channels = range(A.shape[-1])
    if method == "gradcam++":
        alpha = g**2 / (2 * g**2 + A.sum(axis=(0, 1)) * g**3 + EPS)
        alpha[g == 0] = 0
        weights = [(np.maximum(g[..., c], 0) * alpha[..., c]).sum() for c in channels]
        cam = sum(weights[c] * A[..., c] for c in channels)
    elif method == "xgradcam":
        weights = [(g[..., c] * A[..., c]).sum() / (A[..., c].sum() + EPS) for c in channels]
        cam = sum(weights[c] * A[..., c] for c in channels)
    elif method == "hirescam":
        cam = sum(g[..., c] * A[..., c] for c in channels)
    elif method == "layercam":
        cam = sum(np.maximum(g[..., c], 0) * A[..., c] for c in channels)
    return np.maximum(cam, 0)


@pytest.mark.parametrize("name", ["gradcam++", "xgradcam", "hirescam", "layercam"])
def test_gradient_methods_match_their_formulas(name, random_outputs):
    method = METHODS[name]()
    assert set(method.required_outputs) == {contract.OUTPUT_FEATURE_MAPS, contract.OUTPUT_GRADIENTS}
    maps = method.raw_maps(random_outputs)
    assert maps.shape == (2, 3, 4, 5) and maps.dtype == np.float32 and maps.any()
    for n in range(2):
        for k in range(3):
            expected = by_hand(
                name,
                random_outputs[contract.OUTPUT_FEATURE_MAPS],
                random_outputs[contract.OUTPUT_GRADIENTS],
                n,
                k,
            )
            np.testing.assert_allclose(maps[n, k], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_finds_the_blob_through_the_explainer(name, model_path):
    explainer = Explainer(model_path, device="cpu", method=name)
    explanation = explainer.explain(blob_image(64, 64, (40, 8, 56, 24)), class_index=0)
    x, y = explanation.maps[0].peak
    assert 40 <= x < 56 and 8 <= y < 24
