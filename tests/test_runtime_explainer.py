"""The Python API: inputs, predictions, maps, class choice, batching, threads, providers."""

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from runtime import Explainer, Explanation, ImageError, ModelError, UsageError, contract, render
from runtime.explainer import AUGMENTATIONS
from runtime.session import choose_providers
from runtime.methods import METHODS, CamMethod
from tests.fake_model import LABELS, LAYERS, blob_image, write_fake_model

RED_BOX = (50, 10, 80, 30)  # x0, y0, x1, y1 in a 60x90 image


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
    explanation = explainer.explain(image, top_k=3, explain_top=3)
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


def test_by_default_three_predictions_and_the_map_of_the_first(explainer):
    explanation = explainer.explain(blob_image(60, 90, RED_BOX))
    assert len(explanation.predictions) == 3
    assert [(m.class_index, m.rank) for m in explanation.maps] == [(explanation.predictions[0].index, 1)]


@pytest.mark.parametrize("kwargs, message", [
    ({"explain_top": 0}, "explain_top 0: must be at least 1"),
    ({"explain_top": 5}, "explain_top 5: must be between 1 and the model's 4 classes"),
    ({"explain_top": 2.0}, "explain_top 2.0: not an integer"),
])
def test_a_bad_explain_top_is_refused(explainer, kwargs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        explainer.explain(blob_image(60, 90, RED_BOX), **kwargs)


def test_overlays_blend_each_heatmap_into_the_image(explainer):
    explanation = explainer.explain(blob_image(60, 90, RED_BOX), explain_top=2)
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
        ({"class_index": 1.5}, "class index 1.5: not an integer"),
        ({"class_index": True}, "class index True: not an integer"),
        ({"class_index": "2"}, "class index '2': not an integer"),
        ({"top_k": 2.0}, "top_k 2.0: not an integer"),
        ({"top_k": None}, "top_k None: not an integer"),
        ({"top_k": True}, "top_k True: not an integer"),
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
    serial = [explainer.explain(image, top_k=2, explain_top=2) for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda image: explainer.explain(image, top_k=2, explain_top=2), images * 2))
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
        ({"max_channels": 0}, "max channels 0"),
        ({"batch_size": 2.5}, "batch size 2.5: not an integer"),
        ({"batch_size": True}, "batch size True: not an integer"),
        ({"max_pixels": None}, "max pixels None: not an integer"),
        ({"max_channels": "8"}, "max channels '8': not an integer"),
        ({"method": ["gradcam"]}, r"method \['gradcam'\]: unknown"),
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


class RecordingSession:
    """Passes runs on to onnxruntime and keeps what each one was asked for."""

    def __init__(self, session):
        self.session = session
        self.runs = []

    def run(self, output_names, feeds):
        self.runs.append((list(output_names), {name: value.copy() for name, value in feeds.items()}))
        return self.session.run(output_names, feeds)


def test_two_layers_give_the_mean_of_each_layers_normalised_upsampled_map(tmp_path):
    explainer = Explainer(write_fake_model(tmp_path / "two.onnx", layers=2), device="cpu")
    assert explainer.card.layers == LAYERS and explainer.card.layer == LAYERS[0]
    explainer._session = recording = RecordingSession(explainer._session)
    image = blob_image(48, 40, (5, 30, 17, 41), (0, 0, 255))
    explanation = explainer.explain(image, class_index=[2, 0])
    ((fetched, feeds),) = recording.runs
    assert fetched[2:] == [contract.OUTPUT_CAM, contract.layer_output(contract.OUTPUT_CAM, 1)]
    coarse, fine = recording.session.run(fetched[2:], feeds)
    for k, class_map in enumerate(explanation.maps):
        assert fine[0, k].shape == (16, 16) and coarse[0, k].shape == (8, 8)
        expected = (render.heatmap(coarse[0, k], (48, 40)) + render.heatmap(fine[0, k], (48, 40))) / 2
        np.testing.assert_allclose(class_map.heatmap, expected, atol=1e-6)
    assert not np.allclose(explanation.maps[0].heatmap, render.heatmap(coarse[0, 0], (48, 40)), atol=1e-2)


class FixedMap(CamMethod):
    """A map that ignores the image: an L in the top-left corner, for every class."""

    name = "fixed"
    layer_outputs = (contract.OUTPUT_FEATURE_MAPS,)
    MAP = np.zeros((4, 4), np.float32)
    MAP[0, :3] = MAP[:3, 0] = 1

    def raw_maps(self, layer):
        classes = layer.outputs[contract.OUTPUT_EXPLAINED_CLASS].shape[1]
        return np.broadcast_to(self.MAP, (len(layer.images), classes, 4, 4))


