#!/usr/bin/env python3
"""Execute a notebook headless, every cell in order, as Jupyter would.

    python run_notebook.py NOTEBOOK.ipynb EXECUTED.ipynb [--timeout SECONDS]

Runs with nbclient on the ``python3`` kernel of the running Python, in the
notebook's folder. Writes the executed notebook (outputs included) to
EXECUTED.ipynb, also when a cell fails. Prints
``run_notebook: NAME: N code cells ran in S s``, or ``FAIL`` with the failing
cell's number, its first line and the error; exits 1 on a failure or when a
code cell did not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebook")
    p.add_argument("executed")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    a = p.parse_args()
    name = os.path.basename(a.notebook)
    nb = nbformat.read(a.notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=a.timeout,
        kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(a.notebook))}},
    )
    start = time.monotonic()
    failed = None
    try:
        client.execute()
    except CellExecutionError as e:
        failed = e
    finally:
        nbformat.write(nb, a.executed)
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if failed is not None:
        cell = next(((i, c) for i, c in code if any(o.get("output_type") == "error" for o in c.outputs)), None)
        where = f"cell {cell[0]} ({cell[1].source.splitlines()[0]!r})" if cell else "a cell"
        error = f"{failed.ename}: {failed.evalue}".splitlines()[0] if failed.ename else str(failed).splitlines()[0]
        print(f"run_notebook: FAIL {name}: {where}: {error} (outputs in {a.executed})", file=sys.stderr)
        return 1
    not_run = [i for i, c in code if c.get("execution_count") is None]
    if not_run:
        print(f"run_notebook: FAIL {name}: code cells {not_run} did not run", file=sys.stderr)
        return 1
    print(f"run_notebook: {name}: {len(code)} code cells ran in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
