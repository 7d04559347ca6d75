"""CAM methods against plain numpy formulas written out here, on the fake model's outputs and on
random feature maps and gradients; Score-CAM against a loop of onnxruntime runs; what each fetches."""

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from runtime import contract, render
from runtime.explainer import PREDICTION_OUTPUTS, Explainer
from runtime.methods import METHODS, GradCam, LayerInputs, Options, WeightedCam, first_component
from tests.fake_model import blob_image, write_fake_model

PLUS_PLUS_EPS = 1e-6  # pytorch-grad-cam's, in Grad-CAM++'s alpha
EPS = 1e-7  # pytorch-grad-cam's, in XGrad-CAM's denominator
GRADIENT_METHODS = ["gradcam++", "xgradcam", "hirescam", "layercam"]
WEIGHTED_METHODS = ["gradcam", *GRADIENT_METHODS, "scorecam"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("model") / "fake.onnx")


@pytest.fixture(scope="module")
def session(model_path):
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def fake_outputs(session, images):
    """All outputs of the fake model for two images, three classes each."""
    feeds = {contract.INPUT_IMAGE: images, contract.INPUT_CLASS_INDEX: np.array([[-1, 2, 0], [1, -1, -1]])}
    return dict(zip(contract.OUTPUTS, session.run(list(contract.OUTPUTS), feeds), strict=True))


@pytest.fixture(scope="module")
def random_outputs():
    """Feature maps and gradients with no structure, gradient signs mixed: [N=2, K=3, h=4, w=5, C=6]."""
    rng = np.random.default_rng(6)
    feature_maps = rng.random((2, 4, 5, 6), dtype=np.float32)
    gradients = rng.normal(size=(2, 3, 4, 5, 6)).astype(np.float32)
    pooled = gradients.mean(axis=(2, 3))
    return {
        contract.OUTPUT_FEATURE_MAPS: feature_maps,
        contract.OUTPUT_GRADIENTS: gradients,
        contract.OUTPUT_POOLED_GRADIENTS: pooled,
        contract.OUTPUT_CAM: np.maximum(np.einsum("nkc,nhwc->nkhw", pooled, feature_maps), 0),
        contract.OUTPUT_EXPLAINED_CLASS: np.array([[0, 1, 2], [3, 2, 1]]),
    }


@pytest.fixture(params=["fake", "random"])
def outputs(request, fake_outputs, random_outputs):
    return fake_outputs if request.param == "fake" else random_outputs


def score_run(session):
    """What the explainer hands a method: the fake model's predictions for other images."""

    def run(images, class_index):
        feeds = {contract.INPUT_IMAGE: images, contract.INPUT_CLASS_INDEX: class_index}
        return dict(zip(PREDICTION_OUTPUTS, session.run(list(PREDICTION_OUTPUTS), feeds), strict=True))

    return run


def layer(outputs, images=None, run=None, batch_size=8) -> LayerInputs:
    return LayerInputs(outputs, images, run, batch_size)


def principal_projection(matrix: np.ndarray) -> np.ndarray:
    """[positions, channels] -> [positions]: centred, projected on the top eigenvector of its
    covariance (eigh, not SVD), signed to agree with the rows' magnitudes (sums of |x|)."""
    centred = matrix - matrix.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T.astype(np.float64) @ centred)
    projection = centred @ vectors[:, -1]
    return projection if projection @ np.abs(matrix).sum(axis=1) >= 0 else -projection


def weighted_activations(method, feature_maps, gradients, n, k):
    """[h, w, C]: each method's weights times the activations, from its paper's definition."""
    A, g = feature_maps[n].astype(np.float64), gradients[n, k].astype(np.float64)  # [h, w, C]
    channels = range(A.shape[-1])
    if method == "gradcam":
        weights = [g[..., c].mean() for c in channels]
    elif method == "gradcam++":
        alpha = g**2 / (2 * g**2 + A.sum(axis=(0, 1)) * g**3 + PLUS_PLUS_EPS)
        alpha[g == 0] = 0
        weights = [(np.maximum(g[..., c], 0) * alpha[..., c]).sum() for c in channels]
    elif method == "xgradcam":
        weights = [(g[..., c] * A[..., c]).sum() / (A[..., c].sum() + EPS) for c in channels]
    elif method == "hirescam":
        return g * A
    elif method == "layercam":
        return np.maximum(g, 0) * A
    return np.stack([weights[c] * A[..., c] for c in channels], axis=-1)


