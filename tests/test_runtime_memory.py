"""Memory: a batch of large images never holds full-size arrays for all its images at once
(issue #10). Measured with tracemalloc, which numpy reports its allocations to: no timing."""

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from runtime import Explainer, render
from runtime.outputs import OutputOptions, write_image
from tests.fake_model import blob_image, write_fake_model

HEIGHT, WIDTH = 1500, 2000  # 3 Mpx: 9 MB as uint8 RGB, 12 MB as a float32 heatmap
IMAGES = 4
TOP_K = 3
ONE_IMAGE = HEIGHT * WIDTH * 3 + TOP_K * HEIGHT * WIDTH * 4  # its pixels and its top-k heatmaps


@pytest.fixture(scope="module")
def explainer(tmp_path_factory):
    return Explainer(write_fake_model(tmp_path_factory.mktemp("model") / "fake.onnx"), device="cpu")


def large_pngs() -> list[bytes]:
    """IMAGES PNG files of HEIGHTxWIDTH, a blob each in its own place (a few KB each)."""
    encoded = []
    for i in range(IMAGES):
        buffer = io.BytesIO()
        Image.fromarray(blob_image(HEIGHT, WIDTH, (100 * i, 50, 100 * i + 400, 450))).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


def peak_traced(work) -> tuple[object, int]:
    """work()'s result and the peak of the memory traced while it ran, in bytes."""
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_batch_of_large_images_holds_no_full_size_array_per_image(explainer):
    inputs = large_pngs()
    outcomes, peak = peak_traced(lambda: list(explainer.explain_each(inputs, explain_top=TOP_K)))
    assert all(outcome.error is None for outcome in outcomes)
    assert peak < ONE_IMAGE, f"{peak / 2**20:.0f} MiB traced for a batch of {IMAGES} images"
    explanation = outcomes[-1].explanation  # the maps are still there, at the original size
    assert explanation.image.shape == (HEIGHT, WIDTH, 3)
    assert [heat.shape for heat in explanation.heatmaps] == [(HEIGHT, WIDTH)] * TOP_K


def test_writing_an_image_renders_one_map_at_a_time(explainer, tmp_path):
    explanation = explainer.explain(large_pngs()[0], explain_top=TOP_K)
    options = OutputOptions(str(tmp_path), False, False, "png", "full", False)
    (paths, _), peak = peak_traced(lambda: write_image([explanation], "large", options))
    assert peak < ONE_IMAGE, f"{peak / 2**20:.0f} MiB traced to write one image"
    for (overlay_path, heatmap_path), overlay, heat in zip(paths[0], explanation.overlays, explanation.heatmaps):
        np.testing.assert_array_equal(np.asarray(Image.open(overlay_path)), overlay)
        np.testing.assert_array_equal(np.load(heatmap_path), heat)


def test_the_overlay_made_in_bands_of_rows_equals_the_formula_on_the_whole_image():
    rng = np.random.default_rng(0)
    height = 2 * render.OVERLAY_ROWS + 7
    image = rng.integers(0, 256, (height, 33, 3), dtype=np.uint8)
    heat = rng.random((height, 33), dtype=np.float32)
    heat[0, :2] = 0, 1
    whole = render.jet(heat).astype(np.float32) * render.OVERLAY_ALPHA + image.astype(np.float32)
    np.testing.assert_array_equal(render.overlay(image, heat), np.clip(np.rint(whole), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("array", [
    np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), np.float32(0.5).reshape(()), np.arange(10.0)[::3],
])
def test_npy_bytes_are_those_np_save_writes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    assert render.encoded_npy(array) == buffer.getvalue()


def test_npy_parts_view_the_array_without_copying_it():
    array = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    header, data = render.npy_parts(array)
    assert np.shares_memory(np.frombuffer(data, np.uint8), array)
    assert header + bytes(data) == render.encoded_npy(array)
