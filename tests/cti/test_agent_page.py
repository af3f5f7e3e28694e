"""The agent desktop in a real headless Chromium against the whole daemon and the PBX
simulator: an inbound call pops the right customer, the agent's note and disposition reach the
CRM, and a reload in the middle of the call shows the pop again."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.cti.test_api_env import PASSWORD, Env, daemon_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium"),
]

async_playwright = pytest.importorskip("playwright.async_api").async_playwright
expect = pytest.importorskip("playwright.async_api").expect


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with daemon_env(tmp_path) as e:
        yield e


@asynccontextmanager
async def open_page() -> AsyncIterator[Any]:
    """A fresh page in headless Chromium; a script error on the page fails the test."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = await (await browser.new_context()).new_page()
            pg.set_default_timeout(10_000)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            yield pg
            assert errors == [], errors
        finally:
            await browser.close()


@pytest_asyncio.fixture
async def page(env: Env) -> AsyncIterator[Any]:
    async with open_page() as pg:
        yield pg


async def sign_in(page: Any, env: Env, username: str) -> None:
    await page.goto(env.url + "/agent")
    await page.fill("#login-username", username)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#desk-view")).to_be_visible()


async def test_inbound_call_pop_notes_disposition_and_reload(env: Env, page: Any) -> None:
    await env.account("ann")
    erika = await env.customer("Erika Muster", "+4930123456", postcode="10115", vip=True)
    await env.store.set_dispositions(
        ["solved", ("callback", "Call back later")],
        actor="test",
        scope_kind="queue",
        scope="support",
    )
    env.sim.set_phone("PJSIP/1001", "manual")

    await sign_in(page, env, "ann")
    await page.fill("#device", "PJSIP/1001")
    await page.fill("#queues", "support")
    await page.click("#device-login")
    await expect(page.locator("#state")).to_have_attribute("data-status", "ready")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "online")

    # the call rings: the pop shows the right customer
    call_id = env.sim.inbound_call("+4930123456", queue="support")
    card = page.locator(f'.call[data-call-id="{call_id}"]')
    await expect(card).to_be_visible()
    await expect(card.locator(".customer-name")).to_contain_text("Erika Muster")
    await expect(card.locator(".badge.vip")).to_be_visible()
    await expect(card).to_have_attribute("data-state", "ringing")
    await expect(page.locator("#state")).to_have_attribute("data-status", "ringing")

    # the agent answers and works on the call
    assert env.sim.answer("PJSIP/1001")
    await expect(card).to_have_attribute("data-state", "answered")
    await expect(card.locator(".call-state")).to_have_text("on call")
    await card.locator(".note-text").fill("Asked about the invoice")
    await card.locator(".note-save").click()
    await expect(card.locator(".notes li")).to_have_text(["Asked about the invoice"])
    await expect(card.locator(".dispo-code")).to_be_visible()
    await card.locator(".dispo-code").select_option("solved")
    await card.locator(".dispo-save").click()
    await expect(card.locator(".dispo-current")).to_have_text("disposition: solved")

    # the interaction in the database carries them
    await env.services.pops.drain()
    rows = await env.store.interactions_for_call(call_id)
    assert len(rows) == 1
    assert rows[0].notes == "Asked about the invoice"
    assert rows[0].disposition == "solved"
    assert rows[0].customer_id == erika
    assert rows[0].agent == env.accounts["ann"][0]

    # a reload in the middle of the call shows the pop again, with the work done so far
    await page.reload()
    card = page.locator(f'.call[data-call-id="{call_id}"]')
    await expect(card.locator(".customer-name")).to_contain_text("Erika Muster")
    await expect(card).to_have_attribute("data-state", "answered")
    await expect(card.locator(".notes li")).to_have_text(["Asked about the invoice"])
    await expect(page.locator("#conn")).to_have_attribute("data-state", "online")
    await expect(page.locator("#state")).to_have_attribute("data-status", "on_call")

    # the call ends while the page is open: the card says so, and wrap-up starts
    assert env.sim.hangup_call(call_id)
    await expect(card.locator(".call-state")).to_have_text("ended")
    await expect(page.locator("#state")).to_have_attribute("data-status", "wrap_up")
    await page.click("#wrapup-end")
    await expect(page.locator("#state")).to_have_attribute("data-status", "ready")


async def test_reload_while_ringing_and_the_unknown_caller_flow(env: Env, page: Any) -> None:
    await env.account("bea")
    env.sim.set_phone("PJSIP/1002", "manual")
    await sign_in(page, env, "bea")
    await page.fill("#device", "PJSIP/1002")
    await page.fill("#queues", "support")
    await page.click("#device-login")
    await expect(page.locator("#state")).to_have_attribute("data-status", "ready")

    call_id = env.sim.inbound_call("+4930555666", queue="support")
    card = page.locator(f'.call[data-call-id="{call_id}"]')
    await expect(card.locator(".unknown")).to_have_text("Unknown caller.")
    await page.reload()  # reload while it still rings
    card = page.locator(f'.call[data-call-id="{call_id}"]')
    await expect(card).to_have_attribute("data-state", "ringing")
    await expect(card.locator(".caller")).to_contain_text("+4930555666")

    assert env.sim.answer("PJSIP/1002")
    await expect(card).to_have_attribute("data-state", "answered")
    await card.locator(".new-name").fill("Nina Neu")
    await card.locator(".create-customer button").click()
    await expect(card.locator(".customer-name")).to_contain_text("Nina Neu")
    found = await env.store.search("+4930555666")
    assert [c.name for c in found] == ["Nina Neu"]
    # free-text disposition when no list is configured for the queue
    await expect(card.locator(".dispo-other")).to_be_visible()
    await card.locator(".dispo-other").fill("info")
    await card.locator(".dispo-save").click()
    await expect(card.locator(".dispo-current")).to_have_text("disposition: info")

    # customer search and click-to-call from the side panel
    await page.fill("#search-q", "Nina")
    await page.click("#search-form button")
    await expect(page.locator("#search-results li")).to_have_count(1)
    await page.click("#search-results li button")
    await expect(page.locator("#search-card .customer-name")).to_contain_text("Nina Neu")
    await page.fill("#dial-number", "not a number")
    await page.click("#dial-form button")
    await expect(page.locator("#dial-result")).to_contain_text("body.number")
