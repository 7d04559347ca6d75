"""Normalise, upsample, colour, blend, peak and atomic saves."""

import os

import cv2
import numpy as np
import pytest

from runtime import render, writer


def numpy_jet(heat: np.ndarray) -> np.ndarray:
    """The textbook JET ramp in RGB: blue at 0, cyan, yellow, red at 1."""
    ramp = lambda centre: np.clip(1.5 - np.abs(4 * heat - centre), 0, 1)  # noqa: E731
    return np.stack([ramp(3), ramp(2), ramp(1)], axis=-1) * 255


def test_heatmap_is_normalised_then_bilinearly_upsampled():
    raw = np.array([[0, 1], [2, 4]], dtype=np.float32)
    heat = render.heatmap(raw, (6, 10))
    assert heat.shape == (6, 10) and heat.dtype == np.float32
    expected = cv2.resize(raw / 4, (10, 6), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(heat, expected, atol=1e-7)
    assert heat.min() >= 0 and heat.max() <= 1 and heat.max() == pytest.approx(1)


def test_all_zero_map_stays_zero():
    heat = render.heatmap(np.zeros((7, 7), dtype=np.float32), (20, 30))
    assert not np.isnan(heat).any() and not heat.any()


def test_tiny_maps_are_normalised_by_their_own_maximum_and_non_finite_ones_vanish():
    tiny = np.array([[1e-9, 5e-10], [0, -1e-9]], dtype=np.float32)
    np.testing.assert_allclose(render.heatmap(tiny, (2, 2)), [[1, 0.5], [0, 0]], rtol=1e-5)
    assert not render.heatmap(np.array([[np.inf, 1.0]], dtype=np.float32), (1, 2)).any()


def test_one_map_fuses_to_its_own_heatmap():
    raw = np.random.default_rng(1).random((7, 7), dtype=np.float32) * 3
    np.testing.assert_array_equal(render.fuse([raw], (50, 60)), render.heatmap(raw, (50, 60)))


def test_maps_of_several_layers_fuse_to_the_mean_of_their_heatmaps():
    coarse = np.array([[0, 4], [0, 0]], dtype=np.float32)  # top right
    fine = np.zeros((4, 4), dtype=np.float32)
    fine[3, 0] = 0.5  # bottom left, on another scale
    fused = render.fuse([coarse, fine], (8, 8))
    expected = (render.heatmap(coarse, (8, 8)) + render.heatmap(fine, (8, 8))) / 2
    np.testing.assert_allclose(fused, expected, atol=1e-7)
    assert fused.dtype == np.float32 and fused.max() == pytest.approx(0.5, abs=0.05)
    assert fused[:4, 4:].max() > 0.4 and fused[4:, :4].max() > 0.4  # each layer's blob, equal weight


def test_contact_sheet_puts_captioned_tiles_side_by_side_in_rows():
    image = np.full((60, 90, 3), 128, dtype=np.uint8)
    rows = [[("red", image), ("gradcam", image), ("scorecam", image)], [("blue", image)] * 3]
    sheet = render.contact_sheet(rows)
    tile_width = 90 * render.SHEET_TILE_HEIGHT // 60
    assert sheet.shape == (2 * render.SHEET_TILE_HEIGHT, 3 * tile_width, 3) and sheet.dtype == np.uint8
    for row in range(2):
        for column in range(3):
            tile = sheet[row * render.SHEET_TILE_HEIGHT :, column * tile_width :][
                : render.SHEET_TILE_HEIGHT, :tile_width
            ]
            assert (tile[:30, :80] != 128).any() and (tile[60:] == 128).all()  # a caption, top left only
    assert (image == 128).all()  # the tiles given are not drawn on


def test_peak_is_x_then_y():
    heat = np.zeros((40, 60), dtype=np.float32)
    heat[31, 17] = 1
    assert render.peak(heat) == (17, 31)


def test_jet_is_rgb_blue_to_red():
    colours = render.jet(np.linspace(0, 1, 256, dtype=np.float32)[None, :])[0]
    np.testing.assert_allclose(colours, numpy_jet(np.linspace(0, 1, 256))[0:256], atol=6)
    assert colours[0, 2] > 100 and colours[0, 0] == 0  # blue at 0
    assert colours[-1, 0] > 100 and colours[-1, 2] == 0  # red at 1


def test_overlay_is_clipped_jet_times_point_four_plus_image():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    heat = rng.random((30, 40), dtype=np.float32)
    colours = cv2.cvtColor(
        cv2.applyColorMap(np.rint(heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    expected = np.clip(np.rint(colours * 0.4 + image), 0, 255).astype(np.uint8)
    result = render.overlay(image, heat)
    assert result.dtype == np.uint8 and result.shape == image.shape
    np.testing.assert_array_equal(result, expected)
    assert (result[image == 255] == 255).all()  # clipped, not wrapped around


def test_written_png_and_npy_read_back_and_leave_no_temporary_files(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    heat = np.random.default_rng(4).random((9, 11), dtype=np.float32)
    writer.write_file(tmp_path / "o.png", render.encoded_image(image, "png"))
    writer.write_file(tmp_path / "h.npy", render.npy_parts(heat))
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(tmp_path / "o.png")), cv2.COLOR_BGR2RGB), image)
    np.testing.assert_array_equal(np.load(tmp_path / "h.npy"), heat)
    assert sorted(os.listdir(tmp_path)) == ["h.npy", "o.png"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "h.npy"
    writer.write_file(target, render.encoded_npy(np.zeros(3)))

    def fail(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        writer.write_file(target, render.encoded_npy(np.ones(3)))
    np.testing.assert_array_equal(np.load(target), np.zeros(3))
    assert os.listdir(tmp_path) == ["h.npy"]


def test_the_overlay_blend_equals_the_float_formula_for_every_colour_level_and_pixel_value():
    levels = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(256, 256)
    pixels = np.tile(np.arange(256, dtype=np.uint8), 256).reshape(256, 256, 1).repeat(3, axis=2)
    heat = levels.astype(np.float32) / 255  # rint(heat * 255) gives back each level
    expected = np.clip(np.rint(render.JET_RGB[levels, 0].astype(np.float64) * 0.4 + pixels), 0, 255)
    np.testing.assert_array_equal(render.overlay(pixels, heat), expected.astype(np.uint8))


@pytest.mark.parametrize("file_format", ["png", "webp"])
def test_an_image_encoded_in_place_reads_back_as_the_same_rgb(file_format):
    image = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    copied = bytes(render.encoded_image(image, file_format))
    consumed = bytes(render.encoded_image(image.copy(), file_format, consume=True))
    assert copied == consumed
    if file_format == "png":
        np.testing.assert_array_equal(cv2.cvtColor(cv2.imdecode(np.frombuffer(consumed, np.uint8), 1), cv2.COLOR_BGR2RGB), image)
