#!/usr/bin/env python3
"""PyTorch's forward of EfficientNet-Lite with the ImageNet ``.pth`` weights:
the reference that histoshard's burn model is checked against
(``tests/pretrained.rs``), and a by-eye check that the weights classify real
photos.

Model code: ``efficientnet_lite_pytorch`` 0.1.0 (``EfficientNet.from_pretrained``,
TF "SAME" padding, ReLU6, no squeeze-excite); weights: the ``.pth`` that
``scripts/fetch_weights.sh`` caches. ``scripts/setup_torch_venv.sh`` makes a
venv with both torch 2.9.0 and that package. The model is built for the
input's own height and width (static SAME padding computed for it), put in
``eval()`` and run under ``torch.no_grad()`` on the CPU with 2 threads.

Tensor mode (what the Rust test calls)::

    efficientnet_reference.py --weights PTH --variant efficientnet-lite0 \\
        --input IN.f32 --shape N,3,H,W --out OUT.f32 [--features FEAT.f32] [--num-classes K]

reads a raw little-endian float32 NCHW tensor, already normalised; writes the
logits as raw little-endian float32 [N, K] to OUT and, with ``--features``,
the pooled 1280-d features (extract_features → adaptive average pool →
flatten), [N, 1280], to FEAT. K defaults to 1000 (the ImageNet head); any
other K keeps the backbone's weights and gives a fresh head (seed 0).

Photo mode::

    efficientnet_reference.py --weights PTH --photos DIR [--norm tflite|imagenet]
        [--resize 256] [--crop 224] [--top 5] [--save-input IN.f32]

classifies every .png/.jpg in DIR (``scripts/fetch_photos.sh`` puts
chelsea.png, coffee.png and rocket.jpg there): shorter side resized to
``--resize`` (PIL bilinear), centre crop ``--crop``, scaled to [0, 1], then
normalised per channel, and prints the top-``--top`` classes with softmax
probabilities (names from src/train/models/imagenet_classes.txt).
``--save-input`` writes the normalised batch in the tensor mode's format.

Normalisation (``--norm``, photo mode only; the default is ``tflite``):

* ``tflite``: ``(x·255 − 127) / 128``, i.e. mean 127/255, std 128/255 for
  every channel: the "inception-style" scaling of the TF-Lite training
  pipeline these weights were converted from (its MEAN_RGB 127, STDDEV_RGB
  128), and what histoshard's model uses (NORMALIZATION in
  src/train/models/efficientnet.rs).
* ``imagenet``: torchvision's mean [0.485, 0.456, 0.406], std [0.229, 0.224,
  0.225]: about twice the input scale the network was trained on.

Both put the three photos in the right classes (lite0, 224, top-1 softmax):
chelsea tiger cat 0.379 (tflite) vs Egyptian cat 0.355 (imagenet), coffee
espresso 0.957 vs 0.843, rocket missile 0.364 vs 0.413; ``tflite`` is the
more confident on average (mean top-1 0.567 vs 0.537, mean entropy 1.68 vs
1.94 nats), and its stem BatchNorm inputs sit closer to the stored running
means (0.36σ vs 0.64σ). The margin is small: the network tolerates the
wrong scaling, so a good top-1 alone does not prove the normalisation.
"""

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ROOT / "src/train/models/imagenet_classes.txt"
NORMS = {
    "tflite": ([127 / 255] * 3, [128 / 255] * 3),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}
PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg"}


