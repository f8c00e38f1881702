"""A user in a real browser sees the chain's pages: the overview, a block arriving live after a
transfer, that block's page, an account, the message for an unknown block; and the pages load
nothing from any host but the node.

Method: a chain made with `tsunagi init` is served by a real `tsunagi node --http ... --tls-dev`
process; Playwright drives Debian's chromium (/usr/bin/chromium; .ci/run installs it) over
HTTPS. Chromium trusts the node's development certificate by its public key
(--ignore-certificate-errors-spki-list names that one key's hash), so any other certificate
would still be refused. A transfer is sent with `tsunagi send --node`; the test waits for what a
user would see with Playwright's expectations (generous timeouts, no sleeps). Every request a
page makes is recorded, and so is every console message (a Content-Security-Policy violation
shows there). Screenshots go to $TSUNAGI_ARTIFACTS (default: artifacts/ at the repository root).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cli_helpers import NodeProcess, answer, make_key
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TSUNAGI_ARTIFACTS")
                 or Path(__file__).resolve().parents[1] / "artifacts")
WAIT_MS = 60_000  # generous: the machine may be busy; nothing here measures speed


def spki_hash(cert_path: Path) -> str:
    """base64 SHA-256 of the certificate's public key, as chromium's flag takes it."""
    public = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key()
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A chain with two funded accounts (1: alice, 2: bob), served over HTTPS."""
    folder = tmp_path_factory.mktemp("browser")
    alice, bob = make_key(folder / "alice.key"), make_key(folder / "bob.key")
    data = folder / "chain"
    answer("init", data, "--name", "browser-chain", "--alloc", f"{alice}=100.00",
           "--alloc", f"{bob}=1.00")
    with NodeProcess(data, "--http", "127.0.0.1:0", "--tls-dev") as node:
        node.folder, node.alice, node.bob = folder, alice, bob
        node.url = node.ready["http"]
        yield node


@pytest.fixture(scope="module")
def browser(chain):
    assert CHROMIUM.exists(), "the browser tests need Debian's chromium: apt-get install " \
                              "chromium (as .ci/run does)"
    cert_path = Path(chain.ready["tls_cert"])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[f"--ignore-certificate-errors-spki-list={spki_hash(cert_path)}"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    """A fresh page that records its requests and console messages, and leaves a
    screenshot named after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.requests, page.console = [], []
    page.on("request", lambda sent: page.requests.append(sent.url))
    page.on("console", lambda message: page.console.append(f"{message.type}: {message.text}"))
    page.set_default_timeout(WAIT_MS)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
    context.close()


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def test_the_overview_shows_the_chain_and_a_new_block_arrives_live(chain, page):
    status = answer("balance", "--node", chain.address, "1")  # the node answers: it is up
    assert status["balance"] == "100.00"
    response = page.goto(chain.url + "/")
    assert response.status == 200
    expect(page.locator("h1")).to_have_text("Chain browser-chain")
    expect(page.locator("#chain-height")).to_have_text("0")
    expect(page.locator("#latest-blocks tbody tr")).to_have_count(1)  # the genesis block
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    shoot(page, "overview-before-transfer")

    sent = answer("send", "--node", chain.address, "--key", chain.folder / "alice.key",
                  "--from", chain.alice, "--to", chain.bob, "--amount", "12.25")
    assert sent["code"] == "ok"
    height = sent["height"]
    row = page.locator(f'#latest-blocks tbody tr[data-height="{height}"]')
    expect(row).to_be_visible()  # arrived over the event stream: the page was not reloaded
    expect(page.locator("#chain-height")).to_have_text(str(height))
    expect(page.locator("#latest-blocks tbody tr").first).to_have_attribute(
        "data-height", str(height))
    shoot(page, "overview-after-transfer")

    row.get_by_role("link", name=str(height), exact=True).click()
    expect(page.locator("h1")).to_have_text(f"Block {height}")
    records = page.locator("#block-records tbody tr")
    expect(records).to_have_count(1)
    expect(records.first).to_contain_text("transfer")
    expect(records.first).to_contain_text("12.25 TSU")
    expect(records.first).to_contain_text("ok")
    shoot(page, "block-of-the-transfer")

    records.first.get_by_role("link", name="#2").click()
    expect(page.locator("h1")).to_have_text("Account 2")
    expect(page.locator("#balance")).to_have_text("13.25 TSU")
    expect(page.locator("#account-history tbody tr").first).to_contain_text("+12.25 TSU")
    expect(page.locator("#account-history tbody tr").first).to_contain_text("from #1")
    shoot(page, "account-of-the-payee")
    assert not [line for line in page.console if line.startswith("error")], page.console


def test_an_unknown_block_gets_a_page_that_says_so(chain, page):
    response = page.goto(chain.url + "/blocks/999999")
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("No such block")
    expect(page.locator("#refusal-message")).to_contain_text(
        "There is no block at height 999999")
    page.get_by_role("link", name="Back to the overview").click()
    expect(page.locator("h1")).to_have_text("Chain browser-chain")


def test_the_search_box_finds_an_account_and_refuses_nonsense(chain, page):
    page.goto(chain.url + "/")
    page.get_by_role("searchbox").fill("#1")
    page.get_by_role("button", name="Go").click()
    expect(page.locator("h1")).to_have_text("Account 1")
    page.get_by_role("searchbox").fill("#77")
    page.get_by_role("button", name="Go").click()
    expect(page.locator("h1")).to_have_text("No such account")
    expect(page.locator("#refusal-message")).to_contain_text("No account 77 on chain")


def test_the_pages_load_nothing_from_other_hosts(chain, page):
    origin = urlsplit(chain.url)
    for path in ("/", "/blocks/0", "/accounts/1", "/blocks/424242"):
        response = page.goto(chain.url + path)
        assert "default-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("load")
    expect(page.locator("h1")).to_have_text("No such block")
    page.goto(chain.url + "/")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    assert page.requests, "the pages made no requests at all?"
    elsewhere = [url for url in page.requests
                 if (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme,
                                                                     origin.netloc)]
    assert elsewhere == []
    loaded = {urlsplit(url).path for url in page.requests}
    assert {"/static/tsunagi.css", "/static/live.js", "/events/blocks"} <= loaded
    # A violation of the policy (an inline style or script, say) is a console error; the one
    # error expected is the 404 of the unknown block's page itself.
    errors = [line for line in page.console if line.startswith("error")]
    assert [line for line in errors if "status of 404" not in line] == [], page.console
    assert len(errors) <= 1
    assert not [line for line in page.console if re.search("refused|security policy", line,
                                                           re.I)], page.console
