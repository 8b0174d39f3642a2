"""The dogs stage's training recipe, chosen by measurement on held-out TRAINING images.

    python benchmarks/dogs_recipes.py --dogs ../shared/data/tiny-imagenet-dogs

600 of the 3,000 training photographs (a seeded draw) are held out; each recipe trains the tail
that :mod:`benchmarks.stage_dogs` trains (blocks ``TRAIN_FROM``.., the head convolution and a
fresh Dense(6) on the pretrained EfficientNet-Lite0, BatchNorm frozen, on cached inputs of block
``TRAIN_FROM``), or a longer one, on the other 2,400, in torch, and reports the held-out top-1
after every epoch.
The validation images are not read: the recipe is chosen without looking at them.

What the recipes vary, each alone against the stage's recipe (Adam, peak learning rate 1e-3,
cosine decay per step, batch 64, 4 epochs):

- the schedule: epochs, learning rate; the stage's recipe again with other seeds (the batch order
  and the draws of the regularisers) measures how much of a difference is noise;
- which blocks are trained: from block 13 or 11 on instead of 15 (the frozen part cached once at
  the earliest block and run on to each recipe's);
- horizontal flips: a second cached copy of the flipped photographs, each sample's view drawn
  from a seeded generator;
- label smoothing, and mixup of the cached block inputs (one Beta-drawn weight per batch);
- dropout of the pooled features before the Dense layer;
- distillation: the targets mixed with the softmax of the pretrained ImageNet classifier's
  logits of the six breeds (``metadata/classes.tsv``'s ``imagenet_index``), computed once;
- deeper fine-tuning ("input ..." recipes): blocks 3 or 5 to 15 trained at peak learning rate
  1e-4 (the new Dense layer 1e-3), flips, batch 32, at inputs of 160, 192 or 224 pixels (the
  photographs are 64x64: a smaller input loses nothing of them and costs less, but the last
  feature map, where the maps are made, shrinks from 7x7 to 6x6 or 5x5).

``--recipes NAME ...`` trains only those recipes; their rows replace or join the rows of the
``dogs_recipes.json`` already in ``--out`` (refused if that file's held-out references differ).

Reference points printed beside them: that ImageNet classifier restricted to the six breeds on
the held-out images (it was trained on ImageNet, these breeds included, at full resolution), and
the linear probe of the stage. Output: ``dogs_recipes.json`` and ``dogs_recipes.md`` in
``--out`` (default ``benchmarks/results/dogs``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import softmax

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import stage_dogs as sd  # noqa: E402
from benchmarks._common import environment, md_table, progress_bar, write_json, write_text  # noqa: E402

HOLDOUT = 600
HOLDOUT_SEED = 123
# "stage recipe": the stage's recipe until blocks 5-15 at 224 ("input 224, blocks 5-15, ...")
# replaced it; the other recipes vary one thing of it
STAGE = {"epochs": 4, "lr": 1e-3, "head_lr": None, "batch": 64, "seed": sd.SEED,
         "train_from": 15, "size": 224, "flip": False,
         "label_smoothing": 0.0, "mixup": 0.0, "dropout": 0.0, "distill": 0.0}
# deeper fine-tuning: most of the backbone trained at a smaller learning rate than the new
# Dense layer, flips, batch 32; at 224 and at smaller inputs (cheaper; 5x5 maps at 160)
_DEEP = {"lr": 1e-4, "head_lr": 1e-3, "batch": 32, "flip": True}
RECIPES = {
    "stage recipe": {},
    "stage recipe, seed 1": {"seed": 1},
    "stage recipe, seed 2": {"seed": 2},
    "2 epochs": {"epochs": 2},
    "6 epochs": {"epochs": 6},
    "blocks 13-15 trained": {"train_from": 13},
    "blocks 11-15 trained": {"train_from": 11},
    "blocks 11-15 + flips + label smoothing 0.1": {"train_from": 11, "flip": True,
                                                   "label_smoothing": 0.1},
    "lr 5e-4, 6 epochs": {"lr": 5e-4, "epochs": 6},
    "flips": {"flip": True},
    "label smoothing 0.1": {"label_smoothing": 0.1},
    "flips + label smoothing 0.1, 6 epochs": {"flip": True, "label_smoothing": 0.1, "epochs": 6},
    "mixup 0.2": {"mixup": 0.2},
    "dropout 0.5": {"dropout": 0.5},
    "distillation 0.5": {"distill": 0.5},
    "input 160, blocks 3-15, flips, lr 1e-4 (Dense 1e-3), batch 32":
        {**_DEEP, "size": 160, "train_from": 3},
    "input 160, blocks 3-15, ..., seed 1": {**_DEEP, "size": 160, "train_from": 3, "seed": 1},
    "input 160, blocks 3-15, ..., seed 2": {**_DEEP, "size": 160, "train_from": 3, "seed": 2},
    "input 192, blocks 3-15, ...": {**_DEEP, "size": 192, "train_from": 3},
    "input 224, blocks 5-15, ...": {**_DEEP, "size": 224, "train_from": 5},
}
_TINY = {"n_train": 24, "holdout": 6, "recipes": ("stage recipe", "flips + label smoothing 0.1, "
                                                  "6 epochs", "distillation 0.5",
                                                  "blocks 13-15 trained",
                                                  "input 160, blocks 3-15, ..., seed 1")}


def _targets(y, recipe, teacher) -> np.ndarray:
    """One-hot targets, smoothed by ``label_smoothing``, mixed with the softmax of the
    teacher's logits by ``distill``."""
    ls = recipe["label_smoothing"]
    t = np.full((len(y), sd.CLASSES), ls / sd.CLASSES)
    t[np.arange(len(y)), y] += 1.0 - ls
    if recipe["distill"]:
        t = (1.0 - recipe["distill"]) * t + recipe["distill"] * softmax(teacher, axis=1)
    return t


