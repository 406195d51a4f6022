"""Command-line front ends: ``tinyodl docs ...`` and ``tinyodl exercises gradescope``.

``tinyodl docs build --out DIR``  build the course site (``pip install -e ".[docs]"``)
``tinyodl docs serve DIR``        serve it on http://127.0.0.1:8000/ (math fonts need HTTP)
``tinyodl docs check DIR``        open it in headless Chromium: links, images, math
``tinyodl docs path [--write README.md]``  the learning path (chapters, needs, time)
``tinyodl exercises gradescope EXERCISE --out autograder.zip``  a Gradescope bundle
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def add_docs_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``build``, ``serve`` and ``check`` sub-commands of ``tinyodl docs``."""
    sub = parser.add_subparsers(dest="docs_command", required=True)
    b = sub.add_parser("build", help="build the course website (Sphinx, offline)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder")
    b.add_argument("--root", default=".", metavar="PATH", help="the clone (default: here)")
    b.add_argument(
        "--quick",
        action="store_true",
        help="execute chapters in the quick configuration (TINYODL_QUICK=1) when not cached",
    )
    b.add_argument(
        "--cache", metavar="DIR", help="executed notebooks (default .tinyodl-docs-cache)"
    )
    b.add_argument(
        "--no-execute",
        action="store_true",
        help="execute nothing: chapters missing from the cache are shown without outputs",
    )
    b.add_argument("--force", action="store_true", help="execute every chapter again")
    b.add_argument(
        "--keep-going",
        action="store_true",
        help="a chapter that fails to execute is shown without outputs (exit code 1 at the end)",
    )
    b.add_argument("--only", action="append", metavar="NN", help="only these chapters")
    b.add_argument("--no-api", action="store_true", help="skip the API reference")
    b.add_argument("--jobs", type=int, default=1, metavar="N", help="parallel Sphinx processes")
    s = sub.add_parser("serve", help="serve a built site on 127.0.0.1")
    s.add_argument("site", metavar="DIR")
    s.add_argument("--port", type=int, default=8000)
    p = sub.add_parser("path", help="print the learning path (chapters, needs, time)")
    p.add_argument("--root", default=".", metavar="PATH", help="the clone (default: here)")
    p.add_argument("--write", metavar="README", help="replace the README's learning-path block")
    c = sub.add_parser("check", help="check a built site in headless Chromium")
    c.add_argument("site", metavar="DIR")
    c.add_argument("--screenshots", metavar="DIR", help="save screenshots of every checked page")


def add_gradescope_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exercise", help="exercise number or name (03, 03_quantization)")
    parser.add_argument("--out", default="autograder.zip", metavar="ZIP")
    parser.add_argument("--root", default=".", metavar="PATH", help="the clone (default: here)")
    parser.add_argument("--tests", metavar="FILE.py", help="private grader file to use instead")
    parser.add_argument("--wheel", metavar="WHL", help="install this tinyodl wheel instead")
    parser.add_argument(
        "--wheelhouse", metavar="DIR", help="include these wheels: setup.sh needs no network"
    )
    parser.add_argument(
        "--download-wheels",
        metavar="PYTHON",
        help="download the dependency wheels for this Python (e.g. 3.10) into the bundle",
    )
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per task")
    parser.add_argument(
        "--sandbox-user", default="nobody", metavar="NAME", help="'' to run without one"
    )


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip().zfill(2)[:2] for item in values for v in item.split(",") if v.strip()]


def docs_main(args: argparse.Namespace) -> int:
    if args.docs_command == "build":
        from tinyodl.course.site import build_site

        report = build_site(
            args.out,
            root=args.root,
            configuration="quick" if args.quick else "full",
            cache_dir=args.cache,
            execute=not args.no_execute,
            force=args.force,
            only=_split(args.only),
            api=not args.no_api,
            jobs=args.jobs,
            keep_going=args.keep_going,
        )
        print(report.summary())
        from tinyodl.course.execute import error_summary

        for name, error in report.failed.items():
            print(f"{name} failed to execute: {error_summary(error)}")
        if report.warnings:
            print(f"Sphinx warnings: {Path(args.out) / '.sphinx-warnings.txt'}")
        print(f"view it: tinyodl docs serve {args.out}")
        return 1 if report.failed else 0
    if args.docs_command == "serve":
        return _serve(Path(args.site), args.port)
    if args.docs_command == "path":
        return _path(args.root, args.write)
    return _check(Path(args.site), args.screenshots)


def _path(root: str, write: str | None) -> int:
    from tinyodl.course.catalog import discover
    from tinyodl.course.pages import learning_path_markdown, with_learning_path

    course = discover(root)
    if write is None:
        print(learning_path_markdown(course))
        return 0
    readme = Path(write)
    readme.write_text(with_learning_path(readme.read_text(encoding="utf-8"), course), "utf-8")
    print(f"wrote the learning path into {readme}")
    return 0


def _serve(site: Path, port: int) -> int:
    import functools
    import http.server

    if not (site / "index.html").exists():
        raise FileNotFoundError(f"{site / 'index.html'} does not exist; build the site first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        print(f"serving {site} on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
        httpd.serve_forever()
    return 0


def _check(site: Path, screenshots: str | None) -> int:
    from tinyodl.course.browser import check_links, check_pages

    pages = ["index.html"]
    pages += sorted(p.relative_to(site).as_posix() for p in (site / "chapters").glob("*.html"))
    pages += sorted(p.relative_to(site).as_posix() for p in (site / "exercises").glob("*.html"))
    shots = {}
    if screenshots:
        Path(screenshots).mkdir(parents=True, exist_ok=True)
        shots = {p: Path(screenshots) / (p.replace("/", "_") + ".png") for p in pages}
    ok = True
    for check in check_pages(site, pages, shots):
        print(("ok     " if check.ok else "FAILED ") + check.problems())
        ok = ok and check.ok
    links = check_links(site)
    for page, broken in links.items():
        print(f"broken links in {page}: {broken[:5]}")
    return 0 if ok and not links else 1


def gradescope_main(args: argparse.Namespace) -> int:
    from tinyodl.course.catalog import find_root
    from tinyodl.course.gradescope import build_bundle, download_wheelhouse

    with tempfile.TemporaryDirectory(prefix="tinyodl-wheels-") as tmp:
        wheelhouse = args.wheelhouse
        if args.download_wheels:
            print(f"downloading dependency wheels for Python {args.download_wheels} ...")
            download_wheelhouse(find_root(args.root), Path(tmp), args.download_wheels)
            wheelhouse = tmp
        info = build_bundle(
            args.exercise,
            args.out,
            root=args.root,
            tests=args.tests,
            wheel=args.wheel,
            wheelhouse=wheelhouse,
            timeout=args.timeout,
            sandbox_user=args.sandbox_user,
        )
    print(f"wrote {info['zip']}: exercise {info['exercise']}, {info['points']:g} points")
    for name in info["files"]:
        if not name.startswith("wheels/"):
            print(f"    {name}")
    wheels = sum(1 for n in info["files"] if n.startswith("wheels/"))
    if wheels:
        print(f"    wheels/ ({wheels} wheels)")
    print("Upload it as the autograder of a Gradescope 'Programming Assignment'.", file=sys.stdout)
    return 0
