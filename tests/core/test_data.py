"""Tests of cam_core.data: the synthetic set, the annotation readers and batch streaming."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from cam_core.boxes import scale_boxes
from cam_core.data import (
    SHAPES,
    Dataset,
    iter_batches,
    make_synthetic,
    read_class_names,
    read_csv_boxes,
    read_voc,
    read_wsol,
    sample_photos,
)

# --------------------------------------------------------------------------------------------
# synthetic set


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(400, seed=7)


def test_same_seed_same_bytes_other_seed_differs():
    a = make_synthetic(24, seed=3, size=48)
    b = make_synthetic(24, seed=3, size=48)
    c = make_synthetic(24, seed=4, size=48)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    assert np.array_equal(a.labels, b.labels)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert a.images.tobytes() != c.images.tobytes()
    assert not np.array_equal(a.labels, c.labels)


def test_larger_n_extends_smaller_n():
    small, large = make_synthetic(13, seed=2, size=40), make_synthetic(27, seed=2, size=40)
    assert np.array_equal(small.images, large.images[:13])
    assert np.array_equal(small.labels, large.labels[:13])


def test_types_and_shapes(synth):
    n = len(synth)
    assert synth.images.shape == (n, 64, 64, 3) and synth.images.dtype == np.uint8
    assert synth.labels.shape == (n,) and synth.labels.dtype == np.int64
    assert synth.masks.shape == (n, 64, 64) and synth.masks.dtype == bool
    assert len(synth.boxes) == n
    assert all(b.shape == (1, 4) and b.dtype == np.int64 for b in synth.boxes)
    assert synth.class_names == SHAPES[:10]
    assert len(set(SHAPES)) == len(SHAPES) >= 10


def test_boxes_are_exactly_tight_around_the_object(synth):
    for mask, box in zip(synth.masks, synth.boxes):
        ys, xs = [], []
        for y in range(mask.shape[0]):  # plain loop as the oracle
            for x in range(mask.shape[1]):
                if mask[y, x]:
                    ys.append(y)
                    xs.append(x)
        assert xs, "an image without object pixels"
        assert box[0].tolist() == [min(xs), min(ys), max(xs) + 1, max(ys) + 1]


def test_object_size_range(synth):
    b = np.concatenate(synth.boxes)
    extent = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 64
    assert extent.min() >= 0.18 and extent.max() <= 0.7


def test_object_stands_out_from_its_surroundings(synth):
    from scipy.ndimage import binary_dilation

    imgs = synth.images.astype(float)
    for img, mask in zip(imgs, synth.masks):
        ring = binary_dilation(mask, iterations=2) & ~mask
        inside = img[mask].mean(axis=0)
        outside = img[ring].mean(axis=0)
        assert np.linalg.norm(inside - outside) > 40  # of 441 for black vs white


def test_classes_are_balanced_in_every_block():
    d = make_synthetic(53, seed=11, size=32, num_classes=5)
    for start in range(0, 50, 5):
        assert sorted(d.labels[start : start + 5].tolist()) == [0, 1, 2, 3, 4]
    counts = np.bincount(d.labels, minlength=5)
    assert counts.max() - counts.min() <= 1


def test_background_texture_is_independent_of_the_class(synth):
    table = np.zeros((len(synth.background_names), 10))
    np.add.at(table, (synth.backgrounds, synth.labels), 1)
    table = table[table.sum(axis=1) > 0]
    assert table.shape[0] >= 8  # most textures are in use
    assert stats.chi2_contingency(table).pvalue > 0.01


def _centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Nearest class centroid, trained on the first half, scored on the second half."""
    half = len(labels) // 2
    mu, sd = features[:half].mean(axis=0), features[:half].std(axis=0) + 1e-9
    f = (features - mu) / sd
    cents = np.stack([f[:half][labels[:half] == c].mean(axis=0) for c in range(10)])
    pred = np.argmin(((f[half:, None, :] - cents[None]) ** 2).sum(axis=2), axis=1)
    return float((pred == labels[half:]).mean())


