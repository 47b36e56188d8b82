"""Open a page in a real headless Chromium (Debian's, driven by Playwright) and report problems."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PageVisit:
    title: str
    errors: list[str] = field(default_factory=list)  # uncaught exceptions and console errors
    failed_requests: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError(
            "Chromium is needed for the browser tests: "
            "apt-get install chromium (make test does this)"
        )
    return path


def visit(
    url: str,
    screenshot: Path,
    evaluate: dict[str, str] | None = None,
    wait_for: str | None = None,
    timeout_ms: int = 60000,
    network_idle: bool = True,
) -> PageVisit:
    """Load ``url``, optionally wait for a selector, evaluate JS expressions, save a full-page
    screenshot."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        result = PageVisit(title="")
        page.on("pageerror", lambda exc: result.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                result.errors.append(f"console: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("requestfailed", lambda req: result.failed_requests.append(req.url))
        # offline whatever this machine's network does (no DNS, a proxy, a firewall that drops):
        # every request off this machine fails at once, always with the same error
        page.route(_off_machine, lambda route: route.abort("internetdisconnected"))
        page.goto(url, wait_until="load", timeout=timeout_ms)
        if wait_for:
            page.wait_for_selector(wait_for, timeout=timeout_ms)
        # every fetch answered; no fixed sleep (a page that keeps polling, as MLflow's UI does,
        # is waited for by its wait_for selector alone)
        if network_idle:
            page.wait_for_load_state("networkidle", timeout=timeout_ms)
        result.title = page.title()
        result.checks = {name: page.evaluate(expr) for name, expr in (evaluate or {}).items()}
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return result


def _off_machine(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in (
        "127.0.0.1",
        "localhost",
        "::1",
    )
