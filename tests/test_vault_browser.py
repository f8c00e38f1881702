"""The will example in a real browser: three holders (person, guardian, lawyer), each in a
browser context of their own, open the will's bequests two of three; a denied request and an
expired one release nothing; a wrong PIN says how many tries are left.

Method: `will_chain` (tests/test_vault_pages.py) makes the chain, enrols the holders and
stores the will through the Python API; a real `tsunagi node --vault --http --tls-dev` serves
it. Playwright drives Debian's chromium over HTTPS, trusting the node's development
certificate by its public key. Each holder imports its device file into its own browser once
(localStorage) and types its PIN into the page. The other holders' pages change without a
reload (server-sent events); the test waits for what a user would see with Playwright's
expectations, never with sleeps (the expiry is a 1-second request expiry, and the page shows
it expired when the clock passes it). The requester's page opens the part with its own
WebCrypto reply key. Screenshots go to $TSUNAGI_ARTIFACTS (default: artifacts/).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import NodeProcess
from playwright.sync_api import expect, sync_playwright
from test_pages_browser import spki_hash
from test_vault_pages import PINS, PREAMBLE, WILL, will_chain

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TSUNAGI_ARTIFACTS")
                 or Path(__file__).resolve().parents[1] / "artifacts")
WAIT_MS = 60_000  # generous: the machine may be busy; nothing here measures speed
HOLDERS = ("person", "guardian", "lawyer")
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    made = will_chain(tmp_path_factory.mktemp("vault-browser"))
    with NodeProcess(made["data"], "--http", "127.0.0.1:0", "--tls-dev", "--vault") as served:
        served.made = made
        yield served


@pytest.fixture(scope="module")
def pages(node):
    """One page per holder, each in its own browser context, its device file imported."""
    assert CHROMIUM.exists(), "the browser tests need Debian's chromium: apt-get install " \
                              "chromium (as .ci/run does)"
    url = f"{node.ready['http']}/vault/documents/{node.made['document']}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[f"--ignore-certificate-errors-spki-list="
                  f"{spki_hash(Path(node.ready['tls_cert']))}"])
        opened = {}
        for name in HOLDERS:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.console = []
            page.on("console", lambda message, page=page: page.console.append(
                f"{message.type}: {message.text}"))
            assert page.goto(url).status == 200
            page.fill("#device-file", node.made["device"][name])
            page.click("#device-import-button")
            expect(page.locator("#device-status")).to_contain_text(
                f"holder {HOLDERS.index(name) + 1} (account #{node.made['account'][name]})")
            expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
            opened[name] = page
        yield opened
        for page in opened.values():
            assert not [line for line in page.console if "Content Security Policy" in line]
        browser.close()


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"vault-{name}.png", full_page=True)


def request(page, reason: str, expiry_s: str = "") -> str:
    """Requests the bequests from ``page``; returns the new request's id."""
    before = page.locator("article.request").count()
    form = page.locator('form.request-form[data-part="2"]')
    form.locator('input[name="reason"]').fill(reason)
    form.locator('input[name="expiry_s"]').fill(expiry_s)
    form.locator('input[name="pin"]').fill(PINS["guardian"])
    form.get_by_role("button", name="Request to open").click()
    expect(page.locator("#vault-message")).to_have_text(
        "Requested: the other holders see it now.")
    expect(page.locator("article.request")).to_have_count(before + 1)
    return page.locator("article.request").first.get_attribute("data-request")


def act(page, request_id: str, action: str, pin: str) -> None:
    article = page.locator(f'article[data-request="{request_id}"]')
    article.locator('input[name="pin"]').fill(pin)
    article.get_by_role("button", name=action).click()


def article(page, request_id: str):
    return page.locator(f'article[data-request="{request_id}"]')


def test_the_will_opens_for_the_guardian_after_two_approvals_with_pins(node, pages):
    guardian, person, lawyer = pages["guardian"], pages["person"], pages["lawyer"]
    expect(guardian.locator(".part.open .open-text")).to_have_text(PREAMBLE)
    expect(guardian.locator(".part.secret .locked")).to_contain_text("Encrypted")
    assert WILL not in guardian.content()
    shoot(guardian, "1-document")

    request_id = request(guardian, "the person died")
    # The other holders see the request arrive without reloading their pages.
    for page in (person, lawyer):
        expect(article(page, request_id).locator(".status")).to_have_text("open")
    shoot(lawyer, "2-request-seen-live-by-lawyer")

    act(person, request_id, "Approve", "999999")  # a wrong PIN: counted, nothing released
    expect(person.locator("#vault-message")).to_contain_text(
        "(4 tries left before you are locked out)")
    shoot(person, "3-wrong-pin")
    act(person, request_id, "Approve", PINS["person"])
    expect(person.locator("#vault-message")).to_have_text(
        "Approved: your fragment was released for this request.")
    expect(article(lawyer, request_id).locator(".approvals")).to_contain_text("1 of 2")
    expect(article(guardian, request_id).locator(".opened-part")).to_be_hidden()

    act(lawyer, request_id, "Approve", PINS["lawyer"])
    expect(article(guardian, request_id).locator(".status")).to_have_text("opened")
    expect(article(guardian, request_id).locator(".opened-part")).to_have_text(WILL)
    shoot(guardian, "4-opened-for-guardian")
    # Sealed to the guardian's reply key: the other holders' pages show no plain text.
    expect(article(lawyer, request_id).locator(".status")).to_have_text("opened")
    expect(article(lawyer, request_id).locator(".opened-part")).to_be_hidden()
    assert WILL not in lawyer.content() and WILL not in person.content()
    trail = article(guardian, request_id).locator(".trail-steps tbody tr")
    expect(trail).to_have_count(4)  # request, the wrong PIN noted, two approvals
    expect(trail.nth(1)).to_contain_text("pin_wrong")
    expect(trail.nth(3)).to_contain_text("approve")


def test_a_denied_request_and_an_expired_one_release_nothing(node, pages):
    guardian, person, lawyer = pages["guardian"], pages["person"], pages["lawyer"]
    denied = request(guardian, "a second look")
    act(person, denied, "Approve", PINS["person"])
    expect(article(lawyer, denied).locator(".approvals")).to_contain_text("1 of 2")
    act(lawyer, denied, "Deny", PINS["lawyer"])
    expect(lawyer.locator("#vault-message")).to_have_text(
        "Denied: the request is closed and released nothing.")
    for page in pages.values():
        expect(article(page, denied).locator(".status")).to_have_text("denied")
        expect(article(page, denied).locator(".released")).to_have_text("nothing")
    expect(article(guardian, denied).locator(".opened-part")).to_be_hidden()
    shoot(guardian, "5-denied")

    expired = request(guardian, "too late", expiry_s="1")
    expect(article(person, expired).locator(".status")).to_have_text("expired")
    act(person, expired, "Approve", PINS["person"])
    expect(person.locator("#vault-message")).to_contain_text("request_expired")
    for page in pages.values():
        expect(article(page, expired).locator(".released")).to_have_text("nothing")
    expect(article(guardian, expired).locator(".opened-part")).to_be_hidden()
    steps = article(guardian, expired).locator(".trail-steps tbody tr")
    expect(steps).to_have_count(2)
    expect(steps.nth(1)).to_contain_text("request_expired")
    shoot(person, "6-expired")
