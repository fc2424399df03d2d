"""The console in a real browser (Debian's chromium, driven by Playwright): an operator
finds a running saga by id, cancels it, and watches it be undone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Error, async_playwright, expect

from tests.e2e.conftest import TOKEN, Console
from tests.e2e.test_console_api import cancelled, waiting_at_shipping

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
# Playwright cannot download its own browsers here; Debian's chromium is launched instead.
CHROMIUM = os.environ.get("SAGA_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Where the README's screenshot is written, when asked (scripts/screenshot).
SCREENSHOT_DIR = os.environ.get("SAGA_SCREENSHOT_DIR")


async def test_an_operator_finds_and_cancels_a_running_saga(console: Console,
                                                            tmp_path: Path) -> None:
    d = console.deployment
    await d.order("earlier", "alice", ("apple", 2, "3.50"))
    assert (await d.outcomes({"earlier"}))["earlier"].label == "completed"
    await d.reconfigure("shipping", {"SAGA_FAULT_LATENCY_MS": "15000"})
    await d.order("o-4711", "alice", ("apple", 1, "12.00"))
    await waiting_at_shipping(d, "o-4711")

    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                problems.append(message.text)

        def on_error(error: Error) -> None:
            problems.append(str(error))

        page.on("console", on_console)
        page.on("pageerror", on_error)
        await page.goto(f"{console.url}/")
        rows = page.locator("#sagas tbody tr")
        await expect(rows).to_have_count(2)
        await page.fill("#search", "4711")
        await expect(rows).to_have_count(1)
        row = page.locator('tr[data-saga-id="order:o-4711"]')
        await expect(row).to_contain_text("running")
        await expect(row).to_contain_text("schedule_shipment")
        await row.get_by_role("link", name="order:o-4711").click()

        await expect(page.locator("#saga-status")).to_have_text("running")
        # The definition's graph, drawn by mermaid, with the step it waits for coloured.
        await expect(page.locator("#graph svg")).to_be_visible()
        await expect(page.locator("#graph svg g.node.waiting")).to_have_count(1)
        await expect(page.locator("#graph svg g.node.succeeded")).not_to_have_count(0)
        await expect(page.locator("#timeline")).to_contain_text("started")

        await page.fill("#operator", "olga")
        await page.fill("#note", "customer called")
        cancel = page.locator('button[data-action="cancel"]')
        await cancel.click()  # no token yet: refused
        await expect(page.locator("#action-result")).to_contain_text("needs Authorization")
        await page.fill("#token", TOKEN)
        await cancel.click()
        await expect(page.locator("#action-result")).to_contain_text("cancel done",
                                                                     timeout=30_000)
        await expect(page.locator("#saga-status")).to_have_text("failed", timeout=60_000)
        await expect(page.locator("#failure")).to_contain_text("CANCELLED")
        await expect(page.locator("#timeline")).to_contain_text("by olga")
        await expect(page.locator("#actions")).to_be_hidden()
        await expect(page.locator("#graph svg g.node.waiting")).to_have_count(0)
        for directory in (tmp_path, *([Path(SCREENSHOT_DIR)] if SCREENSHOT_DIR else [])):
            await page.screenshot(path=directory / "console-saga.png", full_page=True)

        await page.goto(f"{console.url}/")
        await page.select_option("#status-filter", "failed")
        await expect(rows).to_have_count(1)
        await expect(row).to_contain_text("CANCELLED")
        await browser.close()
    # The only error allowed is the refused cancel's 401, which the browser logs itself.
    assert [p for p in problems if "401" not in p] == []
    await cancelled(d, "o-4711", "olga")
