"""Tests of cam_core.viz: colormaps, overlays, box drawing, grids, atomic PNG writing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from cam_core.viz import COLORMAPS, colormap, draw_boxes, image_grid, overlay, save_png
from tests.conftest import readonly


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("jet", (0, 0, 128), (128, 0, 0)),
        ("viridis", (68, 1, 84), (253, 231, 37)),
        ("gray", (0, 0, 0), (255, 255, 255)),
        ("hot", (0, 0, 0), (255, 255, 255)),
    ],
)
def test_colormap_endpoints(name, low, high):
    out = colormap(readonly(np.array([0.0, 1.0])), name=name)
    assert out.dtype == np.uint8 and out.shape == (2, 3)
    assert tuple(out[0]) == low and tuple(out[1]) == high


def test_colormap_midpoints_and_clipping():
    # jet at 0.2 (table entry 51 of 255, exactly 0.2): r = 1.5 - |0.8 - 3| < 0 -> 0,
    # g = 1.5 - |0.8 - 2| = 0.3 -> round(76.5) = 77, b = 1.5 - |0.8 - 1| = 1.3 -> 1 -> 255
    assert tuple(colormap([0.2], name="jet")[0]) == (0, 77, 255)
    assert tuple(colormap([0.8], name="jet")[0]) == (255, 77, 0)
    assert tuple(colormap([0.5], name="gray")[0]) == (128, 128, 128)
    # viridis at the middle anchor (index 8 of 16), table entry round(127.5) = 128 of 255
    np.testing.assert_allclose(colormap([128 / 255], name="viridis")[0],
                               np.floor(np.array([0.1276, 0.5669, 0.5506]) * 255 + 0.5), atol=1)
    np.testing.assert_array_equal(colormap([-3.0, 7.0], name="gray"), [[0, 0, 0], [255] * 3])
    assert set(COLORMAPS) == {"jet", "viridis", "gray", "hot"}


def test_colormap_shapes_and_errors():
    assert colormap(np.zeros((2, 5, 7), np.float32)).shape == (2, 5, 7, 3)
    with pytest.raises(ValueError, match="`name` must be one of"):
        colormap([0.5], name="parula")
    with pytest.raises(ValueError, match="`maps` must be finite"):
        colormap([0.5, np.nan])


def test_viridis_table_is_monotone_in_lightness():
    rgb = colormap(np.linspace(0, 1, 256), name="viridis").astype(float)
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    assert (np.diff(lum) >= -0.6).all() and lum[-1] > lum[0] + 150


@pytest.mark.parametrize(
    "image",
    [
        np.full((20, 30), 100, np.uint8),
        np.full((20, 30, 3), 100, np.uint8),
        np.full((20, 30, 1), 100, np.uint8),
        np.full((20, 30, 4), 100, np.uint8),
        np.full((20, 30), 100 / 255, np.float32),
        np.full((20, 30, 3), 100 / 255, np.float64),
    ],
    ids=["grey-u8", "rgb-u8", "grey1-u8", "rgba-u8", "grey-f32", "rgb-f64"],
)
def test_overlay_shapes_and_dtypes(image):
    heat = readonly(np.zeros((5, 6), np.float32))
    img = readonly(image)
    out = overlay(img, heat, alpha=0.5, cmap="gray")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    # (1 - 0.5) * 100 + 0.5 * 0 = 50 everywhere
    assert (out == 50).all()


def test_overlay_blend_and_resize():
    img = np.zeros((4, 8, 3), np.uint8)
    heat = np.array([[0.0, 1.0]])  # 1 x 2, upsampled to 4 x 8 bilinear with half-pixel centres
    out = overlay(img, heat, alpha=1.0, cmap="gray")
    # output column d samples x = (d + 0.5) / 4 - 0.5: 0 for d <= 1, 1 for d >= 6, linear between
    expected = np.clip((np.arange(8) + 0.5) / 4 - 0.5, 0, 1)
    np.testing.assert_array_equal(out[0, :, 0], np.floor(expected * 255 + 0.5))
    assert (out == out[:1]).all()  # every row the same
    same = overlay(np.full((2, 2), 200, np.uint8), np.ones((2, 2)), alpha=0.25, cmap="gray")
    assert (same == round(0.75 * 200 + 0.25 * 255)).all()
    assert (overlay(img, np.ones((4, 8)), alpha=0.0) == 0).all()


def test_overlay_errors():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="`cmap` must be one of gray, hot, jet, viridis; got 'parula'"):
        overlay(img, np.zeros((2, 2)), cmap="parula")
    with pytest.raises(ValueError, match="`alpha` must be in"):
        overlay(img, np.zeros((2, 2)), alpha=1.5)
    with pytest.raises(ValueError, match=r"`map` must have shape \(h, w\)"):
        overlay(img, np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="`image` must have shape"):
        overlay(np.zeros((4, 4, 2)), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="`image` must be uint8 or float"):
        overlay(np.zeros((4, 4), bool), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="`image` of integer dtype must hold values in 0..255"):
        overlay(np.full((4, 4), 300, np.int32), np.zeros((2, 2)))


def test_draw_boxes_pixel_exact_edges():
    img = readonly(np.zeros((10, 12, 3), np.uint8))
    out = draw_boxes(img, readonly(np.array([[2, 3, 7, 9]])), colors=(255, 0, 0), width=1)
    expected = np.zeros((10, 12), bool)
    expected[3, 2:7] = expected[8, 2:7] = True  # rows y0 and y1 - 1
    expected[3:9, 2] = expected[3:9, 6] = True  # columns x0 and x1 - 1
    assert np.array_equal(out[:, :, 0] == 255, expected)
    assert (out[:, :, 1:] == 0).all()
    assert (img == 0).all()  # input untouched


def test_draw_boxes_wide_lines_grow_inwards_and_clip():
    out = draw_boxes(np.zeros((10, 10), np.uint8), [[0, 0, 10, 10], [8, 8, 14, 14]],
                     colors=[(9, 9, 9), (200, 200, 200)], width=2)
    drawn = out[:, :, 0]
    inner = np.zeros((10, 10), bool)
    inner[2:8, 2:8] = True
    assert (drawn[~inner] > 0).all()  # 2-pixel frame of the first box
    assert (drawn[inner] == 0).all()
    assert (drawn[8:10, 8:10] == 200).all()  # the second box, clipped at the image edge


def test_draw_boxes_single_pixel_and_empty():
    out = draw_boxes(np.zeros((5, 5, 3)), np.array([[3, 1, 4, 2]]), colors=(0, 255, 0), width=3)
    assert np.argwhere(out[:, :, 1] == 255).tolist() == [[1, 3]]
    empty = draw_boxes(np.full((5, 5, 3), 7, np.uint8), np.zeros((0, 4)))
    assert (empty == 7).all() and empty.dtype == np.uint8


def test_draw_boxes_labels_on_filled_background():
    img = np.zeros((60, 80, 3), np.uint8)
    out = draw_boxes(img, [[10, 30, 70, 55]], labels=["cat"], colors=(255, 255, 0), width=1)
    above = out[:30, 10:70]
    # a filled yellow rectangle above the box with dark ink on it
    yellow = (above == [255, 255, 0]).all(axis=2)
    assert yellow.sum() > 40
    rows = np.flatnonzero(yellow.any(axis=1))
    cols = np.flatnonzero(yellow.any(axis=0))
    assert rows.max() == 29  # the label's rectangle ends right above the box's top row
    assert cols.min() == 0  # and starts at the box's left edge (x0 = 10 in the full image)
    label = above[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert (label.sum(axis=2) < 300).any()  # dark ink on yellow
    assert (out[:rows.min()] == 0).all()  # nothing above the label
    no_text = draw_boxes(img, [[10, 30, 70, 55]], labels=[None], colors=(255, 255, 0), width=1)
    assert (no_text[:30] == 0).all()


def test_draw_boxes_errors():
    img = np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(ValueError, match=r"`boxes` must have shape \(G, 4\); got \(3,\)"):
        draw_boxes(img, [1, 2, 3])
    with pytest.raises(ValueError, match=r"`colors` must be one RGB triple or shape \(2, 3\)"):
        draw_boxes(img, [[0, 0, 1, 1], [1, 1, 2, 2]], colors=[(1, 2, 3)] * 3)
    with pytest.raises(ValueError, match="`labels` must hold one entry per box"):
        draw_boxes(img, [[0, 0, 1, 1]], labels=["a", "b"])
    with pytest.raises(ValueError, match="`width` must be a positive int"):
        draw_boxes(img, [[0, 0, 1, 1]], width=0)


def test_image_grid_layout():
    a = np.full((4, 5, 3), 10, np.uint8)
    b = np.full((3, 2), 20 / 255, np.float32)
    c = np.full((4, 5, 3), 30, np.uint8)
    out = image_grid([a, b, c], ncols=2, pad=1)
    assert out.shape == (1 + 2 * (4 + 1), 1 + 2 * (5 + 1), 3) and out.dtype == np.uint8
    assert (out[1:5, 1:6] == 10).all()
    assert (out[1:4, 7:9] == 20).all() and (out[4, 7:9] == 255).all()  # smaller image: top-left
    assert (out[6:10, 1:6] == 30).all()
    assert (out[6:10, 7:12] == 255).all()  # the empty cell
    assert (out[0] == 255).all() and (out[:, 0] == 255).all()


def test_image_grid_titles_add_a_strip():
    imgs = np.zeros((3, 8, 20, 3), np.uint8)
    plain = image_grid(imgs, ncols=3, pad=0)
    titled = image_grid(imgs, ncols=3, pad=0, titles=["a", "b", "c"])
    assert plain.shape == (8, 60, 3)
    assert titled.shape[0] > 8 and titled.shape[1] == 60
    strip = titled[: titled.shape[0] - 8]
    assert (strip < 128).any()  # dark text on white
    with pytest.raises(ValueError, match="`titles` must hold one title per image"):
        image_grid(imgs, ncols=3, titles=["a"])
    with pytest.raises(ValueError, match="`ncols` must be a positive int"):
        image_grid(imgs, ncols=0)
    with pytest.raises(ValueError, match="`images` is empty"):
        image_grid([], ncols=1)


def test_save_png_roundtrip_and_atomic(tmp_path, monkeypatch):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    path = save_png(readonly(rgb), tmp_path / "sub" / "a.png")
    assert path == tmp_path / "sub" / "a.png"
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), rgb)
    grey = np.array([[0.0, 1.0]], np.float32)
    with Image.open(save_png(grey, tmp_path / "g.png")) as im:
        assert im.mode == "L" and np.asarray(im).tolist() == [[0, 255]]
    rgba = np.zeros((1, 1, 4), np.uint8) + [1, 2, 3, 4]
    with Image.open(save_png(rgba.astype(np.uint8), tmp_path / "t.png")) as im:
        assert np.asarray(im).tolist() == [[[1, 2, 3, 4]]]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.png"]  # no temp left

    # a failed rename leaves the old file as it was and no temporary file
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_png(np.zeros((2, 3, 3), np.uint8), path)
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), rgb)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.png"]
