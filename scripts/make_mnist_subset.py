"""Build the MNIST subset shipped in tinyodl/datasets from the full MNIST files.

Usage (from the project root)::

    python scripts/make_mnist_subset.py [MNIST_DIR] [--out tinyodl/datasets]

MNIST_DIR defaults to ../shared/data/mnist. The output is byte-reproducible; see
tinyodl/datasets/README.md for the provenance and the licence (CC BY-SA 3.0).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinyodl.data.subset import build_subset

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(ROOT / ".." / "shared/data/mnist"))
    parser.add_argument("--out", default=str(ROOT / "tinyodl" / "datasets"))
    args = parser.parse_args(argv)
    for name, digest in build_subset(args.source, args.out).items():
        print(f"{digest}  {name}")


if __name__ == "__main__":
    main()
