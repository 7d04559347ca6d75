"""The methods of issue #27 against their papers' formulas written out here in plain numpy loops
(one image, one class, one channel at a time), on random feature maps and gradients and on the fake
model; the methods that re-run the model against the same runs made here by hand."""

import cv2
import numpy as np
import pytest

from runtime import contract
from runtime.errors import UsageError
from runtime.explainer import Explainer
from runtime.methods import METHODS, LayerInputs, Options
from runtime.methods import gradcam_plus_plus
from runtime.methods import smooth_gradcam_plus_plus as smooth
from runtime.methods.averaged_scorecam import IsCam, SsCam
from runtime.methods.finercam import closest_classes
from tests.fake_model import WEIGHTS, blob_image, fake_metadata, write_fake_model
from tests.test_runtime_methods import (  # noqa: F401 (images, model_path, session: fixtures)
    images, model_path, principal_projection, score_run, session,
)

@pytest.fixture(scope="module")
def random_outputs():
    """Signed feature maps and gradients with no structure: [N=2, K=3, h=4, w=5, C=6]."""
    rng = np.random.default_rng(16)
    return {
        contract.OUTPUT_FEATURE_MAPS: rng.normal(size=(2, 4, 5, 6)).astype(np.float32) + 0.5,
        contract.OUTPUT_GRADIENTS: rng.normal(size=(2, 3, 4, 5, 6)).astype(np.float32),
        contract.OUTPUT_EXPLAINED_CLASS: np.array([[0, 1, 2], [3, 2, 1]]),
    }


def fake_run(session, images, class_index, names=contract.OUTPUTS):
    feeds = {contract.INPUT_IMAGE: np.asarray(images, np.float32), contract.INPUT_CLASS_INDEX: class_index}
    return dict(zip(names, session.run(list(names), feeds), strict=True))


def maps_of(name, outputs, images=None, run=None, options=Options(), batch_size=8):
    return METHODS[name](options).raw_maps(LayerInputs(outputs, images, run, batch_size))


def relu(x):
    return np.maximum(x, 0)


def test_gradcam_elementwise_sums_each_channels_clipped_product(random_outputs):
    A, G = random_outputs[contract.OUTPUT_FEATURE_MAPS], random_outputs[contract.OUTPUT_GRADIENTS]
    maps = maps_of("gradcamelementwise", random_outputs)
    for n in range(2):
        for k in range(3):
            expected = sum(relu(G[n, k, ..., c] * A[n, ..., c]) for c in range(6))
            np.testing.assert_allclose(maps[n, k], relu(expected), rtol=1e-5, atol=1e-6)
    # not HiResCAM: the clipping before the sum matters on mixed signs
    assert not np.allclose(maps, maps_of("hirescam", random_outputs), atol=1e-3)


def test_eigen_grad_cam_is_the_first_component_of_gradients_times_activations(random_outputs):
    A, G = random_outputs[contract.OUTPUT_FEATURE_MAPS], random_outputs[contract.OUTPUT_GRADIENTS]
    maps = maps_of("eigengradcam", random_outputs)
    for n in range(2):
        for k in range(3):
            product = (G[n, k] * A[n]).reshape(-1, 6)
            np.testing.assert_allclose(
                maps[n, k], relu(principal_projection(product)).reshape(4, 5), rtol=1e-4, atol=1e-5
            )


def kernel_projection(matrix: np.ndarray) -> np.ndarray:
    """[P, C] -> [P]: KernelPCA(n_components=1, kernel='sigmoid') on the centred rows, by the
    definition: K = tanh(x.y / C + 1), centred as H K H, top eigenvector * sqrt(eigenvalue),
    signed to agree with the rows' magnitudes."""
    positions, channels = matrix.shape
    x = matrix.astype(np.float64) - matrix.mean(axis=0)
    kernel = np.array([[np.tanh(x[i] @ x[j] / channels + 1) for j in range(positions)] for i in range(positions)])
    centring = np.eye(positions) - np.full((positions, positions), 1 / positions)
    values, vectors = np.linalg.eigh(centring @ kernel @ centring)
    projection = vectors[:, -1] * np.sqrt(values[-1])
    return projection if projection @ np.abs(matrix).sum(axis=1) >= 0 else -projection


