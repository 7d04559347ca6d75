"""runtime.evaluate's metrics against direct numpy computations, with closed-form scores."""

import numpy as np
import pytest

from runtime import render
from runtime.evaluate import baselines, metrics, road, sanity
from runtime.evaluate.report import bootstrap

H, W = 6, 5


def mean_channel_score(batch_limit: int = 10**9):
    """score = the mean of the class's colour channel / 255; refuses batches over batch_limit."""

    def score(images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        assert images.ndim == 4 and len(images) <= batch_limit
        return images[np.arange(len(images)), :, :, classes].mean(axis=(1, 2)) / 255

    return score


@pytest.fixture
def case():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (H, W, 3)).astype(np.float32)
    saliency = rng.random((H, W)).astype(np.float32)
    return image, saliency


def direct_curve(start, end, saliency, steps, channel):
    """RISE's schedule: ceil(H*W / steps) pixels per step, the last step what is left."""
    order = np.argsort(-saliency.ravel(), kind="stable")
    size = -(-H * W // steps)
    values = []
    for k in range(-(-H * W // size) + 1):
        n = min(k * size, H * W)
        current = start.copy().reshape(-1, 3)
        current[order[:n]] = end.reshape(-1, 3)[order[:n]]
        values.append(current[:, channel].mean() / 255)
    return np.array(values)


def test_deletion_curve_and_auc_equal_direct_computation(case):
    image, saliency = case
    steps = 7
    got = metrics.deletion_curve(mean_channel_score(batch_limit=3), image, saliency, 1, steps, batch_size=3)
    expected = direct_curve(image, np.zeros_like(image), saliency, steps, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[0] == pytest.approx(image[..., 1].mean() / 255) and got[-1] == 0
    assert len(got) == 7  # 30 pixels, 5 per step: 6 steps
    trapezoid = sum((expected[i] + expected[i + 1]) / 2 / 6 for i in range(6))
    assert metrics.auc(got) == pytest.approx(trapezoid, rel=1e-6)


def test_blur_deletion_ends_at_the_blurred_image(case):
    image, saliency = case
    got = metrics.blur_deletion_curve(mean_channel_score(batch_limit=5), image, saliency, 0, 6, batch_size=5)
    expected = direct_curve(image, metrics.blurred(image), saliency, 6, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[0] == pytest.approx(image[..., 0].mean() / 255)
    assert got[-1] == pytest.approx(metrics.blurred(image)[..., 0].mean() / 255)


def test_insertion_starts_from_rises_blur_and_ends_at_the_image(case):
    image, saliency = case
    got = metrics.insertion_curve(mean_channel_score(batch_limit=4), image, saliency, 2, 10, batch_size=4)
    expected = direct_curve(metrics.rise_blurred(image, metrics.Normalisation()), image, saliency, 10, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[-1] == pytest.approx(image[..., 2].mean() / 255)


def test_auc_of_known_curves():
    assert metrics.auc(np.ones(11)) == pytest.approx(1.0)
    assert metrics.auc(np.linspace(1, 0, 51)) == pytest.approx(0.5)
    assert metrics.auc(np.array([0.0, 1.0, 0.0])) == pytest.approx(0.5)


def test_deleting_the_brightest_pixels_first_beats_the_reverse_order(case):
    image, _ = case
    score = mean_channel_score()
    brightest = metrics.auc(metrics.deletion_curve(score, image, image[..., 0], 0, 10))
    darkest = metrics.auc(metrics.deletion_curve(score, image, -image[..., 0], 0, 10))
    assert brightest < darkest


def test_step_counts_follow_rise():
    assert metrics.step_counts(1024, 16).tolist() == list(range(0, 1025, 64))
    assert metrics.step_counts(30, 7).tolist() == [0, 5, 10, 15, 20, 25, 30]
    assert metrics.step_counts(10, 10).tolist() == list(range(11))
    assert metrics.step_counts(50176, 50)[-2:].tolist() == [49196, 50176]  # 1004 per step, the last 980


def test_rise_kernel_is_scipys_gaussian_filter_of_a_delta():
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    np.testing.assert_allclose(metrics.rise_kernel(), gaussian_filter(delta, 5), atol=1e-12)


def test_rise_blur_pads_with_the_model_inputs_zero():
    image = np.full((20, 20, 3), 200, np.float32)
    grey = metrics.Normalisation((200.0, 200.0, 200.0), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(metrics.rise_blurred(image, grey), image)  # padding = the image's own colour
    black = metrics.rise_blurred(image, metrics.Normalisation())
    assert black[10, 10, 0] == pytest.approx(200, abs=1e-3) and black[0, 0, 0] < 150  # darker at the border


def test_average_drop_and_increase_equal_the_grad_cam_plus_plus_formulas(case):
    image, saliency = case
    images = np.stack([image, image])
    maps = np.stack([saliency, np.ones((H, W), np.float32) * 3])  # the second normalises to all ones
    classes = np.array([0, 1])
    changes = metrics.confidence_change(mean_channel_score(), images, maps, classes)
    y0 = image[..., 0].mean() / 255
    o0 = (image[..., 0] * saliency / saliency.max()).mean() / 255
    assert changes["average-drop"][0] == pytest.approx(max(0, y0 - o0) / (y0 + 1e-7) * 100, rel=1e-5)
    assert changes["average-drop"][1] == pytest.approx(0, abs=1e-6)
    assert changes["increase-in-confidence"].tolist() == [0.0, 0.0]
    assert changes["drop-in-confidence"][0] == pytest.approx(y0 - o0, rel=1e-5)
    assert changes["confidence-change"][0] == pytest.approx(o0 - y0, rel=1e-5)


def test_the_map_multiplies_the_normalised_input():
    image = np.full((H, W, 3), 100, np.float32)
    zero = metrics.Normalisation((60.0, 60.0, 60.0), (2.0, 2.0, 2.0))
    half = np.full((H, W), 0.5, np.float32)
    np.testing.assert_allclose(metrics.multiplied(image, half, zero), 100)  # divided by its maximum: all 1
    half[0, 0] = 1
    assert metrics.multiplied(image, half, zero)[1, 1, 0] == pytest.approx(80)  # 60 + (100 - 60) * 0.5


def test_increase_in_confidence_counts_a_rise():
    def inverse_score(images, classes):  # darker images are more confident
        return 1 - images.mean(axis=(1, 2, 3)) / 255

    image = np.full((H, W, 3), 200, np.float32)
    half = np.zeros((H, W), np.float32)
    half[:, :2] = 1
    changes = metrics.confidence_change(inverse_score, image[None], half[None], np.array([0]))
    assert changes["increase-in-confidence"].tolist() == [100.0] and changes["average-drop"].tolist() == [0.0]
    assert changes["confidence-change"][0] > 0


def test_pointing_game_hits_inside_the_box_and_within_the_tolerance():
    saliency = np.zeros((20, 20), np.float32)
    saliency[5, 12] = 1  # (x, y) = (12, 5)
    assert metrics.pointing_hit(saliency, np.array([[10, 3, 14, 8]])) == 1.0
    assert metrics.pointing_hit(saliency, np.array([[0, 0, 4, 4]])) == 0.0
    assert metrics.pointing_hit(saliency, np.array([[0, 0, 4, 4], [12, 5, 12, 5]])) == 1.0
    assert metrics.pointing_hit(saliency, np.array([[15, 5, 18, 9]]), tolerance=3) == 1.0
    assert metrics.pointing_hit(saliency, np.array([[15, 5, 18, 9]]), tolerance=2) == 0.0


def test_spearman_equals_the_rank_correlation():
    rng = np.random.default_rng(0)
    a = rng.random(50)
    b = a + rng.random(50) * 0.5
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    n = len(a)
    expected = 1 - 6 * ((ra - rb) ** 2).sum() / (n * (n * n - 1))
    assert sanity.spearman(a, b) == pytest.approx(expected)
    assert sanity.spearman(a, -a) == pytest.approx(-1)
    assert sanity.spearman(a, np.zeros(50)) == 0.0
    assert sanity.ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]


def test_baselines():
    features = [np.random.default_rng(0).random((3, 3, 4), dtype=np.float32)]
    image = np.zeros((12, 12, 3), np.float32)
    first, again, other = (baselines.baseline_maps(image, features, 0, i) for i in (1, 1, 2))
    for name in ("random-cam", "layer-noise", "pixel-noise"):
        assert np.array_equal(first[name], again[name]) and not np.array_equal(first[name], other[name]), name
    gauss = baselines.gaussian_map((9, 7))
    assert np.unravel_index(gauss.argmax(), gauss.shape) == (4, 3) and gauss.max() == pytest.approx(1)
    image = np.zeros((10, 10, 3), np.float32)
    image[:, 5:] = 255
    edges = baselines.edge_map(image)
    assert edges.max() == pytest.approx(1) and edges[:, :3].max() == 0 and edges[:, 4:6].min() > 0.9


def test_bootstrap_interval_contains_the_mean_and_is_seeded():
    values = list(np.random.default_rng(1).random(40))
    result = bootstrap(values, seed=0)
    assert result["low"] < result["mean"] < result["high"] and result["n"] == 40
    assert result["mean"] == pytest.approx(np.mean(values))
    assert bootstrap(values, seed=0) == result
    assert bootstrap([2.0] * 5) == {"mean": 2.0, "low": 2.0, "high": 2.0, "n": 5}


def test_random_cam_is_pytorch_grad_cams_random_cam_upsampled_as_the_maps():
    rng = np.random.default_rng(4)
    activations = rng.random((4, 4, 6), dtype=np.float32)
    got = baselines.random_cam([activations], (16, 16), np.random.default_rng(9))
    weights = np.random.default_rng(9).uniform(-1, 1, 6).astype(np.float32)
    expected = render.heatmap(np.maximum((activations * weights).sum(-1), 0), (16, 16))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_the_cam_like_random_maps_are_smooth_and_the_pixel_noise_is_not():
    """Neighbouring pixels of a map upsampled from 7x7 differ little; per-pixel noise by 1/3."""
    rng = np.random.default_rng(0)
    smooth = {
        "random-cam": baselines.random_cam([rng.random((7, 7, 32), dtype=np.float32)], (224, 224), rng),
        "layer-noise": baselines.layer_noise([(7, 7)], (224, 224), rng),
    }
    for name, saliency in smooth.items():
        assert np.abs(np.diff(saliency, axis=1)).mean() < 0.02, name
    assert np.abs(np.diff(baselines.pixel_noise((224, 224), rng), axis=1)).mean() > 0.3


def test_road_imputes_a_linear_ramp_exactly_and_keeps_the_known_pixels():
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32)[None, :, None] * 10, (8, 10, 3)).copy()
    keep = np.ones((8, 10), bool)
    keep[2:6, 3:7] = False
    filled = road.impute(ramp, keep)
    np.testing.assert_allclose(filled, ramp, atol=1e-3)  # the mean of symmetric neighbours of a ramp
    keep[:, :] = True
    keep[0, 0] = False
    assert road.impute(np.zeros((8, 10, 3), np.float32), keep)[0, 0].tolist() == [0, 0, 0]


def test_road_keeps_the_pixels_below_the_percentile():
    saliency = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert road.keep_mask(saliency, 80).sum() == 80 and not road.keep_mask(saliency, 80)[-1, -1]


def test_road_orders_most_and_least_relevant_first():
    """score = mean red / 255: an image red on the left, a map on the left. Imputing the most
    relevant (left) pixels first drops the score; the least relevant first keeps it."""
    image = np.zeros((12, 12, 3), np.float32)
    image[:, :6, 0] = 255
    saliency = np.tile(np.linspace(1, 0, 12, dtype=np.float32), (12, 1))
    scores = road.road_scores(mean_channel_score(), image, saliency, 0, 4)
    assert scores["road-morf"] < -0.2 and scores["road-lerf"] > scores["road-morf"] and scores["road"] > 0.1


def test_road_without_scipy_is_one_line_naming_the_extra(monkeypatch):
    import sys

    from runtime.errors import OnnxcamError

    monkeypatch.setitem(sys.modules, "scipy.sparse", None)  # as if scipy were not installed
    with pytest.raises(OnnxcamError, match=r"onnxcam\[evaluate\]"):
        road.impute(np.zeros((4, 4, 3), np.float32), np.eye(4, dtype=bool))
