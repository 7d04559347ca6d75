"""The Python API: inputs, predictions, maps, class choice, batching, threads, providers."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from runtime import Explainer, Explanation, ImageError, UsageError
from runtime.explainer import choose_providers
from tests.fake_model import LABELS, blob_image, write_fake_model

RED_BOX = (50, 10, 80, 30)  # x0, y0, x1, y1 in a 60x90 image


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("model") / "fake.onnx")


@pytest.fixture(scope="module")
def explainer(model_path):
    return Explainer(model_path, device="cpu")


def mixed_images() -> list[np.ndarray]:
    """Eleven images of different sizes, each with a blob of one of the four colours."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    sizes = [(60, 90), (32, 32), (100, 40), (17, 29)]
    images = []
    for i in range(11):
        height, width = sizes[i % 4]
        box = (width // 4 + i % 3, height // 4, width // 2 + i % 3, height // 2)
        images.append(blob_image(height, width, box, colours[i % 4]))
    return images


def assert_same(first: Explanation, second: Explanation) -> None:
    assert first.predictions == second.predictions
    for a, b in zip(first.maps, second.maps, strict=True):
        assert (a.class_index, a.rank, a.peak) == (b.class_index, b.rank, b.peak)
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-6)


def test_explains_the_top_k_of_one_image(explainer):
    image = blob_image(60, 90, RED_BOX)
    explanation = explainer.explain(image, top_k=3)
    assert explanation.source == "<array>"
    np.testing.assert_array_equal(explanation.image, image)
    assert [p.label for p in explanation.predictions][0] == "red"
    probabilities = [p.probability for p in explanation.predictions]
    assert probabilities == sorted(probabilities, reverse=True) and len(probabilities) == 3
    assert [m.class_index for m in explanation.maps] == [p.index for p in explanation.predictions]
    assert [m.rank for m in explanation.maps] == [1, 2, 3]
    assert [m.label for m in explanation.maps] == [LABELS[m.class_index] for m in explanation.maps]
    for heat in explanation.heatmaps:
        assert heat.shape == (60, 90) and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() <= 1
    red = explanation.maps[0]
    x, y = red.peak
    assert RED_BOX[0] <= x < RED_BOX[2] and RED_BOX[1] <= y < RED_BOX[3]
    assert red.heatmap.max() == pytest.approx(1, abs=0.05)
    assert red.heatmap[50:, :40].max() == 0  # far from the blob: nothing


def test_overlays_blend_each_heatmap_into_the_image(explainer):
    explanation = explainer.explain(blob_image(60, 90, RED_BOX), top_k=2)
    overlays = explanation.overlays
    assert len(overlays) == 2
    for overlay in overlays:
        assert overlay.shape == (60, 90, 3) and overlay.dtype == np.uint8
    assert not np.array_equal(overlays[0], explanation.image)


def test_path_bytes_and_array_give_the_same_explanation(explainer, tmp_path):
    image = blob_image(60, 90, RED_BOX)
    path = tmp_path / "red.png"
    Image.fromarray(image).save(path)
    from_path = explainer.explain(str(path))
    assert from_path.source == str(path)
    assert_same(from_path, explainer.explain(path.read_bytes()))
    assert_same(from_path, explainer.explain(image))


def test_chosen_classes_are_explained_for_every_image(explainer):
    images = [blob_image(60, 90, RED_BOX), blob_image(40, 40, (0, 0, 10, 10), (0, 0, 255))]
    for explanation in explainer.explain(images, top_k=2, class_index=[2, 0]):
        assert [m.class_index for m in explanation.maps] == [2, 0]
        assert len(explanation.predictions) == 2
    single = explainer.explain(images[1], class_index=2)
    assert [m.label for m in single.maps] == ["blue"] and single.maps[0].rank == 1