def test_background_statistics_do_not_predict_the_class(synth):
    outside = ~synth.masks
    for i, b in enumerate(synth.boxes):  # everything outside the object's box
        x0, y0, x1, y1 = b[0]
        outside[i, y0:y1, x0:x1] = False
    imgs = synth.images.astype(float)
    mean = np.stack([imgs[i][outside[i]].mean(axis=0) for i in range(len(imgs))])
    std = np.stack([imgs[i][outside[i]].std(axis=0) for i in range(len(imgs))])
    texture = np.eye(len(synth.background_names))[synth.backgrounds]
    feats = np.concatenate([mean, std, texture], axis=1)
    assert _centroid_accuracy(feats, synth.labels) < 0.2  # chance is 0.1
    # the same classifier does see the class in the object's own geometry
    b = np.concatenate(synth.boxes)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    fill = synth.masks.sum(axis=(1, 2)) / (w * h)
    geometry = np.stack([fill, np.maximum(w, h) / np.minimum(w, h)], axis=1)
    assert _centroid_accuracy(geometry, synth.labels) > 0.35


def test_object_colour_does_not_predict_the_class(synth):
    imgs = synth.images.astype(float)
    colour = np.stack([imgs[i][synth.masks[i]].mean(axis=0) for i in range(len(imgs))])
    assert _centroid_accuracy(colour, synth.labels) < 0.2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "`n` must be >= 1"),
        ({"n": 2.0}, TypeError, "`n` must be an int"),
        ({"n": 2, "seed": -1}, ValueError, "`seed`"),
        ({"n": 2, "size": 16}, ValueError, "`size` must be >= 32"),
        ({"n": 2, "num_classes": 13}, ValueError, "`num_classes` must be <= 12"),
        ({"n": 2, "num_classes": 1}, ValueError, "`num_classes` must be >= 2"),
    ],
)
def test_make_synthetic_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_synthetic(**kwargs)


# --------------------------------------------------------------------------------------------
# helpers for files written in tmp_path


def _png(path, w, h, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


def _write_wsol(root, **override):
    """A 3-image WSOL folder; ``override`` replaces whole metadata files by name."""
    _png(root / "val" / "a.png", 20, 10)
    _png(root / "val" / "b.png", 8, 8)
    _png(root / "val" / "c.png", 5, 7)
    files = {
        "image_ids.txt": "val/a.png\nval/b.png\nval/c.png\n",
        "class_labels.txt": "val/a.png,2\nval/b.png,0\nval/c.png,1\n",
        "image_sizes.txt": "val/a.png,40,30\nval/b.png,8,8\nval/c.png,5,7\n",
        "localization.txt": "val/a.png,0,0,39,29\nval/a.png,10,5,19,14\nval/b.png,3,4,3,4\n",
        "classes.tsv": "index\twnid\tnames\n0\tn0\tzero, nought\n1\tn1\tone\n2\tn2\ttwo\n",
    }
    files.update(override)
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if text is not None:
            (meta / name).write_text(text)
    return root


# --------------------------------------------------------------------------------------------
# read_wsol


def test_read_wsol_converts_inclusive_corners_once(tmp_path):
    ds = read_wsol(_write_wsol(tmp_path))
    assert len(ds) == 3
    assert ds.ids == ("val/a.png", "val/b.png", "val/c.png")
    assert ds.labels.tolist() == [2, 0, 1]
    assert ds.sizes.tolist() == [[40, 30], [8, 8], [5, 7]]
    assert ds[0].boxes.tolist() == [[0, 0, 40, 30], [10, 5, 20, 15]]
    assert ds[1].boxes.tolist() == [[3, 4, 4, 5]]  # one pixel
    assert ds[2].boxes.shape == (0, 4)  # no box: kept, empty
    assert ds.class_names == ("zero, nought", "one", "two")
    assert ds[0].path == tmp_path / "val" / "a.png"
    assert not ds[0].boxes.flags.writeable


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"localization.txt": "val/a.png,0,0,40,29\n"}, r"localization\.txt:1: .*outside"),
        ({"localization.txt": "val/a.png,1,1,2,2\nval/b.png,5,1,4,2\n"},
         r"localization\.txt:2: .*inverted"),
        ({"localization.txt": "val/a.png,1,1,2,2\nval/zz.png,1,1,2,2\n"},
         r"localization\.txt:2: unknown image id 'val/zz.png'"),
        ({"localization.txt": "val/a.png,1,1,2,x\n"}, r"localization\.txt:1: .*number; got 'x'"),
        ({"localization.txt": "val/a.png,1,1,2\n"}, r"localization\.txt:1: expected 5"),
        ({"class_labels.txt": "val/a.png,2\nval/c.png,1\n"},
         r"image_ids\.txt:2: image 'val/b.png' has no entry in .*class_labels\.txt"),
        ({"class_labels.txt": "val/a.png,2\nval/b.png,0\nval/c.png,1\nval/b.png,0\n"},
         r"class_labels\.txt:4: image id 'val/b.png' appears twice"),
        ({"class_labels.txt": "val/a.png,2\nval/b.png,7\nval/c.png,1\n"},
         r"class_labels\.txt:2: label 7 is not in 0\.\.2"),
        ({"image_sizes.txt": "val/a.png,40,30\nval/b.png,8,eight\nval/c.png,5,7\n"},
         r"image_sizes\.txt:2: .*number; got 'eight'"),
        ({"image_ids.txt": "val/a.png\nval/b.png\nval/c.png\nval/a.png\n"},
         r"image_ids\.txt:4: image id 'val/a.png' is listed twice"),
        ({"image_ids.txt": "val/a.png\nval/missing.png\n"},
         r"image_ids\.txt:2: image file .*missing\.png does not exist"),
    ],
)
def test_read_wsol_bad_files_name_file_and_line(tmp_path, override, match):
    root = _write_wsol(tmp_path, **override)
    with pytest.raises(ValueError, match=match):
        read_wsol(root)