def test_kpca_cam_is_the_first_kernel_component_for_every_class(random_outputs):
    A = random_outputs[contract.OUTPUT_FEATURE_MAPS]
    maps = maps_of("kpcacam", random_outputs)
    assert maps.shape == (2, 3, 4, 5) and maps.any()
    for n in range(2):
        expected = relu(kernel_projection(A[n].reshape(-1, 6))).reshape(4, 5)
        for k in range(3):
            np.testing.assert_allclose(maps[n, k], expected, rtol=1e-4, atol=1e-5)


def test_fem_weighs_each_channel_by_its_share_above_k_sigma(random_outputs):
    A = random_outputs[contract.OUTPUT_FEATURE_MAPS].copy()
    A[:, 1, 2, :3] += 4  # a peak above 2 sigma in three channels
    outputs = random_outputs | {contract.OUTPUT_FEATURE_MAPS: A}
    maps = maps_of("fem", outputs)
    for n in range(2):
        weights = []
        for c in range(6):
            channel = A[n, ..., c].astype(np.float64)
            weights.append(np.mean(channel > channel.mean() + 2 * channel.std()))
        assert sum(weights) > 0
        expected = relu(sum(weights[c] * A[n, ..., c] for c in range(6)))
        for k in range(3):
            np.testing.assert_allclose(maps[n, k], expected, rtol=1e-5, atol=1e-6)


