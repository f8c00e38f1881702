"""The will example in a real browser: three holders (person, guardian, lawyer), each in a
browser context of their own, open the will's bequests two of three; an approval is taken back;
a denied request and an expired one release nothing; a wrong PIN says how many tries are left.
The pages' own cryptography (BIP340 and HPKE in JavaScript) is held to known answers.

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
import random
from pathlib import Path

import pytest
from cli_helpers import NodeProcess
from playwright.sync_api import expect, sync_playwright
from test_pages_browser import spki_hash
from test_privacy_holders import A1
from test_vault_pages import PINS, PREAMBLE, WILL, will_chain

from tsunagi.core import keys

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TSUNAGI_ARTIFACTS")
                 or Path(__file__).resolve().parents[1] / "artifacts")
WAIT_MS = 60_000  # generous: the machine may be busy; nothing here measures speed
HOLDERS = ("person", "guardian", "lawyer")
expect.set_options(timeout=WAIT_MS)

# BIP340's test vectors (bitcoin/bips, bip-0340/test-vectors.csv): index, secret key, public key,
# aux_rand, message, signature, verification result. Rows with a secret key are signing
# vectors; every row is a verification vector.
BIP340_VECTORS = (
    (0, "0000000000000000000000000000000000000000000000000000000000000003",
     "F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA8215"
     "25F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0", True),
    (1, "B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFEF",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "0000000000000000000000000000000000000000000000000000000000000001",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE3341"
     "8906D11AC976ABCCB20B091292BFF4EA897EFCB639EA871CFA95F6DE339E4B0A", True),
    (2, "C90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B14E5C9",
     "DD308AFEC5777E13121FA72B9CC1B7CC0139715309B086C960E18FD969774EB8",
     "C87AA53824B4D7AE2EB035A2B5BBBCCC080E76CDC6D1692C4B0B62D798E6D906",
     "7E2D58D8B3BCDF1ABADEC7829054F90DDA9805AAB56C77333024B9D0A508B75C",
     "5831AAEED7B44BB74E5EAB94BA9D4294C49BCF2A60728D8B4C200F50DD313C1B"
     "AB745879A5AD954A72C45A91C3A51D3C7ADEA98D82F8481E0E1E03674A6F3FB7", True),
    (3, "0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710",
     "25D1DFF95105F5253C4022F628A996AD3A0D95FBF21D468A1B33F8C160D8F517",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
     "7EB0509757E246F19449885651611CB965ECC1A187DD51B64FDA1EDC9637D5EC"
     "97582B9CB13DB3933705B32BA982AF5AF25FD78881EBB32771FC5922EFC66EA3", True),
    (4, "",
     "D69C3509BB99E412E68B0FE8544E72837DFA30746D8BE2AA65975F29D22DC7B9",
     "",
     "4DF3C3F68FCC83B27E9D42C90431A72499F17875C81A599B566C9889B9696703",
     "00000000000000000000003B78CE563F89A0ED9414F5AA28AD0D96D6795F9C63"
     "76AFB1548AF603B3EB45C9F8207DEE1060CB71C04E80F593060B07D28308D7F4", True),
    (5, "",
     "EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", False),
    (6, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "FFF97BD5755EEEA420453A14355235D382F6472F8568A18B2F057A1460297556"
     "3CC27944640AC607CD107AE10923D9EF7A73C643E166BE5EBEAFA34B1AC553E2", False),
    (7, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "1FA62E331EDBC21C394792D2AB1100A7B432B013DF3F6FF4F99FCB33E0E1515F"
     "28890B3EDB6E7189B630448B515CE4F8622A954CFE545735AAEA5134FCCDB2BD", False),
    (8, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "961764B3AA9B2FFCB6EF947B6887A226E8D7C93E00C5ED0C1834FF0D0C2E6DA6", False),
    (9, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "0000000000000000000000000000000000000000000000000000000000000000"
     "123DDA8328AF9C23A94C1FEECFD123BA4FB73476F0D594DCB65C6425BD186051", False),
    (10, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "0000000000000000000000000000000000000000000000000000000000000001"
     "7615FBAF5AE28864013C099742DEADB4DBA87F11AC6754F93780D5A1837CF197", False),
    (11, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "4A298DACAE57395A15D0795DDBFD1DCB564DA82B0F269BC70A74F8220429BA1D"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", False),
    (12, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", False),
    (13, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", False),
    (14, "",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC30",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", False),
    (15, "0340034003400340034003400340034003400340034003400340034003400340",
     "778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "",
     "71535DB165ECD9FBBC046E5FFAEA61186BB6AD436732FCCC25291A55895464CF"
     "6069CE26BF03466228F19A3A62DB8A649F2D560FAC652827D1AF0574E427AB63", True),
    (16, "0340034003400340034003400340034003400340034003400340034003400340",
     "778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "11",
     "08A20A0AFEF64124649232E0693C583AB1B9934AE63B4C3511F3AE1134C6A303"
     "EA3173BFEA6683BD101FA5AA5DBC1996FE7CACFC5A577D33EC14564CEC2BACBF", True),
    (17, "0340034003400340034003400340034003400340034003400340034003400340",
     "778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "0102030405060708090A0B0C0D0E0F1011",
     "5130F39A4059B43BC7CAC09A19ECE52B5D8699D1A71E3C52DA9AFDB6B50AC370"
     "C4A482B77BF960F8681540E25B6771ECE1E5A37FD80E5A51897C5566A97EA5A5", True),
    (18, "0340034003400340034003400340034003400340034003400340034003400340",
     "778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "99999999999999999999999999999999999999999999999999999999999999999999999999999999"
     "99999999999999999999999999999999999999999999999999999999999999999999999999999999"
     "9999999999999999999999999999999999999999",
     "403B12B0D8555A344175EA7EC746566303321E5DBFA8BE6F091635163ECA79A8"
     "585ED3E3170807E7C03B720FC54C7B23897FCBA0E9D0B4A06894CFD249F22367", True),
)


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
            page.console, page.requests = [], []
            page.on("console", lambda message, page=page: page.console.append(
                f"{message.type}: {message.text}"))
            page.on("request", lambda sent, page=page: page.requests.append(sent.url))
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
            # Everything a page loaded or asked came from the node: no CDN, no other host.
            assert page.requests and all(url.startswith(node.ready["http"] + "/")
                                         for url in page.requests)
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
    """Types the PIN and clicks ``action``; waits until the page says how the step went."""
    article = page.locator(f'article[data-request="{request_id}"]')
    article.locator('input[name="pin"]').fill(pin)
    article.get_by_role("button", name=action).click()
    expect(page.locator("#vault-message")).not_to_have_text("Working…")


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
    act(person, denied, "Revoke my approval", PINS["person"])  # taken back before k
    expect(person.locator("#vault-message")).to_have_text("Your approval was taken back.")
    expect(article(lawyer, denied).locator(".approvals")).to_have_text("0 of 2")
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


def js_sign(page, secret: str, message: str, aux: str) -> str:
    return page.evaluate("""([secret, message, aux]) => {
        const bytes = (hex) => Uint8Array.from(hex.match(/../g) || [], (h) => parseInt(h, 16));
        return window.tsunagiBip340.sign(bytes(secret), bytes(message), bytes(aux)).then(
            (signature) => Array.from(signature, (b) => b.toString(16).padStart(2, "0"))
                .join("").toUpperCase());
    }""", [secret, message, aux])


def js_verify(page, public: str, message: str, signature: str) -> bool:
    return page.evaluate("""([publicKey, message, signature]) => {
        const bytes = (hex) => Uint8Array.from(hex.match(/../g) || [], (h) => parseInt(h, 16));
        return window.tsunagiBip340.verify(bytes(publicKey), bytes(message), bytes(signature));
    }""", [public, message, signature])


def test_the_pages_bip340_signs_and_verifies_as_bip340s_vectors_say(pages):
    page = pages["person"]
    for index, secret, public, aux, message, signature, valid in BIP340_VECTORS:
        if secret:
            assert js_sign(page, secret, message, aux) == signature, f"vector {index}"
        assert js_verify(page, public, message, signature) is valid, f"vector {index}"


def test_the_pages_bip340_agrees_with_tsunagi_keys_on_random_messages(pages):
    page, draw = pages["lawyer"], random.Random(340)
    for _ in range(8):
        secret = keys.PrivateKey.from_bytes(draw.randbytes(32))
        message, aux = draw.randbytes(32), draw.randbytes(32)
        signed = js_sign(page, secret.to_bytes().hex(), message.hex(), aux.hex())
        assert bytes.fromhex(signed) == secret.sign(message, aux_rand=aux)
        assert keys.verify(secret.public_key, message, bytes.fromhex(signed))
        assert js_verify(page, secret.public_key.hex(), message.hex(),
                         secret.sign(message).hex())


def test_the_pages_hpke_opens_rfc_9180_vector_a1(pages):
    opened = pages["guardian"].evaluate("""(a1) => {
        const bytes = (hex) => Uint8Array.from(hex.match(/../g) || [], (h) => parseInt(h, 16));
        const b64 = (raw) => btoa(String.fromCharCode(...raw)).replace(/[+]/g, "-")
            .replace(/[/]/g, "_").replace(/=+$/, "");
        return crypto.subtle.importKey("jwk", {kty: "OKP", crv: "X25519", d: b64(bytes(a1.skRm)),
                                               x: b64(bytes(a1.pkRm))},
                                       {name: "X25519"}, false, ["deriveBits"])
            .then((key) => window.tsunagiHpkeOpen(
                new Uint8Array([...bytes(a1.enc), ...bytes(a1.ct)]), key, bytes(a1.pkRm),
                bytes(a1.info), bytes(a1.aad)))
            .then((plain) => new TextDecoder().decode(plain));
    }""", A1)
    assert opened == "Beauty is truth, truth beauty"
