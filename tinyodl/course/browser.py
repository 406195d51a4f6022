"""Check a built site the way a reader sees it: in headless Chromium, and by its links.

:func:`check_links` reads every HTML file of the site and checks that each internal link
(``href``/``src``, fragments included) points to a file and an ``id`` that exist.
:func:`check_pages` opens pages in a real browser (Debian's ``chromium`` driven by the
``playwright`` package through ``executable_path``; Playwright never downloads a browser
here) served from ``127.0.0.1``, and for each page reports the images that did not load
(zero natural size), the links that do not resolve, whether MathJax typeset the math
without errors, and every request that tried to leave the machine (they are blocked: the
site must work offline). It can save full-page screenshots.

``tinyodl docs check DIR`` runs both.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

#: Chromium flags for a headless run on a shared, offline machine.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
_SKIP_SCHEMES = ("mailto:", "javascript:", "data:", "tel:")


def find_chromium() -> str | None:
    """``$TINYODL_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the PATH."""
    explicit = os.environ.get("TINYODL_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


# --------------------------------------------------------------------------- static links


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.resources: list[str] = []  # what the browser loads (not links it may follow)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key) and (key == "id" or tag == "a"):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) and tag in ("a", "img", "link", "script", "source"):
                self.links.append(attrs[key])
        if tag in ("img", "script", "source", "iframe", "embed") and attrs.get("src"):
            self.resources.append(attrs["src"])
        if tag == "link" and attrs.get("href") and "canonical" not in (attrs.get("rel") or ""):
            self.resources.append(attrs["href"])


@functools.lru_cache(maxsize=4096)
def _parse(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8", errors="replace"))
    return collector


def _resolve(site: Path, page: Path, link: str) -> tuple[Path, str] | None:
    """(file, fragment) an internal link points to; None for external links."""
    if link.startswith(_SKIP_SCHEMES) or link.startswith("//"):
        return None
    parts = urlsplit(link)
    if parts.scheme or parts.netloc:
        return None
    url, fragment = urldefrag(link)
    path = unquote(urlsplit(url).path)
    if not path:
        target = page
    elif path.startswith("/"):
        target = site / path.lstrip("/")
    else:
        target = (page.parent / path).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(fragment)


def broken_links(site: str | Path, page: str | Path) -> list[str]:
    """The internal links of ``page`` (a file of the site) that do not resolve."""
    site, page = Path(site).resolve(), Path(page).resolve()
    broken = []
    for link in _parse(page).links:
        resolved = _resolve(site, page, link)
        if resolved is None:
            continue
        target, fragment = resolved
        if not target.is_file() or site not in target.parents:
            broken.append(f"{link} (no file {target})")
        elif fragment and target.suffix == ".html" and fragment not in _parse(target).ids:
            broken.append(f"{link} (no id {fragment!r} in {target.name})")
    return broken


def external_references(page: str | Path) -> list[str]:
    """Resources (scripts, stylesheets, images, fonts in ``<link>``) a page would load from
    another host. Links to other sites (``<a href>``) are not loaded, so not counted."""
    found = []
    for link in _parse(Path(page).resolve()).resources:
        if urlsplit(link).scheme in ("http", "https") or link.startswith("//"):
            found.append(link)
    return found


def check_links(site: str | Path) -> dict[str, list[str]]:
    """Every HTML file of the site -> its broken internal links (only files that have some)."""
    site = Path(site).resolve()
    problems = {}
    for page in sorted(site.rglob("*.html")):
        broken = broken_links(site, page)
        if broken:
            problems[page.relative_to(site).as_posix()] = broken
    return problems


# --------------------------------------------------------------------------- in the browser


@dataclass
class PageCheck:
    """What the browser saw on one page."""

    page: str
    title: str = ""
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    math: int = 0
    math_rendered: int = 0
    math_errors: int = 0
    failed_requests: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshot: str | None = None

    @property
    def ok(self) -> bool:
        return not (
            self.broken_images
            or self.broken_links
            or self.math_errors
            or self.math_rendered < self.math
            or self.failed_requests
            or self.blocked_requests
        )

    def problems(self) -> str:
        parts = []
        for name in ("broken_images", "broken_links", "failed_requests", "blocked_requests"):
            if getattr(self, name):
                parts.append(f"{name}: {getattr(self, name)[:5]}")
        if self.math_errors or self.math_rendered < self.math:
            parts.append(
                f"math: {self.math_rendered}/{self.math} rendered, {self.math_errors} errors"
            )
        return f"{self.page}: " + ("; ".join(parts) or "ok")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class SiteServer:
    """The site served over HTTP on ``127.0.0.1`` (an ephemeral port) in a thread."""

    def __init__(self, site: str | Path):
        handler = functools.partial(_Quiet, directory=str(Path(site).resolve()))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> SiteServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


_MATH_JS = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const math = document.querySelectorAll('.math');
  let rendered = 0;
  for (const m of math) {
    if (m.querySelector('mjx-container')) rendered++;
  }
  const errors = document.querySelectorAll('mjx-merror, .MathJax_Error, [data-mjx-error]').length;
  return {math: math.length, rendered: rendered, errors: errors,
          mathjax: !!(window.MathJax && MathJax.version)};
}"""