def by_hand(method, outputs, n, k, eigen_smooth=False):
    """One image's and class's raw map: ReLU of the sum over channels, or of the first
    principal component, of the method's weighted activations."""
    if method == "eigencam":
        A = outputs[contract.OUTPUT_FEATURE_MAPS][n]
        return np.maximum(principal_projection(A.reshape(-1, A.shape[-1])), 0).reshape(A.shape[:2])
    weighted = weighted_activations(
        method, outputs[contract.OUTPUT_FEATURE_MAPS], outputs[contract.OUTPUT_GRADIENTS], n, k
    )
    if eigen_smooth:
        cam = principal_projection(weighted.reshape(-1, weighted.shape[-1])).reshape(weighted.shape[:2])
    else:
        cam = sum(weighted[..., c] for c in range(weighted.shape[-1]))
    return np.maximum(cam, 0)


def test_gradcam_reads_the_graphs_cam_which_is_the_grad_cam_formula(fake_outputs):
    maps = GradCam().raw_maps(layer({contract.OUTPUT_CAM: fake_outputs[contract.OUTPUT_CAM]}))
    assert maps.shape == (2, 3, 8, 8)
    for n in range(2):
        for k in range(3):
            np.testing.assert_allclose(
                maps[n, k], by_hand("gradcam", fake_outputs, n, k), rtol=1e-5, atol=1e-7
            )


