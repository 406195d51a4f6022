"""Regenerate every ``chapters/*.ipynb`` from its jupytext percent ``.py`` source.

The ``.py`` file is the source of truth (it diffs and merges like code); the ``.ipynb`` next to
it is generated so that the chapter opens directly in Jupyter. The generated notebook has no
outputs, no execution counts and no volatile metadata, and its JSON is written with sorted
keys, so the same source always gives the same bytes.

Usage::

    python scripts/sync_notebooks.py            # rewrite the stale notebooks
    python scripts/sync_notebooks.py --check    # exit 1 and list them instead (CI, tests)

The conversion itself is :func:`tinyodl.grading.notebook.to_ipynb`, shared with the exercise
release tooling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinyodl.grading.notebook import read_notebook, to_ipynb

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = REPO / "chapters"


def chapter_sources(folder: str | Path = CHAPTERS) -> list[Path]:
    """The percent-format chapter sources ``NN_*.py`` in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.py") if p.is_file())


def expected_ipynb(source: str | Path) -> str:
    """The exact JSON text the ``.ipynb`` generated from ``source`` must contain."""
    return to_ipynb(read_notebook(source))


def is_stale(source: str | Path) -> bool:
    """True if the ``.ipynb`` of ``source`` is missing or differs from a fresh conversion."""
    target = Path(source).with_suffix(".ipynb")
    if not target.exists():
        return True
    return target.read_text(encoding="utf-8") != expected_ipynb(source)


def stale_notebooks(folder: str | Path = CHAPTERS) -> list[Path]:
    """The ``.ipynb`` files in ``folder`` that are missing or out of date."""
    return [p.with_suffix(".ipynb") for p in chapter_sources(folder) if is_stale(p)]


def sync(folder: str | Path = CHAPTERS) -> list[Path]:
    """Rewrite every stale ``.ipynb`` in ``folder``; return the files written."""
    written = []
    for source in chapter_sources(folder):
        if is_stale(source):
            target = source.with_suffix(".ipynb")
            # newline="\n": identical bytes on every platform
            with open(target, "w", encoding="utf-8", newline="\n") as f:
                f.write(expected_ipynb(source))
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="only list stale notebooks; exit 1 if there are any"
    )
    parser.add_argument(
        "folder", nargs="?", default=str(CHAPTERS), help="folder of NN_*.py chapter sources"
    )
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"sync_notebooks: {folder} is not a folder", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_notebooks(folder)
        for path in stale:
            print(f"stale: {path} (run python scripts/sync_notebooks.py)")
        return 1 if stale else 0
    for path in sync(folder):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
