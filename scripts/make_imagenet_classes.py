#!/usr/bin/env python3
# Source: torchvision 0.24.0 (PyPI wheel), torchvision/models/_meta.py, _IMAGENET_CATEGORIES.
# License of that list: BSD-3-Clause (torchvision, Copyright (c) Soumith Chintala 2016).
"""Regenerates ``src/train/models/imagenet_classes.txt``: the 1000 ImageNet
class names, one per line in class-index order (no header; the Rust side
``include_str!``s it to name the predictions of the ImageNet weights).

Source: ``_IMAGENET_CATEGORIES`` in ``torchvision/models/_meta.py`` of the
torchvision 0.24.0 wheel (the release that matches torch 2.9.0), taken from
PyPI with ``pip download --no-deps``. torchvision is BSD-3-Clause licensed
(Copyright (c) Soumith Chintala 2016, all rights reserved); the list is copied
unchanged, so it keeps torchvision's spelling: one short name per class, all
1000 distinct (it says "crane bird" at 134 and "crane" at 517, "maillot" at 638
and "maillot tank suit" at 639, where other lists repeat the names).

The list is read with ``ast`` (nothing from the wheel is imported or run). The
wheel is named in full (CPython 3.11, manylinux x86_64) and sha256-pinned, so
every machine gets the same file whatever its own Python.

    python3 scripts/make_imagenet_classes.py            # rewrite the .txt
    python3 scripts/make_imagenet_classes.py --check    # exit 1 if it differs
    python3 scripts/make_imagenet_classes.py --wheel torchvision-0.24.0-....whl

``--pip`` (default ``$HISTOSHARD_PIP``, else this Python's ``-m pip``) is the
pip that downloads the wheel when ``--wheel`` is not given.
"""

import argparse
import ast
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TORCHVISION = "torchvision==0.24.0"
WHEEL_TAGS = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
              "--platform", "manylinux_2_28_x86_64"]
WHEEL_NAME = "torchvision-0.24.0-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "78fe414b3bb6dbf7e6f6da6f733ba96881f6b29a9b997228de7c5f603e5ed940"
MEMBER = "torchvision/models/_meta.py"
VARIABLE = "_IMAGENET_CATEGORIES"
OUTPUT = Path(__file__).resolve().parent.parent / "src/train/models/imagenet_classes.txt"


def download(pip, dest):
    """Fetch the pinned torchvision wheel into ``dest``; return its path."""
    cmd = pip + ["download", "--no-deps", "--only-binary=:all:", *WHEEL_TAGS,
                 "--disable-pip-version-check", "--no-input", "-q", "-d", str(dest), TORCHVISION]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [l for l in (done.stderr + done.stdout).splitlines() if l.strip()]
        sys.exit(f"make_imagenet_classes: pip download {TORCHVISION} failed"
                 + (f": {lines[-1]}" if lines else ""))
    return Path(dest) / WHEEL_NAME


def categories(wheel):
    """The list assigned to ``_IMAGENET_CATEGORIES`` in the wheel's _meta.py."""
    digest = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"make_imagenet_classes: {wheel} has sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z:
        source = z.read(MEMBER).decode("utf-8")
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == VARIABLE):
            names = ast.literal_eval(node.value)
            break
    else:
        sys.exit(f"make_imagenet_classes: no {VARIABLE} in {MEMBER}")
    if len(names) != 1000 or not all(isinstance(n, str) and n and "\n" not in n for n in names):
        sys.exit(f"make_imagenet_classes: {VARIABLE} is not 1000 one-line names")
    return names


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheel", type=Path, help="a torchvision 0.24.0 wheel already here")
    p.add_argument("--pip", default=os.environ.get("HISTOSHARD_PIP"),
                   help="pip command (default $HISTOSHARD_PIP, else this Python's -m pip)")
    p.add_argument("--output", type=Path, default=OUTPUT)
    p.add_argument("--check", action="store_true", help="compare with --output, write nothing")
    a = p.parse_args()

    pip = shlex.split(a.pip) if a.pip else [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:
        names = categories(a.wheel or download(pip, tmp))
    text = "".join(n + "\n" for n in names)

    if a.check:
        same = a.output.is_file() and a.output.read_text(encoding="utf-8") == text
        print(f"make_imagenet_classes: {a.output} {'matches' if same else 'DIFFERS from'} {TORCHVISION}")
        sys.exit(0 if same else 1)
    part = a.output.with_name(f".{a.output.name}.partial")
    part.write_text(text, encoding="utf-8")
    os.replace(part, a.output)
    print(a.output)


if __name__ == "__main__":
    main()