def test_rank_is_the_class_rank_by_probability(explainer):
    explanation = explainer.explain(blob_image(60, 90, RED_BOX), top_k=4, class_index=[1, 0])
    order = [p.index for p in explanation.predictions]
    assert [m.rank for m in explanation.maps] == [order.index(1) + 1, order.index(0) + 1]


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"class_index": 4}, "class index 4: out of range (the model has 4 classes, 0..3)"),
        ({"class_index": [0, -1]}, "class index -1: out of range"),
        ({"class_index": []}, "class index: an empty list"),
        ({"class_index": [1.5]}, "class index 1.5: not an integer"),
        ({"top_k": 5}, "top_k 5: must be between 1 and the model's 4 classes"),
        ({"top_k": 0}, "top_k 0"),
    ],
)
def test_bad_classes_fail_before_running(explainer, options, problem):
    with pytest.raises(UsageError, match=problem.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        explainer.explain_each(["not even read.jpg"], **options)


def test_batches_of_one_and_eight_agree_with_mixed_sizes(model_path):
    images = mixed_images()
    one_by_one = Explainer(model_path, device="cpu", batch_size=1).explain(images)
    eight_at_once = Explainer(model_path, device="cpu", batch_size=8).explain(images)
    assert len(one_by_one) == len(eight_at_once) == 11
    for a, b in zip(one_by_one, eight_at_once, strict=True):
        assert a.image.shape == b.image.shape and a.heatmaps[0].shape == a.image.shape[:2]
        assert_same(a, b)


def test_batches_are_chunked_by_batch_size(model_path):
    explainer = Explainer(model_path, device="cpu", batch_size=4)
    batch_sizes = []
    session = explainer._session

    class CountingSession:
        def run(self, output_names, feeds):
            batch_sizes.append(len(feeds["image"]))
            return session.run(output_names, feeds)

    explainer._session = CountingSession()
    explainer.explain(mixed_images())
    assert batch_sizes == [4, 4, 3]


def test_a_bad_image_in_a_list_does_not_stop_the_others(explainer, tmp_path):
    good = blob_image(60, 90, RED_BOX)
    (tmp_path / "text.jpg").write_text("not an image")
    inputs = [good, str(tmp_path / "text.jpg"), b"", good]
    outcomes = list(explainer.explain_each(inputs))
    assert [o.source for o in outcomes] == [
        "<array #0>",
        str(tmp_path / "text.jpg"),
        "<bytes #2>",
        "<array #3>",
    ]
    assert [o.error is None for o in outcomes] == [True, False, False, True]
    assert "not an image" in str(outcomes[1].error) and "0 bytes" in str(outcomes[2].error)
    assert_same(outcomes[0].explanation, explainer.explain(good))
    assert_same(outcomes[3].explanation, outcomes[0].explanation)
    with pytest.raises(ImageError, match="text.jpg: not an image"):
        explainer.explain(inputs)


def test_threads_give_the_same_results_as_serial_use(explainer):
    images = mixed_images()
    serial = [explainer.explain(image, top_k=2) for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda image: explainer.explain(image, top_k=2), images * 2))
    for a, b in zip(serial * 2, threaded, strict=True):
        assert_same(a, b)


def test_provider_choice():
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    assert choose_providers("cpu", [cuda, cpu]) == [cpu]
    assert choose_providers("auto", [cuda, cpu]) == [cuda, cpu]
    assert choose_providers("auto", [cpu]) == [cpu]
    assert choose_providers("cuda", [cuda, cpu]) == [cuda, cpu]
    with pytest.raises(UsageError, match="device cuda: onnxruntime offers no CUDAExecutionProvider"):
        choose_providers("cuda", [cpu])
    with pytest.raises(UsageError, match="device 'tpu': unknown"):
        choose_providers("tpu", [cpu])


def test_the_explainer_says_which_provider_it_used(model_path, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert Explainer(model_path, device="auto").provider == "CPUExecutionProvider"
    with pytest.raises(UsageError, match="no CUDAExecutionProvider"):
        Explainer(model_path, device="cuda")


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"method": "magic"}, "method 'magic': unknown"),
        ({"batch_size": 0}, "batch size 0"),
        ({"max_pixels": 0}, "max pixels 0"),
    ],
)
def test_bad_settings(model_path, options, problem):
    with pytest.raises(UsageError, match=problem):
        Explainer(model_path, **options)


def test_max_pixels_applies_to_every_input(model_path):
    explainer = Explainer(model_path, device="cpu", max_pixels=1000)
    outcomes = list(
        explainer.explain_each([blob_image(20, 20, (0, 0, 5, 5)), blob_image(40, 40, (0, 0, 5, 5))])
    )
    assert outcomes[0].error is None and "over the limit of 1000" in str(outcomes[1].error)