def test_read_wsol_real_imagenet_subset(imagenet_dir):
    ds = read_wsol(imagenet_dir)
    assert len(ds) == 1300
    assert sum(len(b) for b in ds.boxes) == 1943
    assert len(ds.class_names) == 1000
    first = ds[0]
    assert first.id == "val/ILSVRC2012_val_00000347.JPEG"
    assert first.size == (500, 375) and first.label == 472
    assert first.boxes[0].tolist() == [20, 175, 112, 293]  # file: 20,175,111,292 inclusive
    sizes = ds.sizes
    for r in ds:  # every box inside its original image
        assert (r.boxes[:, 2] <= r.size[0]).all() and (r.boxes[:, 3] <= r.size[1]).all()
    assert sizes.min() > 0
    with Image.open(first.path) as im:
        assert im.size == (227, 227)  # stored squashed; boxes stay in original pixels
    batch = next(iter_batches(ds[:3], batch_size=3, size=224))
    assert batch.images.shape == (3, 224, 224, 3)
    np.testing.assert_allclose(batch.boxes[0][0], [20 * 224 / 500, 175 * 224 / 375,
                                                   112 * 224 / 500, 293 * 224 / 375])


# --------------------------------------------------------------------------------------------
# read_voc

_VOC = """<annotation>
  <folder>x</folder>
  <filename>{filename}</filename>
  <size>
    <width>{w}</width>
    <height>{h}</height>
    <depth>3</depth>
  </size>
{objects}</annotation>
"""
_OBJ = """  <object>
    <name>{name}</name>
    <bndbox>
      <xmin>{x0}</xmin>
      <ymin>{y0}</ymin>
      <xmax>{x1}</xmax>
      <ymax>{y1}</ymax>
    </bndbox>
  </object>
"""


def _voc(ann, name, filename, w, h, objects):
    ann.mkdir(parents=True, exist_ok=True)
    objs = "".join(_OBJ.format(name=n, x0=a, y0=b, x1=c, y1=d) for n, a, b, c, d in objects)
    (ann / name).write_text(_VOC.format(filename=filename, w=w, h=h, objects=objs))