def build(variant, weights, height, width, num_classes):
    """EfficientNet-Lite with the .pth weights, for H×W inputs, in eval mode."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        sys.exit("efficientnet_reference: no efficientnet_lite_pytorch here "
                 "(run scripts/setup_torch_venv.sh and use its Python)")
    torch.manual_seed(0)  # the fresh head when num_classes != 1000
    # The package prints a line on loading; keep stdout for our own output.
    with contextlib.redirect_stdout(sys.stderr):
        # weights_path must be a str: anything else makes the package download.
        model = EfficientNet.from_pretrained(
            variant, weights_path=str(weights), num_classes=num_classes,
            image_size=[height, width])
    return model.eval()


def forward(model, x):
    """(logits, pooled features) of a batch."""
    with torch.no_grad():
        features = F.adaptive_avg_pool2d(model.extract_features(x), 1).flatten(1)
        logits = model(x)
    return logits, features


def read_f32(path, shape):
    data = np.fromfile(path, dtype="<f4")
    want = int(np.prod(shape))
    if data.size != want:
        sys.exit(f"efficientnet_reference: {path} holds {data.size} float32s, "
                 f"--shape {','.join(map(str, shape))} needs {want}")
    return torch.from_numpy(data.astype(np.float32).reshape(shape))


def write_f32(path, tensor):
    np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype="<f4").tofile(path)


def load_photo(path, resize, crop, norm):
    """One photo as a normalised 3×crop×crop tensor (torchvision's Resize +
    CenterCrop on a PIL image, then Normalize)."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    if w <= h:
        size = (resize, max(1, int(resize * h / w)))
    else:
        size = (max(1, int(resize * w / h)), resize)
    image = image.resize(size, Image.BILINEAR)
    w, h = image.size
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in NORMS[norm])
    return (x - mean) / std


def photos(a):
    names = CLASSES.read_text(encoding="utf-8").splitlines()
    files = sorted(p for p in Path(a.photos).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        sys.exit(f"efficientnet_reference: no .png/.jpg photos in {a.photos} "
                 "(scripts/fetch_photos.sh fetches three)")
    x = torch.stack([load_photo(p, a.resize, a.crop, a.norm) for p in files])
    if a.save_input:
        write_f32(a.save_input, x)
    model = build(a.variant, a.weights, a.crop, a.crop, 1000)
    logits, _ = forward(model, x)
    probs = logits.softmax(1)
    print(f"{a.variant}, --norm {a.norm}, resize {a.resize}, crop {a.crop}")
    for path, p in zip(files, probs):
        top = p.topk(a.top)
        print(f"{path.name}:")
        for rank, (prob, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
            print(f"  {rank}. {prob:.4f}  {index:4d} {names[index]}")


def tensors(a):
    try:
        shape = [int(s) for s in a.shape.split(",")]
    except ValueError:
        shape = []
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
        sys.exit(f"efficientnet_reference: --shape {a.shape!r} is not N,3,H,W")
    x = read_f32(a.input, shape)
    model = build(a.variant, a.weights, shape[2], shape[3], a.num_classes)
    logits, features = forward(model, x)
    write_f32(a.out, logits)
    if a.features:
        write_f32(a.features, features)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, type=Path, help="the .pth (scripts/fetch_weights.sh)")
    p.add_argument("--variant", default="efficientnet-lite0",
                   choices=["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
    tensor = p.add_argument_group("tensor mode")
    tensor.add_argument("--input", type=Path, help="raw little-endian float32 NCHW, normalised")
    tensor.add_argument("--shape", help="N,3,H,W of --input")
    tensor.add_argument("--out", type=Path, help="logits, raw little-endian float32 [N, K]")
    tensor.add_argument("--features", type=Path, help="pooled features, float32 [N, 1280]")
    tensor.add_argument("--num-classes", type=int, default=1000, help="K (default 1000)")
    photo = p.add_argument_group("photo mode")
    photo.add_argument("--photos", type=Path, help="folder of .png/.jpg photos to classify")
    photo.add_argument("--norm", choices=sorted(NORMS), default="tflite",
                       help="input normalisation (default tflite: (x*255-127)/128)")
    photo.add_argument("--resize", type=int, default=256, help="shorter side (default 256)")
    photo.add_argument("--crop", type=int, default=224, help="centre crop (default 224)")
    photo.add_argument("--top", type=int, default=5)
    photo.add_argument("--save-input", type=Path, help="write the normalised batch here")
    a = p.parse_args()

    torch.set_num_threads(2)
    if not a.weights.is_file():
        sys.exit(f"efficientnet_reference: no weights at {a.weights} (scripts/fetch_weights.sh)")
    if a.photos:
        photos(a)
    elif a.input and a.shape and a.out:
        tensors(a)
    else:
        p.error("give --input, --shape and --out (tensor mode) or --photos DIR")


if __name__ == "__main__":
    main()
