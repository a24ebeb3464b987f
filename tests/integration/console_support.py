"""Playwright for Python in Debian's Chromium, for the console's browser tests.

The browser is `/usr/bin/chromium` (`make test` installs it with apt when it is missing;
Playwright never downloads one). `tests/integration/conftest.py` offers the `browser` and
`page` fixtures defined here. Every page a test visits can be saved as a PNG under
`screenshots()` (a temporary directory, or LLMQUEUE_SCREENSHOTS): for people to look at,
never committed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@cache
def screenshots() -> Path:
    """Where this run's screenshots go: LLMQUEUE_SCREENSHOTS, or a temporary directory made
    on the first screenshot."""
    chosen = os.environ.get("LLMQUEUE_SCREENSHOTS")
    path = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="llmqueue-console-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: 'make test' installs it (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    opened = context.new_page()
    yield opened
    context.close()


def admin_key(name: str = "console-admin") -> str:
    from jobstore.db import transaction
    from jobstore.jobs import create_api_key
    from jobstore.models import KeyRole

    with transaction() as session:
        _, secret = create_api_key(session, name, role=KeyRole.ADMIN)
    return secret


def sign_in(page: Page, api_url: str, key: str, then: str = "/console/models") -> None:
    page.goto(f"{api_url}/console/login?next={then}")
    page.fill("input[name=api_key]", key)
    page.click("form button[type=submit]")
    page.wait_for_url(f"**{then}*")


def shot(page: Page, name: str) -> Path:
    path = screenshots() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
