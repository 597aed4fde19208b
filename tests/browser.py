"""Real browsers for tests: Debian's Chromium driven by Playwright, front-end packages from the npm registry.

Nothing here is committed or fetched at run time from a CDN: ``npm_package`` installs a pinned package into a
cache outside the repository (``$CDP_TEST_CACHE``, else ``~/.cache/cdp-tests``) once, and pages are served
from loopback. ``make test`` installs Chromium (``make browsers``); a missing browser fails the test.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CDP_CHROMIUM", "/usr/bin/chromium"))

# The browser SDK bundles the tests load, pinned (bump deliberately; README says which were tested).
SEGMENT_ANALYTICS_NEXT = "1.84.3"
RUDDERSTACK_ANALYTICS_JS = "3.34.1"
SEGMENT_ANALYTICS_NODE = "3.1.0"


def cache_dir() -> Path:
    return Path(os.environ.get("CDP_TEST_CACHE") or Path.home() / ".cache" / "cdp-tests")


def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)", pytrace=False)
    return CHROMIUM


def npm_package(name: str, version: str) -> Path:
    """The installed package folder of ``name@version`` (installed from the npm registry on first use)."""
    prefix = cache_dir() / "npm" / f"{name.replace('/', '+')}@{version}"
    folder = prefix / "node_modules" / name
    if not (folder / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is missing: `make test` installs it (apt-get install npm)", pytrace=False)
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(prefix),
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=error",
                f"{name}@{version}",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return folder


@contextmanager
def static_site(root: Path) -> Iterator[str]:
    """Serve ``root`` on a loopback port of its own (another origin than the API, as a real site is)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def browser_page() -> Iterator[tuple[Any, list[str]]]:
    """A fresh headless Chromium page that may reach loopback only; the list collects what it tried
    elsewhere (requests aborted) and the page's console errors."""
    from playwright.sync_api import sync_playwright

    path = chromium()
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(path), headless=True)
        try:
            context = browser.new_context()

            def guard(route: Any) -> None:
                url = route.request.url
                if url.startswith(("http://127.0.0.1:", "http://localhost:")):
                    route.continue_()
                else:
                    outside.append(url)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.on(
                "console",
                lambda msg: outside.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None,
            )
            yield page, outside
        finally:
            browser.close()
