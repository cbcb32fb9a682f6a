"""The control room, used the way a learner uses it: clicks in a real browser, not API calls.

In order (they share one sandbox): the page loads clean; bad input is explained on the page;
cutting orders->payments makes orders fail fast and opens the orders service's payments breaker,
restoring it closes the breaker; a notification arrives live; the invariants hold.
"""

from __future__ import annotations

import time

import pytest
import requests
from playwright.sync_api import Locator, Page, Route, expect

from microlab.launcher import SandboxProcess
from tests.browser.conftest import screenshot
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CUT_EDGE = "orders->payments"


def edge_row(page: Page, name: str) -> Locator:
    return page.locator(f'#edges tr[data-edge="{name}"]')


def breaker(page: Page, service: str, peer: str) -> Locator:
    return page.locator(f'.breaker[data-service="{service}"][data-breaker="{peer}"]')


def open_page(page: Page) -> None:
    page.goto("/")
    expect(page.locator('#graph .node[data-health="ok"]')).to_have_count(9, timeout=30_000)
    expect(edge_row(page, CUT_EDGE)).to_be_visible()


def place_orders(page: Page, count: int) -> list[dict]:
    """Place orders with the page's control; (status, ms, text) of each, as the page lists them."""
    page.fill("#order-count", str(count))
    page.click("#place-orders")
    expect(page.locator("#orders-summary")).to_contain_text("placed", timeout=120_000)
    return page.locator("#order-results li").evaluate_all(
        "items => items.map(i => ({status: +i.dataset.status, ms: +i.dataset.ms,"
        " text: i.textContent}))")


def edge_enabled(sandbox: SandboxProcess, proxy: str) -> bool:
    return requests.get(f"{sandbox.urls['chaos']}/proxies/{proxy}", timeout=10).json()["enabled"]


def test_page_loads_with_no_console_error(page: Page) -> None:
    started = time.monotonic()
    open_page(page)
    expect(breaker(page, "gateway", "orders")).to_be_visible()
    page.wait_for_timeout(3000)  # three more polls of the state
    screenshot(page, "01-loaded")
    assert page.problems == [], page.problems  # type: ignore[attr-defined]
    assert time.monotonic() - started < 30


def test_bad_input_is_explained_on_the_page(page: Page, sandbox: SandboxProcess) -> None:
    open_page(page)
    row = edge_row(page, CUT_EDGE)
    message = row.locator(".edge-message")
    for bad in ("-5", "abc"):
        row.locator("input.latency").fill(bad)
        row.locator("button.latency").click()
        expect(message).to_have_text(
            f"latency (ms) must be a whole number from 0 to 60000, not '{bad}'")
        expect(message).to_have_class("edge-message error")
    expect(row).to_have_attribute("data-state", "normal")

    unknown = page.evaluate("""async () => {
        const answer = await fetch('/api/edges/orders-%3Ewarehouse/cut', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: '{}'});
        return [answer.status, (await answer.json()).error];
    }""")
    assert unknown[0] == 404 and "no edge called 'orders->warehouse'" in unknown[1]

    # The dashboard server stops answering: the page says so, and recovers by itself.
    page.route("**/api/state", lambda route: route.abort())
    expect(page.locator("#banner")).to_contain_text("does not answer")
    page.unroute("**/api/state")
    expect(page.locator("#banner")).not_to_contain_text("does not answer")

    # A page that was showing an earlier run of the sandbox: told, and its action refused.
    def earlier_run(route: Route) -> None:
        answer = route.fetch()
        state = answer.json()
        state["sandbox"]["identity"] = "earlier-run"
        route.fulfill(response=answer, json=state)

    page.route("**/api/state", earlier_run)
    expect(page.locator("#banner")).to_contain_text("The sandbox restarted")
    row.locator("button.cut").click()
    expect(message).to_contain_text("earlier run of the sandbox")
    assert edge_enabled(sandbox, "orders_to_payments")
    page.unroute("**/api/state")
    screenshot(page, "02-bad-input")
    assert page.locator("#graph .node").count() >= 9  # the page is whole


def test_cut_opens_the_breaker_and_restore_closes_it(page: Page, sandbox: SandboxProcess) -> None:
    open_page(page)
    row = edge_row(page, CUT_EDGE)
    payments = breaker(page, "orders", "payments")
    # Breakers keep their recent transitions, so earlier tests' may be listed already (the page
    # draws them from the same answer as the graph open_page waited for): count the new ones.
    transitions = page.locator("#transitions li[data-breaker='orders/payments']")
    opened_before = transitions.and_(page.locator("[data-to='open']")).count()
    closed_before = transitions.and_(page.locator("[data-to='closed']")).count()

    row.locator("button.cut").click()
    expect(row).to_have_attribute("data-state", "cut")
    expect(page.locator(f'#graph line[data-edge="{CUT_EDGE}"]')).to_have_class("edge cut")
    assert not edge_enabled(sandbox, "orders_to_payments")

    results = place_orders(page, 8)
    assert all(result["status"] >= 500 for result in results), results
    # Once the breaker is open, an order fails at once instead of waiting on payments.
    assert all(result["ms"] < 1000 for result in results[-3:]), results
    expect(payments).to_have_attribute("data-state", "open")
    expect(transitions.and_(page.locator("[data-to='open']"))).to_have_count(opened_before + 1)
    # The failed orders' sagas were compensated (the stock reservation released).
    expect(page.locator('#sagas li[data-status="compensated"]').first).to_be_visible()
    screenshot(page, "03-cut")

    row.locator("button.restore").click()
    expect(row).to_have_attribute("data-state", "normal")
    page.wait_for_timeout(3500)  # the sandbox's breakers try again after 3 s

    def confirmed() -> bool:
        return any(result["status"] == 201 for result in place_orders(page, 1))

    wait_for(confirmed, timeout=30, what="an order confirmed after the restore")
    expect(payments).to_have_attribute("data-state", "closed")
    expect(transitions.and_(page.locator("[data-to='closed']"))).to_have_count(closed_before + 1)
    screenshot(page, "04-restored")


def test_a_notification_appears_live(page: Page) -> None:
    open_page(page)
    # Socket.IO's client upgrades from long-polling to WebSocket, through the gateway.
    expect(page.locator("#feed-status")).to_have_attribute("data-transport", "websocket")
    expect(page.locator("#feed-status")).to_have_text("connected through the gateway (websocket)")
    results = place_orders(page, 1)
    assert results[0]["status"] == 201, results
    order_id = results[0]["text"].split("— ")[1].split()[0]
    expect(page.locator("#feed li", has_text=order_id).first).to_be_visible(timeout=15_000)
    # That order's trace, as a waterfall: the gateway, orders and its peers.
    expect(page.locator("#waterfall .row", has_text="POST /api/v1/orders").first).to_be_visible()
    screenshot(page, "05-notification")


def test_the_invariant_button_shows_a_clean_verdict(page: Page) -> None:
    open_page(page)
    verdict = page.locator("#verdict")

    def clean() -> bool:
        page.click("#check")
        expect(verdict).not_to_have_text("checking…", timeout=30_000)
        return verdict.get_attribute("data-ok") == "true"

    # Sagas the cut left compensating finish within the orders service's recovery interval.
    wait_for(clean, timeout=45, what="a clean verdict")
    expect(verdict).to_contain_text("invariants hold")
    screenshot(page, "06-check")