_IMAGES_JS = """async () => {
  const images = Array.from(document.images);
  images.forEach(i => { i.loading = 'eager'; });
  await Promise.all(images.map(i => i.decode().catch(() => null)));
  return images.map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth,
                           height: i.naturalHeight}));
}"""

_LINKS_JS = "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"


def check_pages(
    site: str | Path,
    pages: list[str],
    screenshots: dict[str, str | Path] | None = None,
    chromium: str | None = None,
    timeout_ms: int = 60_000,
) -> list[PageCheck]:
    """Open ``pages`` (paths relative to ``site``) in headless Chromium and check each.

    Parameters
    ----------
    site : path
        The built site.
    pages : list of str
        e.g. ``["index.html", "chapters/00_foundations.html"]``.
    screenshots : dict, optional
        page -> PNG path for a full-page screenshot.
    chromium : str, optional
        The browser executable (default :func:`find_chromium`).
    """
    from playwright.sync_api import sync_playwright

    site = Path(site).resolve()
    executable = chromium or find_chromium()
    if executable is None:
        raise FileNotFoundError("no chromium executable (apt-get install chromium)")
    screenshots = screenshots or {}
    results = []
    with SiteServer(site) as server, tempfile.TemporaryDirectory() as profile:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=[f for f in CHROMIUM_FLAGS if f != "--headless"],
                viewport={"width": 1280, "height": 900},
            )
            try:
                for page_path in pages:
                    results.append(
                        _check_one(context, server.url, site, page_path, screenshots, timeout_ms)
                    )
            finally:
                context.close()
    return results


def _check_one(context, base: str, site: Path, page_path: str, screenshots, timeout_ms):
    check = PageCheck(page_path)
    page = context.new_page()

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            check.blocked_requests.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("requestfailed", lambda req: _failed(check, req, base))
    page.on("response", lambda resp: _bad_status(check, resp))
    page.on("console", lambda msg: msg.type == "error" and check.console_errors.append(msg.text))
    try:
        page.goto(base + page_path, wait_until="load", timeout=timeout_ms)
        check.title = page.title()
        images = page.evaluate(_IMAGES_JS)
        check.images = len(images)
        check.broken_images = [i["src"] for i in images if not (i["width"] and i["height"])]
        math = page.evaluate(_MATH_JS)
        check.math, check.math_rendered, check.math_errors = (
            math["math"],
            math["rendered"],
            math["errors"],
        )
        if check.math and not math["mathjax"]:
            check.math_rendered = 0
        for href in page.evaluate(_LINKS_JS):
            if not href.startswith(base):
                continue
            relative = href[len(base) :]
            resolved = _resolve(site, site / "index.html", "/" + relative)
            if resolved is None:
                continue
            target, fragment = resolved
            if not target.is_file():
                check.broken_links.append(relative)
            elif fragment and target.suffix == ".html" and fragment not in _parse(target).ids:
                check.broken_links.append(relative)
        if page_path in screenshots:
            page.screenshot(path=str(screenshots[page_path]), full_page=True)
            check.screenshot = str(screenshots[page_path])
    finally:
        page.close()
    return check


def _failed(check: PageCheck, request, base: str) -> None:
    if request.url.startswith(base):
        check.failed_requests.append(f"{request.url} ({request.failure})")


def _bad_status(check: PageCheck, response) -> None:
    if response.status >= 400:
        check.failed_requests.append(f"{response.url} (HTTP {response.status})")
