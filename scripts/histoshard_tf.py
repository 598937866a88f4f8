"""The repository's scripts import ``histoshard_tf``: it is ``histoshard.tf``.

``histoshard.tf`` (``python/histoshard/tf.py``, installed with the wheel of
``scripts/build_wheel.sh``) is the one implementation; this shim makes the
checkout's copy importable under the old name without installing anything,
for ``tf_readback.py``, ``test_histoshard_tf.py`` and ``histoshard_pywriter.py``.
``python histoshard_tf.py OUT`` prints a summary of a folder, as before.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import histoshard.tf  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    print(histoshard.tf.summary(sys.argv[1]))
else:
    sys.modules[__name__] = histoshard.tf