def test_aug_smooth_flips_the_maps_of_flipped_runs_back(model_path, monkeypatch):
    """Three plain runs give the L, three flipped ones the L mirrored back: the mean is both."""
    monkeypatch.setitem(METHODS, "fixed", FixedMap)
    image = blob_image(32, 32, (0, 0, 8, 8))
    smooth = Explainer(model_path, device="cpu", method="fixed", aug_smooth=True).explain(image)
    mirrored = (FixedMap.MAP + FixedMap.MAP[:, ::-1]) / 2
    np.testing.assert_allclose(smooth.maps[0].heatmap, render.heatmap(mirrored, (32, 32)), atol=1e-6)


def test_aug_smooth_runs_flips_and_intensities_of_the_same_classes(model_path):
    explainer = Explainer(model_path, device="cpu", aug_smooth=True)
    explainer._session = recording = RecordingSession(explainer._session)
    image = blob_image(32, 32, (3, 20, 11, 30), (0, 255, 0))  # asymmetric: bottom left
    smooth = explainer.explain(image, top_k=2, explain_top=2)
    plain = Explainer(model_path, device="cpu").explain(image, top_k=2, explain_top=2)
    assert len(recording.runs) == len(AUGMENTATIONS) == 6
    first_feeds = recording.runs[0][1]
    explained = np.array([[m.class_index for m in plain.maps]])
    assert (first_feeds[contract.INPUT_CLASS_INDEX] == -1).all()
    for (flip, factor), (_, feeds) in zip(AUGMENTATIONS[1:], recording.runs[1:], strict=True):
        expected = image[None].astype(np.float32) * np.float32(factor)
        np.testing.assert_array_equal(feeds[contract.INPUT_IMAGE], expected[:, :, ::-1] if flip else expected)
        np.testing.assert_array_equal(feeds[contract.INPUT_CLASS_INDEX], explained)
    assert_same(smooth, plain)  # the fake's maps follow the blob when flipped, whatever the intensity
    assert smooth.maps[0].label == "green" and smooth.maps[0].peak[0] < 11


def test_with_method_shares_the_session_and_settings(model_path):
    explainer = Explainer(model_path, device="cpu", batch_size=3, aug_smooth=True)
    other = explainer.with_method("layercam")
    assert other._session is explainer._session and other.method.name == "layercam"
    assert (other.batch_size, other.aug_smooth) == (3, True) and explainer.method.name == "gradcam"
    image = blob_image(32, 32, (0, 0, 8, 8))
    assert explainer.explain(image).method == "gradcam"
    assert_same(
        other.explain(image),
        Explainer(model_path, device="cpu", method="layercam", aug_smooth=True).explain(image),
    )
    with pytest.raises(UsageError, match="method 'magic': unknown"):
        explainer.with_method("magic")


def test_with_options_shares_the_session_and_equals_a_new_explainer(model_path):
    explainer = Explainer(model_path, device="cpu", method="layercam")
    smooth = explainer.with_options(aug_smooth=True, eigen_smooth=True)
    assert smooth._session is explainer._session and smooth.method.name == "layercam"
    assert (smooth.aug_smooth, smooth.eigen_smooth, smooth.method.options.eigen_smooth) == (True, True, True)
    assert (explainer.aug_smooth, explainer.eigen_smooth, explainer.method.options.eigen_smooth) == (False, False, False)
    image = blob_image(32, 32, (0, 0, 8, 8))
    fresh = Explainer(model_path, device="cpu", method="layercam", aug_smooth=True, eigen_smooth=True)
    assert_same(smooth.explain(image), fresh.explain(image))


def test_a_failure_while_building_one_images_maps_is_its_error_outcome(explainer, monkeypatch):
    """Whatever an image's size or content makes the map building raise (MemoryError on a huge
    image, anything else) is that image's error Outcome, naming it; the others go on."""
    original = render.fuse

    def fuse(maps, size):
        if size == (17, 29):
            raise MemoryError
        if size == (32, 32):
            raise TypeError("odd")
        return original(maps, size)

    monkeypatch.setattr(render, "fuse", fuse)
    images = mixed_images()[:4]  # sizes 60x90, 32x32, 100x40, 17x29
    outcomes = list(explainer.explain_each(images))
    assert [outcome.error is None for outcome in outcomes] == [True, False, True, False]
    assert str(outcomes[1].error) == "<array #1>: cannot build its maps: TypeError: odd"
    assert str(outcomes[3].error) == "<array #3>: not enough memory to build its maps"
    outcomes = list(explainer.explain_methods(images, ["gradcam", "eigencam"]))
    assert [all(o.error is None for o in per) for per in outcomes] == [True, False, True, False]


def test_a_model_run_failure_raises_one_line_model_error(explainer, monkeypatch):
    class Broken:
        def run(self, names, feeds):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION :\n Non-zero status")

    broken = explainer.with_method("gradcam")
    monkeypatch.setattr(broken, "_session", Broken())
    with pytest.raises(ModelError, match=r"fake.onnx: model run failed \(\[ONNXRuntimeError\] : 6 : RUNTIME_EXCEPTION : Non-zero status\)$"):
        list(broken.explain_each(mixed_images()[:1]))