def test_weighted_cam_with_pooled_gradients_equals_the_graphs_cam(fake_outputs):
    class PooledGradients(WeightedCam):
        name = "pooled"

        def cam_weights(self, layer):
            return layer.outputs[contract.OUTPUT_GRADIENTS].mean(axis=(2, 3))

    np.testing.assert_allclose(
        PooledGradients().raw_maps(layer(fake_outputs)),
        fake_outputs[contract.OUTPUT_CAM],
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("name", [*GRADIENT_METHODS, "eigencam"])
def test_methods_match_their_formulas(name, outputs):
    maps = METHODS[name]().raw_maps(layer(outputs))
    n_images, classes = outputs[contract.OUTPUT_EXPLAINED_CLASS].shape
    assert maps.shape == (n_images, classes, *outputs[contract.OUTPUT_FEATURE_MAPS].shape[1:3])
    assert maps.dtype == np.float32 and maps.any()
    for n in range(n_images):
        for k in range(classes):
            np.testing.assert_allclose(maps[n, k], by_hand(name, outputs, n, k), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [name for name in WEIGHTED_METHODS if name != "scorecam"])
def test_eigen_smooth_is_the_first_principal_component_of_the_weighted_activations(name, outputs):
    method = METHODS[name](Options(eigen_smooth=True))
    fetched = {output: outputs[output] for output in method.layer_outputs}
    maps = method.raw_maps(
        layer(fetched | {contract.OUTPUT_EXPLAINED_CLASS: outputs[contract.OUTPUT_EXPLAINED_CLASS]})
    )
    assert maps.any() and not np.allclose(maps, METHODS[name]().raw_maps(layer(outputs)), atol=1e-3)
    for n in range(maps.shape[0]):
        for k in range(maps.shape[1]):
            np.testing.assert_allclose(
                maps[n, k], by_hand(name, outputs, n, k, eigen_smooth=True), rtol=1e-4, atol=1e-5
            )


def test_first_component_is_pytorch_grad_cams_projection_signed_to_agree_with_the_magnitude():
    rng = np.random.default_rng(7)
    activations = rng.random((10, 6, 5, 8), dtype=np.float32)
    activations[:, 1:3, 1:3] += 3  # a blob: the channel sum and the component peak there
    projections = first_component(activations)
    for a, projection in zip(activations, projections, strict=True):
        # pytorch-grad-cam's get_2d_projection, written out, gives the same map up to sign
        matrix = a.reshape(-1, 8) - a.reshape(-1, 8).mean(axis=0)
        theirs = (matrix @ np.linalg.svd(matrix, full_matrices=True)[2][0]).reshape(6, 5)
        np.testing.assert_allclose(np.abs(projection), np.abs(theirs), rtol=1e-4, atol=1e-5)
        assert (projection * np.abs(a).sum(axis=-1)).sum() > 0
        assert np.unravel_index(np.argmax(projection), (6, 5)) in {(1, 1), (1, 2), (2, 1), (2, 2)}
    # the sign follows where the activations are large, whatever their sign
    np.testing.assert_allclose(first_component(-activations), projections, rtol=1e-4, atol=1e-5)


def scorecam_by_hand(session, outputs, images, n, max_channels):
    """Score-CAM for image n, one onnxruntime run per masked image: [K, h, w]."""
    A = outputs[contract.OUTPUT_FEATURE_MAPS][n]
    classes = outputs[contract.OUTPUT_EXPLAINED_CLASS][n]
    chosen = np.argsort(-A.mean(axis=(0, 1)), kind="stable")[:max_channels]
    scores = []
    for c in chosen:
        upsampled = cv2.resize(A[..., c], (32, 32), interpolation=cv2.INTER_LINEAR)
        mask = (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min() + 1e-8)
        feeds = {
            contract.INPUT_IMAGE: (images[n] * mask[..., None])[None],
            contract.INPUT_CLASS_INDEX: classes[None],
        }
        scores.append(session.run([contract.OUTPUT_SCORE], feeds)[0][0])
    scores = np.array(scores, dtype=np.float64)  # [channels, K]
    weights = np.exp(scores) / np.exp(scores).sum(axis=0)
    return np.stack(
        [
            np.maximum(sum(weights[i, k] * A[..., c] for i, c in enumerate(chosen)), 0)
            for k in range(len(classes))
        ]
    )


@pytest.mark.parametrize("max_channels, batch_size", [(256, 8), (2, 1), (5, 2)])
def test_scorecam_matches_a_loop_over_masked_inputs(session, outputs, images, max_channels, batch_size):
    """Every channel in one run; the 2 most active channels, one per run; up to 5 (all 3 of the
    fake model's, 5 of the random case's 6) in runs of at most 2."""
    run_sizes = []
    run = score_run(session)

    def recording_run(masked, class_index):
        run_sizes.append(len(masked))
        return run(masked, class_index)

    method = METHODS["scorecam"](Options(max_channels=max_channels))
    assert method.layer_outputs == (contract.OUTPUT_FEATURE_MAPS,)
    maps = method.raw_maps(layer(outputs, images, recording_run, batch_size))
    channels = outputs[contract.OUTPUT_FEATURE_MAPS].shape[-1]
    used = min(channels, max_channels)
    assert sum(run_sizes) == 2 * used and max(run_sizes) <= batch_size
    assert len(run_sizes) == 2 * -(-used // batch_size)  # ceil: each image's channels in as few runs as fit
    assert maps.any()
    for n in range(2):
        np.testing.assert_allclose(
            maps[n], scorecam_by_hand(session, outputs, images, n, max_channels), rtol=1e-4, atol=1e-6
        )


def record_runs(explainer: Explainer) -> list[list[str]]:
    """Wrap the explainer's session; the returned list gets the output names of each run."""
    runs: list[list[str]] = []

    class RecordingSession:
        def __init__(self, session):
            self.session = session

        def run(self, output_names, feeds):
            runs.append(list(output_names))
            return self.session.run(output_names, feeds)

    explainer._session = RecordingSession(explainer._session)
    return runs


@pytest.mark.parametrize(
    "name, fetched",
    [
        ("gradcam", [contract.OUTPUT_CAM]),
        ("gradcam++", [contract.OUTPUT_FEATURE_MAPS, contract.OUTPUT_GRADIENTS]),
        ("layercam", [contract.OUTPUT_FEATURE_MAPS, contract.OUTPUT_GRADIENTS]),
        ("eigencam", [contract.OUTPUT_FEATURE_MAPS]),
        ("scorecam", [contract.OUTPUT_FEATURE_MAPS]),
    ],
)
def test_the_explainer_fetches_only_what_the_method_needs(model_path, name, fetched):
    explainer = Explainer(model_path, device="cpu", method=name)
    runs = record_runs(explainer)
    explainer.explain(blob_image(32, 32, (0, 0, 8, 8)))
    assert runs[0] == [contract.OUTPUT_PROBABILITIES, contract.OUTPUT_EXPLAINED_CLASS, *fetched]
    # Score-CAM's masked runs (3 channels, up to 8 images a run) fetch only predictions and scores
    assert runs[1:] == ([list(PREDICTION_OUTPUTS)] if name == "scorecam" else [])


@pytest.mark.parametrize("options", [{}, {"aug_smooth": True}])
def test_several_methods_share_one_decode_and_one_run_per_batch(model_path, options):
    """explain_methods: per image, what each method alone gives; the model runs once per batch
    (six times with aug_smooth) fetching the union of the methods' outputs."""
    explainer = Explainer(model_path, device="cpu", batch_size=2, **options)
    runs = record_runs(explainer)
    images = [blob_image(32, 32, (0, 0, 8, 8)), b"not an image", blob_image(40, 48, (20, 4, 28, 12), (0, 255, 0))]
    methods = ["gradcam", "layercam", "eigencam"]
    per_image = list(explainer.explain_methods(images, methods, top_k=2, explain_top=2))
    assert len(runs) == 2 * (6 if options else 1)  # batches [image 0, bad image], [image 2]
    union = [contract.OUTPUT_CAM, contract.OUTPUT_FEATURE_MAPS, contract.OUTPUT_GRADIENTS]
    assert runs[0] == [contract.OUTPUT_PROBABILITIES, contract.OUTPUT_EXPLAINED_CLASS, *union]
    assert [outcome.error is None for outcome in per_image[1]] == [False] * 3
    for index in (0, 2):
        for method, outcome in zip(methods, per_image[index], strict=True):
            alone = explainer.with_method(method).explain(images[index], top_k=2, explain_top=2)
            assert outcome.explanation.method == method
            together = outcome.explanation.predictions
            assert [p.index for p in together] == [p.index for p in alone.predictions]
            assert [p.probability for p in together] == pytest.approx([p.probability for p in alone.predictions])
            for shared, single in zip(outcome.explanation.maps, alone.maps, strict=True):
                assert shared.class_index == single.class_index
                np.testing.assert_allclose(shared.heatmap, single.heatmap, atol=1e-5)


def test_eigen_smooth_makes_gradcam_fetch_feature_maps_and_pooled_gradients():
    assert GradCam().layer_outputs == (contract.OUTPUT_CAM,)
    smooth = GradCam(Options(eigen_smooth=True)).layer_outputs
    assert smooth == (contract.OUTPUT_FEATURE_MAPS, contract.OUTPUT_POOLED_GRADIENTS)


def test_scorecam_through_the_explainer_equals_the_loop(model_path, session):
    image = blob_image(32, 32, (20, 4, 28, 12), (0, 255, 0))
    explanation = Explainer(model_path, device="cpu", method="scorecam").explain(image, class_index=[1, 3])
    inputs = image[None].astype(np.float32)
    names = [contract.OUTPUT_FEATURE_MAPS, contract.OUTPUT_EXPLAINED_CLASS]
    feeds = {contract.INPUT_IMAGE: inputs, contract.INPUT_CLASS_INDEX: np.array([[1, 3]])}
    outputs = dict(zip(names, session.run(names, feeds), strict=True))
    expected = scorecam_by_hand(session, outputs, inputs, 0, 256)
    for class_map, raw in zip(explanation.maps, expected, strict=True):
        np.testing.assert_allclose(class_map.heatmap, render.heatmap(raw, (32, 32)), atol=1e-5)


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("options", [{}, {"eigen_smooth": True}, {"aug_smooth": True}])
def test_every_method_finds_the_blob_through_the_explainer(name, options, model_path):
    explainer = Explainer(model_path, device="cpu", method=name, **options)
    explanation = explainer.explain(blob_image(64, 64, (40, 8, 56, 24)), class_index=0)
    x, y = explanation.maps[0].peak
    assert 40 <= x < 56 and 8 <= y < 24
    assert explanation.method == name


def test_predictions_follow_the_graphs_order_when_probabilities_tie(model_path):
    """All probabilities equal in float32 (a random-weight model): the graph ranks by its score,
    here class 2 first. The first prediction and the first map must be that same class."""
    explainer = Explainer(model_path, device="cpu")
    real_fetch = explainer._fetch

    def tied(names, inputs, class_index):
        outputs = real_fetch(names, inputs, np.array([[2, 3]] * len(inputs)))
        outputs[contract.OUTPUT_PROBABILITIES][:] = 0.25
        return outputs

    explainer._fetch = tied
    explanation = explainer.explain(blob_image(32, 32, (0, 0, 8, 8)), top_k=2, explain_top=2)
    assert [p.index for p in explanation.predictions] == [2, 3]
    assert [(m.class_index, m.rank) for m in explanation.maps] == [(2, 1), (3, 2)]


@pytest.mark.parametrize("scale", [1e-6, 1e-10])
@pytest.mark.parametrize("name", ["gradcam", "xgradcam", "hirescam", "layercam", "eigencam"])
def test_maps_do_not_depend_on_the_scale_of_the_logits(tmp_path, monkeypatch, model_path, name, scale):
    """A model whose logits are the fake model's times `scale` (its raw maps peak near 1e-11 at
    1e-10) gives the same normalised maps: nothing is flattened by a fixed epsilon."""
    import tests.fake_model as fake_model

    monkeypatch.setattr(fake_model, "WEIGHTS", fake_model.WEIGHTS * np.float32(scale))
    scaled_path = fake_model.write_fake_model(tmp_path / "scaled.onnx")
    image = blob_image(48, 40, (8, 20, 20, 32), (255, 0, 0))
    unscaled = Explainer(model_path, device="cpu", method=name).explain(image, class_index=[0, 3])
    scaled = Explainer(scaled_path, device="cpu", method=name).explain(image, class_index=[0, 3])
    for small, reference in zip(scaled.maps, unscaled.maps, strict=True):
        assert reference.cam.max() == pytest.approx(1)
        np.testing.assert_allclose(small.heatmap, reference.heatmap, atol=1e-4)