def test_read_voc_zero_and_one_based(tmp_path):
    ann, img = tmp_path / "ann", tmp_path / "img"
    _png(img / "n1_0001.JPEG", 50, 40)
    _png(img / "dog.jpg", 30, 20)
    _voc(ann, "a.xml", "n1_0001", 50, 40, [("n1", 0, 0, 49, 39), ("n1", 5, 6, 7, 8)])
    _voc(ann, "b.xml", "dog.jpg", 30, 20, [("n0", 1, 2, 3, 4)])
    ds = read_voc(ann, img)
    assert ds.class_names == ("n0", "n1")
    assert ds.ids == ("n1_0001", "dog.jpg")
    assert ds[0].path == img / "n1_0001.JPEG"
    assert ds.labels.tolist() == [1, 0]
    assert ds[0].boxes.tolist() == [[0, 0, 50, 40], [5, 6, 8, 9]]
    assert ds[0].size == (50, 40)
    # PASCAL VOC: first pixel is 1; box 1..3 inclusive -> pixels 0..2 -> half-open 0..3
    _voc(ann, "a.xml", "n1_0001", 50, 40, [("n1", 1, 1, 50, 40)])
    ds1 = read_voc(ann, img, origin=1, class_index={"n0": 5, "n1": 9})
    assert ds1[0].boxes.tolist() == [[0, 0, 50, 40]]
    assert ds1[1].boxes.tolist() == [[0, 1, 3, 4]]
    assert ds1.labels.tolist() == [9, 5] and ds1.class_names is None


def _bad_voc_cases():
    def body(objects, w=50, filename="im.png"):
        objs = "".join(_OBJ.format(name=n, x0=a, y0=b, x1=c, y1=d) for n, a, b, c, d in objects)
        return _VOC.format(filename=filename, w=w, h=40, objects=objs)

    # line numbers: <filename> 3, <width> 5, first <object> 9, its <name> 10, <bndbox> 11,
    # <xmin> 12, <ymin> 13; the second object's <name> is line 19.
    return [
        (body([("n1", 0, 0, 50, 39)]), {}, r"a\.xml:11: box \(0, 0, 50, 39\).*outside"),
        (body([("n1", 9, 0, 3, 39)]), {}, r"a\.xml:11: .*inverted"),
        (body([("n1", 0, "y", 3, 39)]), {}, r"a\.xml:13: <ymin> must be a number; got 'y'"),
        (body([("", 0, 0, 3, 3)]), {}, r"a\.xml:9: <name> is missing"),
        (body([("n1", 0, 0, 3, 3), ("n2", 0, 0, 3, 3)]), {}, r"a\.xml:19: object class 'n2'"),
        (body([("n1", 0, 0, 3, 3)]), {"class_index": {"n0": 0}},
         r"a\.xml:10: object name 'n1' is not in `class_index`"),
        (body([]), {}, r"a\.xml:1: no <object>"),
        (body([("n1", 0, 0, 3, 3)], w="wide"), {}, r"a\.xml:5: <width> must be a number"),
        (body([("n1", 0, 0, 3, 3)], filename="gone.png"), {}, r"a\.xml:3: image 'gone.png' not found"),
        ("<annotation>\n<filename>im.png</filename>\n</size>\n</annotation>\n", {},
         r"a\.xml:3: malformed XML"),
    ]


@pytest.mark.parametrize(("text", "kwargs", "match"), _bad_voc_cases())
def test_read_voc_bad_files_name_file_and_line(tmp_path, text, kwargs, match):
    _png(tmp_path / "img" / "im.png", 50, 40)
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_voc(tmp_path / "ann", tmp_path / "img", **kwargs)


def test_read_voc_rejects_bad_origin_and_empty_folder(tmp_path):
    (tmp_path / "ann").mkdir()
    with pytest.raises(ValueError, match="`origin` must be 0 or 1"):
        read_voc(tmp_path / "ann", tmp_path, origin=2)
    with pytest.raises(ValueError, match="no .xml files"):
        read_voc(tmp_path / "ann", tmp_path)


# --------------------------------------------------------------------------------------------
# read_csv_boxes


def test_read_csv_boxes_groups_rows_and_keeps_half_open(tmp_path):
    _png(tmp_path / "p.png", 30, 20)
    _png(tmp_path / "q.png", 10, 10)
    csv = tmp_path / "boxes.csv"
    csv.write_text("image,x0,y0,x1,y1,class\np.png,0,0,30,20,3\nq.png,1,2,3,4,1\np.png,5,5,6,6,3\n")
    ds = read_csv_boxes(csv, images_dir=tmp_path)
    assert ds.ids == ("p.png", "q.png")
    assert ds.labels.tolist() == [3, 1]
    assert ds[0].boxes.tolist() == [[0, 0, 30, 20], [5, 5, 6, 6]]
    assert ds[0].size == (30, 20) and ds.class_names is None
    csv.write_text("image,x0,y0,x1,y1,class\np.png,0,0,30,20,dog\nq.png,1,2,3,4,cat\n")
    named = read_csv_boxes(csv, images_dir=tmp_path)
    assert named.class_names == ("cat", "dog") and named.labels.tolist() == [1, 0]
    mapped = read_csv_boxes(csv, images_dir=tmp_path, class_index={"cat": 281, "dog": 207})
    assert mapped.labels.tolist() == [207, 281]