def test_cam_is_the_linear_heads_class_weights_times_the_activations(session, images):
    """The fake model's head is pooling + linear with weights WEIGHTS [channel, class]."""
    outputs = fake_run(session, images, np.array([[0, 2, 3], [1, 3, 0]]))
    maps = maps_of("cam", outputs)
    A = outputs[contract.OUTPUT_FEATURE_MAPS]
    for n in range(2):
        for k, cls in enumerate(outputs[contract.OUTPUT_EXPLAINED_CLASS][n]):
            expected = relu(sum(WEIGHTS[c, cls] * A[n, ..., c] for c in range(3)))
            np.testing.assert_allclose(maps[n, k], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cam", "ablationcam"])
def test_cam_and_ablation_cam_refuse_gradients_that_vary_over_positions(name, random_outputs):
    with pytest.raises(UsageError, match=f"method {name}: .*not global average pooling \\+ linear"):
        maps_of(name, random_outputs)


@pytest.mark.parametrize("name", ["cam", "ablationcam"])
def test_cam_and_ablation_cam_refuse_a_probability_score(name, tmp_path):
    path = write_fake_model(tmp_path / "probability.onnx", fake_metadata() | {contract.META_SCORE: "probability"})
    with pytest.raises(UsageError, match=f"method {name}: .*score is the probability"):
        Explainer(path, device="cpu", method=name)
    with pytest.raises(UsageError, match=f"method {name}:"):
        Explainer(path, device="cpu").explain_methods([blob_image(32, 32, (0, 0, 8, 8))], ["gradcam", name])


def test_ablation_cam_equals_zeroing_each_channel_and_running_the_model_again(session, images):
    """The fake model's feature-map channels are the image's colours pooled: zeroing colour c of
    the image zeroes channel c. weights_c = (y - y_c) / y, y_c from a real re-run per channel."""
    classes = np.array([[0, 2, 3], [1, 3, 0]])
    outputs = fake_run(session, images, classes)
    runs = []

    def counting_run(*args):
        runs.append(len(args[0]))
        return score_run(session)(*args)

    maps = maps_of("ablationcam", outputs, images, counting_run)
    assert runs == [2]  # one run for the scores, none per channel
    A = outputs[contract.OUTPUT_FEATURE_MAPS]
    for n in range(2):
        y = outputs[contract.OUTPUT_SCORE][n]
        for k in range(3):
            weights = []
            for c in range(3):
                ablated = images[n].copy()
                ablated[..., c] = 0
                rerun = fake_run(session, ablated[None], classes[n : n + 1], [contract.OUTPUT_SCORE])
                y_c = rerun[contract.OUTPUT_SCORE][0, k]
                weights.append((y[k] - y_c) / y[k])
            np.testing.assert_allclose(
                maps[n, k], relu(sum(weights[c] * A[n, ..., c] for c in range(3))), rtol=1e-4, atol=1e-4
            )


def test_closest_classes_by_logit_exclude_the_class_itself():
    logits = np.array([[0.0, 5.0, 4.0, 6.5, -3.0, 5.2]])
    probabilities = np.exp(logits) / np.exp(logits).sum()
    assert closest_classes(probabilities, np.array([[1, 4]]), 3).tolist() == [[[5, 2, 3], [0, 2, 1]]]
    assert closest_classes(probabilities, np.array([[1]]), 9).shape == (1, 1, 5)


def test_finer_cam_is_grad_cam_of_the_class_minus_its_closest_classes(session, images):
    """The fake model has 4 classes: the 3 references of a class are the 3 others, closest first."""
    classes = np.array([[0, 2], [3, 1]])
    outputs = fake_run(session, images, classes)
    maps = maps_of("finercam", outputs, images, lambda *args: fake_run(session, *args[:2]))
    A, p = outputs[contract.OUTPUT_FEATURE_MAPS], outputs[contract.OUTPUT_PROBABILITIES]
    for n in range(2):
        logits = np.log(p[n].astype(np.float64))
        for k, cls in enumerate(classes[n]):
            others = sorted((c for c in range(4) if c != cls), key=lambda c: abs(logits[c] - logits[cls]))[:3]
            gradient = WEIGHTS[:, cls] - 0.6 * np.mean([WEIGHTS[:, t] for t in others], axis=0)  # d score / d mean(A)
            expected = relu(sum(gradient[c] / 64 * A[n, ..., c] for c in range(3)))
            np.testing.assert_allclose(maps[n, k], expected, rtol=1e-4, atol=1e-6)


def averaged_scorecam_by_hand(session, outputs, images, n, masks_of_sample, samples):
    """SS-CAM / IS-CAM for image n: each channel min-max normalised, upsampled, each sample's
    masks from masks_of_sample(masks, sample), one model run per masked image. The channels go
    in order of decreasing mean activation (the order SS-CAM draws its noise in)."""
    A = outputs[contract.OUTPUT_FEATURE_MAPS][n]
    A = A[..., np.argsort(-A.mean(axis=(0, 1)), kind="stable")]
    classes = outputs[contract.OUTPUT_EXPLAINED_CLASS][n]
    masks = []
    for c in range(A.shape[-1]):
        channel = (A[..., c] - A[..., c].min()) / (A[..., c].max() - A[..., c].min() + 1e-8)
        masks.append(cv2.resize(channel.astype(np.float32), (32, 32), interpolation=cv2.INTER_LINEAR))
    scores = np.zeros((A.shape[-1], len(classes)))
    for sample in range(samples):
        for c, mask in enumerate(masks_of_sample(np.stack(masks), sample)):
            run = fake_run(session, (images[n] * mask[..., None])[None], classes[None], [contract.OUTPUT_SCORE])
            scores[c] += run[contract.OUTPUT_SCORE][0]
    weights = np.exp(scores / samples) / np.exp(scores / samples).sum(axis=0)
    return np.stack([relu(sum(weights[c, k] * A[..., c] for c in range(A.shape[-1]))) for k in range(len(classes))])


class FewSamplesSsCam(SsCam):
    samples = 3


class FewSamplesIsCam(IsCam):
    samples = 4


def test_ss_cam_averages_scores_over_seeded_noisy_masks(session, images):
    outputs = fake_run(session, images, np.array([[0, 1], [2, 3]]))
    maps = FewSamplesSsCam(Options(seed=7)).raw_maps(LayerInputs(outputs, images, score_run(session), 2))
    rng = np.random.default_rng(7)  # the same draws, in the documented order: [c, H, W] per sample, per image
    for n in range(2):
        expected = averaged_scorecam_by_hand(
            session, outputs, images, n, lambda masks, _: masks + rng.normal(0, 2.0, masks.shape).astype(np.float32), 3
        )
        np.testing.assert_allclose(maps[n], expected, rtol=1e-4, atol=1e-6)
    again = FewSamplesSsCam(Options(seed=7)).raw_maps(LayerInputs(outputs, images, score_run(session), 2))
    other = FewSamplesSsCam(Options(seed=8)).raw_maps(LayerInputs(outputs, images, score_run(session), 2))
    assert np.array_equal(maps, again) and not np.allclose(maps, other)


def test_is_cam_integrates_the_masks_as_torchcam(session, images):
    outputs = fake_run(session, images, np.array([[0, 1], [2, 3]]))
    maps = FewSamplesIsCam().raw_maps(LayerInputs(outputs, images, score_run(session), 8))
    for n in range(2):
        expected = averaged_scorecam_by_hand(
            session, outputs, images, n, lambda masks, i: masks * sum(j / 4 for j in range(1, i + 2)), 4
        )
        np.testing.assert_allclose(maps[n], expected, rtol=1e-4, atol=1e-6)


def synthetic_gradients(images: np.ndarray) -> np.ndarray:
    """[N, K=2, h=4, w=4, C=3] gradients that depend on the (noisy) image nonlinearly, both signs."""
    cells = images.reshape(len(images), 4, 8, 4, 8, 3).mean(axis=(2, 4)) / 255  # [N, 4, 4, 3]
    return np.stack([np.sin(6 * cells) * 1e-2, np.cos(5 * cells) * 1e-2 - 5e-3], axis=1).astype(np.float32)


def test_smooth_gradcam_plus_plus_averages_the_derivatives_over_seeded_noisy_images(images):
    feature_maps = np.random.default_rng(3).random((2, 4, 4, 3), dtype=np.float32)
    outputs = {contract.OUTPUT_FEATURE_MAPS: feature_maps, contract.OUTPUT_EXPLAINED_CLASS: np.array([[0, 1]] * 2)}
    calls = []

    def run(noisy, class_index, layer_outputs=()):
        calls.append(tuple(layer_outputs))
        return {contract.OUTPUT_GRADIENTS: synthetic_gradients(noisy)}

    maps = maps_of("smoothgradcam++", outputs, images, run, Options(seed=11))
    assert calls == [(contract.OUTPUT_GRADIENTS,)] * smooth.SAMPLES
    rng = np.random.default_rng(11)
    draws = [synthetic_gradients(images + rng.normal(0, smooth.NOISE_STD, images.shape).astype(np.float32))
             for _ in range(smooth.SAMPLES)]
    for n in range(2):
        for k in range(2):
            g = [d[n, k].astype(np.float64) for d in draws]
            g1, g2, g3 = (sum(x**p for x in g) / len(g) for p in (1, 2, 3))
            A = feature_maps[n]
            weights = []
            for c in range(3):
                alpha = g2[..., c] / (2 * g2[..., c] + A[..., c].sum() * g3[..., c] + 1e-8)
                weights.append((alpha * relu(g1[..., c])).sum())
            expected = relu(sum(weights[c] * A[..., c] for c in range(3)))
            np.testing.assert_allclose(maps[n, k], expected, rtol=1e-4, atol=1e-7)


def test_smooth_gradcam_plus_plus_without_noise_is_gradcam_plus_plus(images, monkeypatch):
    monkeypatch.setattr(smooth, "NOISE_STD", 0.0)
    monkeypatch.setattr(gradcam_plus_plus, "EPS", smooth.EPS)
    gradients = synthetic_gradients(images)
    outputs = {
        contract.OUTPUT_FEATURE_MAPS: np.random.default_rng(3).random((2, 4, 4, 3), dtype=np.float32),
        contract.OUTPUT_GRADIENTS: gradients,
        contract.OUTPUT_EXPLAINED_CLASS: np.array([[0, 1]] * 2),
    }
    smoothed = maps_of("smoothgradcam++", outputs, images, lambda *_: {contract.OUTPUT_GRADIENTS: gradients})
    np.testing.assert_allclose(smoothed, maps_of("gradcam++", outputs), rtol=1e-5, atol=1e-7)