def advance(model, feats: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Cached inputs of block ``start`` run through the frozen blocks ``start .. stop - 1``."""
    import torch

    if start == stop:
        return feats
    f, out = model.features, []
    with torch.inference_mode():
        for i in range(0, len(feats), 256):
            x = torch.from_numpy(np.ascontiguousarray(feats[i:i + 256]))
            out.append(f.blocks(x, start, stop).numpy())
    return np.concatenate(out)


def train_recipe(recipe: dict, views, y, held, y_held, teachers) -> dict:
    """Train a fresh copy of the stage's model with ``recipe`` on cached inputs of block
    ``recipe["train_from"]``; held-out top-1 per epoch."""
    import torch

    r = {**STAGE, **recipe}
    model, _ = sd.build_models(keras_model=False)
    trainer = sd.torch_trainer(model, lr=r["lr"], total_steps=1, train_from=r["train_from"])
    head = list(model.fc.parameters())
    rates = (r["lr"], r["head_lr"] or r["lr"])
    trainer.opt = torch.optim.Adam(
        [{"params": [p for p in trainer.params if all(p is not q for q in head)], "peak": rates[0]},
         {"params": head, "peak": rates[1]}], lr=r["lr"], eps=1e-7)
    model.to(memory_format=torch.channels_last)  # depthwise convolutions: ~2x faster on CPUs
    f = model.features
    plan = sd.batch_plan(len(y), epochs=r["epochs"], batch=r["batch"], seed=r["seed"])
    rng = np.random.default_rng(r["seed"] + 1)
    total, step, log = sum(len(e) for e in plan), 0, {"loss": [], "held_out_top1": []}
    t0 = time.perf_counter()
    for batches in plan:
        seen = loss_sum = 0.0
        for idx in batches:
            flip = rng.random(len(idx)) < 0.5 if r["flip"] else np.zeros(len(idx), bool)
            h = np.where(flip[:, None, None, None], views[1][idx], views[0][idx])
            teacher = np.where(flip[:, None], teachers[1][idx], teachers[0][idx])
            t = _targets(y[idx], r, teacher)
            if r["mixup"]:
                lam, perm = rng.beta(r["mixup"], r["mixup"]), rng.permutation(len(idx))
                h, t = lam * h + (1 - lam) * h[perm], lam * t + (1 - lam) * t[perm]
            keep = (rng.random((len(idx), model.fc.in_features)) >= r["dropout"]) / (1 - r["dropout"])
            for group in trainer.opt.param_groups:
                group["lr"] = sd.cosine_lr(step, total, group["peak"])
            x = torch.from_numpy(np.ascontiguousarray(h, np.float32)).contiguous(
                memory_format=torch.channels_last)
            pooled = torch.flatten(model.avgpool(f.head(f.blocks(x, r["train_from"]))), 1)
            logits = model.fc(pooled * torch.from_numpy(keep.astype(np.float32)))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(t.astype(np.float32)))
            trainer.opt.zero_grad(set_to_none=True)
            loss.backward()
            trainer.opt.step()
            step += 1
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        log["loss"].append(round(loss_sum / seen, 4))
        acc = trainer.logits(held).argmax(1) == y_held
        log["held_out_top1"].append(round(100.0 * float(acc.mean()), 1))
    log["seconds"] = round(time.perf_counter() - t0, 1)
    log["settings"] = r
    return log


def _cached_views(model, images: np.ndarray, keys: set, progress: bool) -> dict:
    """``{(size, start): [inputs of block start, those of the mirror images]}``: per input
    size, the frozen part run once up to the earliest block asked for, then on to the others."""
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    views = {}
    for size in sorted({k[0] for k in keys}):
        starts = sorted(k[1] for k in keys if k[0] == size)
        views[size, starts[0]] = [
            sd.cache_features(model, imgs, progress=progress, desc=f"recipes: {kind} at {size}",
                              stop=starts[0], size=size)
            for kind, imgs in (("features", images), ("mirrored", mirrored))]
        for a, b in zip(starts, starts[1:]):
            views[size, b] = [advance(model, v, a, b) for v in views[size, a]]
        for a in starts[:-1]:  # only the blocks' inputs the recipes start from are kept
            if (size, a) not in keys:
                del views[size, a]
    return views


def _key(name: str) -> tuple[int, int]:
    r = {**STAGE, **RECIPES[name]}
    return r["size"], r["train_from"]


def run(data, out_dir: Path, *, tiny: bool = False, progress: bool = True,
        only=None) -> dict:
    """Train every recipe (or the ``only`` ones: their rows replace or join those of the
    ``dogs_recipes.json`` already in ``out_dir``) and write the tables."""
    train = sd.load_split(data, "train", _TINY["n_train"] if tiny else None)
    n_held = _TINY["holdout"] if tiny else HOLDOUT
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(train))
    held, rest = order[:n_held], order[n_held:]
    names = tuple(only) if only else _TINY["recipes"] if tiny else tuple(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    stage_key = (STAGE["size"], STAGE["train_from"])
    model, _ = sd.build_models(keras_model=False)
    t0 = time.perf_counter()
    views = _cached_views(model, train.images, {_key(n) for n in names} | {stage_key}, progress)
    cache_s = time.perf_counter() - t0
    plain = views[stage_key][0]
    rows = sd.imagenet_rows(data)
    logits = [sd.imagenet_logits(v, rows, start=stage_key[1]) for v in views[stage_key]]
    y = train.labels.astype(np.int64)
    ref = {"imagenet_head_held_out_top1": round(100.0 * float(
        np.mean(logits[0][held].argmax(1) == y[held])), 1)}
    probe = sd.linear_probe(model, plain[rest], y[rest], plain[held], y[held],
                            start=stage_key[1])
    ref["linear_probe_held_out_top1"] = round(probe["val_top1"], 1)
    out_dir, before = Path(out_dir), None
    if only and (out_dir / "dogs_recipes.json").is_file():
        before = json.loads((out_dir / "dogs_recipes.json").read_text(encoding="utf-8"))
        if before["references"] != ref or before["n_held_out"] != len(held):
            raise ValueError("the recipes already in dogs_recipes.json were measured on other "
                             "held-out images; rerun them all (no --recipes)")
    results = {}
    for name in progress_bar(names, enabled=progress, desc="recipes", unit="recipe"):
        v = views[_key(name)]
        results[name] = train_recipe(RECIPES[name], (v[0][rest], v[1][rest]), y[rest],
                                     v[0][held], y[held], (logits[0][rest], logits[1][rest]))
    res = {"data": str(data), "n_train": len(rest), "n_held_out": len(held),
           "holdout_seed": HOLDOUT_SEED, "train_from_block": STAGE["train_from"],
           "cache_seconds": round(cache_s, 1), "references": ref, "recipes": results,
           "environment": environment()}
    if before is not None:
        res["recipes"] = {**before["recipes"], **results}
    write_json(out_dir / "dogs_recipes.json", res)
    write_text(out_dir / "dogs_recipes.md", markdown(res))
    return res


def markdown(res: dict) -> str:
    rows = []
    for name, r in res["recipes"].items():
        acc, st = r["held_out_top1"], {**STAGE, **r["settings"]}
        rows.append([name, st["size"], sd.blocks_text(st["train_from"]), " / ".join(f"{a:.1f}" for a in acc),
                     f"{acc[-1]:.1f}", " / ".join(f"{v:.3f}" for v in r["loss"]), r["seconds"]])
    ref = res["references"]
    return "\n".join([
        "## Dogs: training recipes on held-out training images (torch)",
        "",
        f"{res['n_held_out']} of the training photographs held out (seed "
        f"{res['holdout_seed']}), {res['n_train']} trained on. Unless a recipe says otherwise: "
        f"input {STAGE['size']}, {sd.blocks_text(res['train_from_block'])}, the head convolution and a "
        f"fresh Dense(6) trained (BatchNorm frozen) on cached inputs of the first trained block, "
        f"Adam {STAGE['lr']:g}, cosine decay, batch {STAGE['batch']}, {STAGE['epochs']} epochs. "
        "Held-out top-1 (%) after each epoch and training loss per epoch (against the recipe's "
        "own targets: smoothed, mixed or distilled losses are not comparable with plain ones); "
        "s: training seconds (2-core machine), caching excluded.",
        "",
        md_table(["recipe", "input", "blocks trained", "held-out top-1 per epoch", "final",
                  "loss per epoch", "s"], rows),
        "",
        f"References on the same held-out images: the pretrained ImageNet classifier restricted "
        f"to the six breeds {ref['imagenet_head_held_out_top1']:.1f}%; the linear probe on the "
        f"pretrained features {ref['linear_probe_held_out_top1']:.1f}%. Binomial standard error "
        f"of a top-1 near 83% on {res['n_held_out']} images: "
        f"{100 * np.sqrt(0.83 * 0.17 / res['n_held_out']):.1f} points.",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dogs", type=Path, default=sd.DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "dogs")
    p.add_argument("--tiny", action="store_true", help="a handful of images (a smoke test)")
    p.add_argument("--recipes", nargs="+", metavar="NAME",
                   help="train only these recipes; their rows replace or join those already "
                        "in --out's dogs_recipes.json")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if not (a.dogs / "metadata" / "train").is_dir():
        print(f"needs --dogs DIR (the tiny-imagenet-dogs folder); {a.dogs} is not one",
              file=sys.stderr)
        return 2
    res = run(a.dogs, a.out, tiny=a.tiny, progress=not a.no_progress, only=a.recipes)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