@pytest.mark.parametrize(
    ("rows", "kwargs", "match"),
    [
        ("p.png,0,0,31,20,1\n", {}, r"b\.csv:2: box \(0, 0, 31, 20\) lies outside the 30x20"),
        ("p.png,0,0,30,20,1\np.png,4,0,2,20,1\n", {}, r"b\.csv:3: .*inverted"),
        ("p.png,0,zero,30,20,1\n", {}, r"b\.csv:2: a box corner must be a number; got 'zero'"),
        ("p.png,0,0,30,20,\n", {}, r"b\.csv:2: the class is missing"),
        ("p.png,0,0,30,20\n", {}, r"b\.csv:2: expected 6 fields"),
        ("p.png,0,0,3,2,1\nnone.png,0,0,3,2,1\n", {}, r"b\.csv:3: image 'none.png' not found"),
        ("p.png,0,0,3,2,1\np.png,0,0,3,2,2\n", {}, r"b\.csv:3: image 'p.png' has class 1"),
        ("p.png,0,0,3,2,cat\n", {"class_index": {"dog": 1}}, r"b\.csv:2: class 'cat' is not in"),
        ("", {}, r"b\.csv: no rows"),
    ],
)
def test_read_csv_boxes_bad_files_name_file_and_line(tmp_path, rows, kwargs, match):
    _png(tmp_path / "p.png", 30, 20)
    (tmp_path / "b.csv").write_text("image,x0,y0,x1,y1,class\n" + rows)
    with pytest.raises(ValueError, match=match):
        read_csv_boxes(tmp_path / "b.csv", images_dir=tmp_path, **kwargs)


def test_read_csv_boxes_bad_header(tmp_path):
    (tmp_path / "b.csv").write_text("file,left,top,right,bottom,label\n")
    with pytest.raises(ValueError, match=r"b\.csv:1: the header must be image,x0,y0,x1,y1,class"):
        read_csv_boxes(tmp_path / "b.csv", images_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# read_class_names


def test_read_class_names(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_text("index\twnid\tnames\n1\tn1\tone, uno\n0\tn0\tzero\n")
    assert read_class_names(p) == ("zero", "one, uno")
    assert read_class_names(p, column="wnid") == ("n0", "n1")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("idx\tnames\n0\ta\n", r"c\.tsv:1: the header must name"),
        ("index\tnames\n0\ta\n0\tb\n", r"c\.tsv:3: class index 0 appears twice"),
        ("index\tnames\n0\ta\n2\tb\n", r"c\.tsv: class indices must run 0\.\.1; 1 is missing"),
        ("index\tnames\nnil\ta\n", r"c\.tsv:2: the class index must be a number"),
        ("index\tnames\n0\ta\tb\n", r"c\.tsv:2: expected 2 tab-separated fields"),
    ],
)
def test_read_class_names_bad(tmp_path, text, match):
    (tmp_path / "c.tsv").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_class_names(tmp_path / "c.tsv")


def test_read_class_names_real(imagenet_dir):
    names = read_class_names(imagenet_dir / "metadata" / "classes.tsv")
    assert len(names) == 1000
    assert names[281].startswith("tabby") and names[285].startswith("Egyptian cat")


# --------------------------------------------------------------------------------------------
# Dataset, scale_boxes, iter_batches


def test_dataset_indexing_and_subsets(tmp_path):
    ds = read_wsol(_write_wsol(tmp_path))
    assert ds[-1].id == "val/c.png"
    sub = ds[1:]
    assert isinstance(sub, Dataset) and sub.ids == ("val/b.png", "val/c.png")
    assert sub.class_names == ds.class_names
    assert ds[[2, 0]].ids == ("val/c.png", "val/a.png")
    assert ds[np.array([True, False, True])].ids == ("val/a.png", "val/c.png")
    assert len(ds[[]]) == 0 and len(ds[np.zeros(3, bool)]) == 0
    with pytest.raises(IndexError, match="index 3 is out of range for 3"):
        ds[[3]]
    with pytest.raises(ValueError, match=r"boolean index must have shape \(3,\)"):
        ds[np.array([True, False])]
    with pytest.raises(TypeError, match="a Dataset is indexed by"):
        ds["a"]


