"""runtime.evaluate's metrics against direct numpy computations, with closed-form scores."""

import numpy as np
import pytest

from runtime.evaluate import baselines, metrics, sanity
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
    order = np.argsort(-saliency.ravel(), kind="stable")
    values = []
    for k in range(steps + 1):
        n = int(round(k / steps * H * W))
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
    trapezoid = sum((expected[i] + expected[i + 1]) / 2 / steps for i in range(steps))
    assert metrics.auc(got) == pytest.approx(trapezoid, rel=1e-6)


def test_blur_deletion_ends_at_the_blurred_image(case):
    image, saliency = case
    got = metrics.blur_deletion_curve(mean_channel_score(batch_limit=5), image, saliency, 0, 6, batch_size=5)
    expected = direct_curve(image, metrics.blurred(image), saliency, 6, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[0] == pytest.approx(image[..., 0].mean() / 255)
    assert got[-1] == pytest.approx(metrics.blurred(image)[..., 0].mean() / 255)


def test_insertion_starts_from_the_blur_and_ends_at_the_image(case):
    image, saliency = case
    got = metrics.insertion_curve(mean_channel_score(batch_limit=4), image, saliency, 2, 10, batch_size=4)
    expected = direct_curve(metrics.blurred(image), image, saliency, 10, 2)
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


def test_average_drop_and_increase_equal_the_grad_cam_plus_plus_formulas(case):
    image, saliency = case
    images = np.stack([image, image])
    maps = np.stack([saliency, np.ones((H, W), np.float32) * 3])  # the second normalises to all ones
    classes = np.array([0, 1])
    drop, increase = metrics.confidence_change(mean_channel_score(), images, maps, classes)
    y0 = image[..., 0].mean() / 255
    o0 = (image[..., 0] * saliency / saliency.max()).mean() / 255
    assert drop[0] == pytest.approx(max(0, y0 - o0) / y0 * 100, rel=1e-5)
    assert drop[1] == pytest.approx(0, abs=1e-6)
    assert increase.tolist() == [0.0, 0.0]


def test_increase_in_confidence_counts_a_rise():
    def inverse_score(images, classes):  # darker images are more confident
        return 1 - images.mean(axis=(1, 2, 3)) / 255

    image = np.full((H, W, 3), 200, np.float32)
    half = np.zeros((H, W), np.float32)
    half[:, :2] = 1
    drop, increase = metrics.confidence_change(inverse_score, image[None], half[None], np.array([0]))
    assert increase.tolist() == [100.0] and drop.tolist() == [0.0]


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
    assert np.array_equal(baselines.random_map((4, 4), 0, 1), baselines.random_map((4, 4), 0, 1))
    assert not np.array_equal(baselines.random_map((4, 4), 0, 1), baselines.random_map((4, 4), 0, 2))
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