def test_boxes_at_scales_edges(tmp_path):
    ds = read_wsol(_write_wsol(tmp_path))
    at = ds.boxes_at((15, 80))  # (H, W): x * 80 / 40, y * 15 / 30 for the first image
    np.testing.assert_array_equal(at[0], [[0, 0, 80, 15], [20, 2.5, 40, 7.5]])
    np.testing.assert_array_equal(at[1], [[30, 7.5, 40, 9.375]])  # 8x8 -> 15x80
    assert at[2].shape == (0, 4) and at[0].dtype == np.float64
    np.testing.assert_array_equal(
        scale_boxes([[20, 175, 112, 293]], (500, 375), 224),
        [[8.96, 175 * 224 / 375, 112 * 224 / 500, 293 * 224 / 375]],
    )
    with pytest.raises(ValueError, match=r"`boxes` must have shape \(G, 4\); got \(4,\)"):
        scale_boxes([1, 2, 3, 4], (5, 5), 5)


def test_iter_batches_streams_resized_batches(tmp_path):
    ds = read_wsol(_write_wsol(tmp_path))
    batches = list(iter_batches(ds, batch_size=2, size=(12, 16)))
    assert [len(b.labels) for b in batches] == [2, 1]
    first = batches[0]
    assert first.images.shape == (2, 12, 16, 3) and first.images.dtype == np.uint8
    assert first.labels.tolist() == [2, 0] and first.ids == ("val/a.png", "val/b.png")
    assert first.sizes.tolist() == [[40, 30], [8, 8]]
    expected = ds.boxes_at((12, 16))
    got = [b for batch in batches for b in batch.boxes]
    assert all(np.array_equal(e, g) for e, g in zip(expected, got))
    # pixels: a uniform image stays uniform after the resize
    assert (batches[1].images == 0).all()


def test_iter_batches_unreadable_image_names_the_file(tmp_path):
    root = _write_wsol(tmp_path)
    (root / "val" / "b.png").write_bytes(b"not an image")
    it = iter_batches(read_wsol(root), batch_size=1, size=8)
    next(it)
    with pytest.raises(ValueError, match=r"cannot read image .*b\.png"):
        next(it)


def test_iter_batches_bad_arguments(tmp_path):
    ds = read_wsol(_write_wsol(tmp_path))
    with pytest.raises(ValueError, match="`batch_size` must be a positive int; got 0"):
        next(iter_batches(ds, batch_size=0))
    with pytest.raises(TypeError, match="`dataset` must be a Dataset"):
        next(iter_batches([1, 2]))


# --------------------------------------------------------------------------------------------
# sample photographs


def test_sample_photos_are_annotated_inside_their_images():
    photos = sample_photos()
    assert 4 <= len(photos) <= 6
    assert len({p.name for p in photos}) == len(photos)
    for p in photos:
        h, w = p.image.shape[:2]
        assert p.image.dtype == np.uint8 and p.image.shape == (h, w, 3)
        assert p.boxes.dtype == np.int64 and p.boxes.ndim == 2 and p.boxes.shape[1] == 4
        assert len(p.boxes) >= 1
        assert (p.boxes[:, 0] >= 0).all() and (p.boxes[:, 1] >= 0).all()
        assert (p.boxes[:, 2] <= w).all() and (p.boxes[:, 3] <= h).all()
        assert (p.boxes[:, 2] > p.boxes[:, 0]).all() and (p.boxes[:, 3] > p.boxes[:, 1]).all()
        assert not p.image.flags.writeable and not p.boxes.flags.writeable
    cat = next(p for p in photos if p.name == "chelsea")
    assert cat.imagenet_index == 281 and cat.image.shape == (300, 451, 3)


def test_sample_photo_classes_match_imagenet_names(imagenet_dir):
    names = read_class_names(imagenet_dir / "metadata" / "classes.tsv")
    for p in sample_photos():
        if p.imagenet_index is not None:
            assert p.class_name in [n.strip() for n in names[p.imagenet_index].split(",")], p.name
