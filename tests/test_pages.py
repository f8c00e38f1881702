"""The node serves its pages over HTTPS with a certificate it makes once and keeps, refuses what
it cannot show with a page that says why, and never lets a slow browser hold up its block feed.

Method: the development certificate is made in a temporary data directory and read back with
the cryptography package (names, key, expiry), reused or made again as the time passed in
says; a real node (Service: binary server, REST app, pages) runs on its own loop thread over
HTTPS, and httpx talks to it trusting only that certificate (so the certificate itself is
checked, names included); the block feed is driven with a stand-in node whose blocks are
made by hand, so dropping a subscriber needs no timing. The browser tests are in
test_pages_browser.py.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import stat
from pathlib import Path

import httpx
import pytest
from cli_helpers import NodeProcess, tsunagi
from cryptography import x509
from test_rest import ServiceThread, make_chain, submit_json

from tsunagi.errors import ConfigError
from tsunagi.node import limits
from tsunagi.node.http import tls
from tsunagi.node.http.events import BlockFeed
from tsunagi.node.http.pages import CONTENT_SECURITY_POLICY
from tsunagi.node.service import ServiceConfig

NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


# --- the development certificate ---------------------------------------------------------------

def test_the_dev_certificate_names_this_machine_and_is_kept_private(tmp_path):
    cert_path, key_path = tls.dev_certificate(tmp_path, now=NOW)
    assert (cert_path.parent, cert_path.name) == (tmp_path / "tls", "dev-cert.pem")
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                         ipaddress.ip_address("::1")]
    assert certificate.not_valid_after_utc == \
        NOW + datetime.timedelta(days=limits.dev_certificate_valid_days)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    tls.check_pair(cert_path, key_path)  # the key is the certificate's


def test_the_dev_certificate_is_reused_until_it_nears_expiry(tmp_path):
    cert_path, _ = tls.dev_certificate(tmp_path, now=NOW)
    first = cert_path.read_bytes()
    later = NOW + datetime.timedelta(days=limits.dev_certificate_valid_days
                                     - limits.dev_certificate_renew_days - 1)
    assert tls.dev_certificate(tmp_path, now=later)[0].read_bytes() == first
    nearly_expired = later + datetime.timedelta(days=2)
    assert tls.dev_certificate(tmp_path, now=nearly_expired)[0].read_bytes() != first


def test_a_damaged_or_mismatched_dev_certificate_is_made_again(tmp_path):
    cert_path, key_path = tls.dev_certificate(tmp_path, now=NOW)
    cert_path.write_text("not a certificate")
    cert_path, key_path = tls.dev_certificate(tmp_path, now=NOW)
    tls.check_pair(cert_path, key_path)
    (tmp_path / "other").mkdir()
    other = tls.dev_certificate(tmp_path / "other", now=NOW)[1]
    key_path.write_bytes(other.read_bytes())  # a key that is not the certificate's
    cert_path, key_path = tls.dev_certificate(tmp_path, now=NOW)
    tls.check_pair(cert_path, key_path)


def test_a_wrong_certificate_pair_is_refused_with_what_to_fix(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    cert_path, _ = tls.dev_certificate(tmp_path / "a", now=NOW)
    _, other_key = tls.dev_certificate(tmp_path / "b", now=NOW)
    with pytest.raises(ConfigError, match="is not the key of --tls-cert"):
        tls.check_pair(cert_path, other_key)
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        tls.check_pair(other_key, other_key)
    with pytest.raises(ConfigError, match="cannot read --tls-key"):
        tls.check_pair(cert_path, tmp_path / "missing.pem")


@pytest.mark.parametrize(("fields", "message"), [
    ({"tls_cert": "c.pem"}, "--tls-cert and --tls-key go together"),
    ({"tls_dev": True, "tls_cert": "c.pem", "tls_key": "k.pem"}, "not both"),
    ({"tls_dev": True, "http": None}, "set --http too"),
])
def test_inconsistent_tls_settings_are_refused(tmp_path, fields, message):
    fields = {"http": ("127.0.0.1", 0), **fields}
    for name in ("tls_cert", "tls_key"):
        if name in fields:
            fields[name] = tmp_path / fields[name]
    with pytest.raises(ConfigError, match=message):
        ServiceConfig(data=tmp_path, **fields)


# --- the pages over HTTPS ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def https_node(tmp_path_factory):
    data, _ = make_chain(tmp_path_factory.mktemp("pages"))
    with ServiceThread(data, tls_dev=True) as node:
        cert_path = data / tls.TLS_DIRECTORY / tls.DEV_CERT_FILE
        # Trusting only the node's own certificate: the name (127.0.0.1) must be in it.
        node.url = node.url.replace("http://", "https://")
        trusted = ssl.create_default_context(cafile=cert_path)
        node.https = httpx.Client(base_url=node.url, verify=trusted, timeout=30)
        yield node
        node.https.close()


def test_the_rest_api_and_the_pages_answer_over_https(https_node):
    status = https_node.https.get("/v1/status")
    assert status.status_code == 200 and status.json()["height"] == 0
    overview = https_node.https.get("/")
    assert overview.status_code == 200
    assert "text/html" in overview.headers["content-type"]
    assert overview.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert '<dd id="chain-height">0</dd>' in overview.text
    assert https_node.service.addresses()["http"].startswith("https://127.0.0.1:")


def test_plain_http_is_not_served_on_an_https_listener(https_node):
    with pytest.raises(httpx.HTTPError):
        httpx.get(https_node.url.replace("https://", "http://") + "/v1/status", timeout=10)


def test_static_files_come_from_the_node_with_the_policy(https_node):
    for path, kind in (("/static/tsunagi.css", "text/css"), ("/static/live.js", "javascript")):
        answer = https_node.https.get(path)
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert "http" not in https_node.https.get("/static/tsunagi.css").text  # no remote fonts


@pytest.mark.parametrize(("path", "status", "text"), [
    ("/blocks/999", 404, "There is no block at height 999: the chain's heights are 0 to 0"),
    ("/blocks/" + "ab" * 32, 404, "No block on this chain has the hash " + "ab" * 32),
    ("/blocks/xyz", 400, "neither a block height (digits) nor a block hash"),
    ("/accounts/99", 404, "No account 99 on chain"),
    ("/accounts/0", 400, "Accounts are numbered from 1"),
    ("/accounts/two", 400, "An account number is a whole number"),
    ("/blocks/0?start=-1", 400, "Start is a whole number"),
    ("/search?q=hello", 400, "is not a block height (digits), a block hash"),
])
def test_every_refusal_is_a_page_that_says_why(https_node, path, status, text):
    answer = https_node.https.get(path)
    assert answer.status_code == status
    assert "text/html" in answer.headers["content-type"]
    assert text in answer.text.replace("&#39;", "'")
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_search_goes_to_the_block_or_the_account(https_node):
    assert https_node.https.get("/search?q=0").headers["location"] == "/blocks/0"
    assert https_node.https.get("/search?q=%231").headers["location"] == "/accounts/1"
    genesis = https_node.https.get("/v1/blocks/0").json()["hash"]
    assert https_node.https.get(f"/search?q={genesis}").headers["location"] \
        == f"/blocks/{genesis}"
    page = https_node.https.get(f"/blocks/{genesis}")
    assert page.status_code == 200 and "<h1>Block 0</h1>" in page.text


def test_the_genesis_block_page_lists_its_records(https_node):
    page = https_node.https.get("/blocks/0")
    block = https_node.https.get("/v1/blocks/0").json()
    assert page.status_code == 200
    assert f'<dd class="hash" id="block-hash">{block["hash"]}</dd>' in page.text
    assert page.text.count("<td class=\"hash\">") == block["record_count"]
    for txid in block["txids"]:
        assert txid in page.text


def test_the_api_documentation_keeps_working_without_the_pages_policy(https_node):
    docs = https_node.https.get("/docs")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers


# --- the block feed ----------------------------------------------------------------------------

class _Ledger:
    """A ledger of ``height`` blocks, each a real encoded block (the genesis block copied)."""

    def __init__(self, block: bytes) -> None:
        self.height, self.data = 1, block

    def block(self, height: int) -> bytes | None:
        return self.data if 0 <= height < self.height else None


class _Node:
    def __init__(self, ledger: _Ledger) -> None:
        self.ledger, self.signal = ledger, asyncio.Event()

    def block_signal(self) -> asyncio.Event:
        return self.signal

    def add_block(self) -> None:
        self.ledger.height += 1
        self.signal.set()
        self.signal = asyncio.Event()


async def _read(function, *args):
    return function(*args)


def _genesis(tmp_path) -> bytes:
    from tsunagi.ledger import Ledger

    data, _ = make_chain(tmp_path)
    with Ledger.open(data) as ledger:
        return bytes(ledger.block(0))


def test_a_subscriber_that_falls_behind_is_dropped_and_the_others_go_on(tmp_path):
    genesis = _genesis(tmp_path)

    async def scenario():
        node = _Node(_Ledger(genesis))
        feed = BlockFeed(node, _read, asyncio.Event(), queue_max=2)
        slow, quick = feed.subscribe(), feed.subscribe()
        heights = []
        for _ in range(3):
            node.add_block()
            while feed.published_height < node.ledger.height:
                await asyncio.sleep(0)  # lets the feed's task run; no waiting for time
            heights.append(quick.queue.get_nowait()["height"])
        assert slow.dropped and slow not in feed.subscribers and feed.dropped == 1
        assert slow.queue.get_nowait() is None  # its stream ends; a reconnect catches up
        assert not quick.dropped and quick in feed.subscribers
        return heights

    assert asyncio.run(scenario()) == [1, 2, 3]


def test_a_stream_catches_up_from_the_height_asked_then_follows(tmp_path):
    genesis = _genesis(tmp_path)

    async def scenario():
        node = _Node(_Ledger(genesis))
        node.ledger.height = 5
        stopping = asyncio.Event()
        feed = BlockFeed(node, _read, stopping, catch_up_max=3)
        stream = feed.stream(from_height=0)
        chunks = [await anext(stream) for _ in range(4)]  # retry, then the newest three
        node.add_block()
        chunks.append(await anext(stream))
        stopping.set()
        rest = [chunk async for chunk in stream]
        return chunks, rest, feed

    chunks, rest, feed = asyncio.run(scenario())
    assert chunks[0] == b"retry: 1000\n\n"
    assert [chunk.split(b"\n")[0] for chunk in chunks[1:]] == \
        [b"id: 2", b"id: 3", b"id: 4", b"id: 5"]
    assert b'"record_count":' in chunks[1]
    assert rest == [] and not feed.subscribers  # the node stopping ends every stream


def test_a_browser_gets_a_page_for_a_path_that_is_not_there(https_node):
    page = https_node.https.get("/blcks/1", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "This node has no page /blcks/1" in page.text
    api = https_node.https.get("/v1/nothing", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    assert https_node.https.get("/blcks/1").json()["error"]["code"] == "not_found"


# --- the command ---------------------------------------------------------------------------------

def test_the_node_prints_its_dev_certificate_and_reuses_it(tmp_path):
    data, _ = make_chain(tmp_path)
    with NodeProcess(data, "--http", "127.0.0.1:0", "--tls-dev") as node:
        cert_path = Path(node.ready["tls_cert"])
        assert cert_path == data / "tls" / "dev-cert.pem"
        assert node.ready["http"].startswith("https://127.0.0.1:")
        assert node.ready["pages"] == node.ready["http"] + "/"
        told = node.process.stderr.readline()
        assert f"development certificate {cert_path}" in told and "curl --cacert" in told
        first = cert_path.read_bytes()
    with NodeProcess(data, "--http", "127.0.0.1:0", "--tls-dev") as node:
        assert Path(node.ready["tls_cert"]).read_bytes() == first


@pytest.mark.parametrize(("flags", "message"), [
    (["--tls-dev"], "TLS serves the --http listener over HTTPS: set --http too"),
    (["--http", "127.0.0.1:0", "--tls-cert", "cert.pem"], "--tls-cert and --tls-key go"),
    (["--http", "127.0.0.1:0", "--tls-cert", "cert.pem", "--tls-key", "key.pem"],
     "cannot read --tls-cert cert.pem"),
])
def test_the_command_refuses_bad_tls_flags_in_one_line(tmp_path, flags, message):
    data, _ = make_chain(tmp_path)
    done = tsunagi("node", "--data", data, "--listen", "127.0.0.1:0", *flags, check=False,
                   cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("tsunagi: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_every_template_and_static_file_installs_with_the_package():
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    package = root / "src" / "tsunagi"
    patterns = tomllib.loads((root / "pyproject.toml").read_text()
                             )["tool"]["setuptools"]["package-data"]["tsunagi"]
    files = [path.relative_to(package).as_posix() for folder in ("templates", "static")
             for path in (package / "node" / "http" / folder).iterdir()]
    assert len(files) >= 5
    assert [name for name in files
            if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)] == []
    # MANIFEST.in leaves *.html out of the source distribution (Cython's annotations) but
    # takes the templates back, after that exclusion.
    manifest = (root / "MANIFEST.in").read_text()
    assert manifest.index("recursive-include src/tsunagi/node/http/templates *.html") \
        > manifest.index("global-exclude")


def test_the_config_file_takes_the_tls_settings(tmp_path):
    from tsunagi.node.service import build_config

    config = build_config({"data": str(tmp_path), "http": "127.0.0.1:0", "tls_dev": True})
    assert config.tls_dev and config.tls and config.tls_cert is None
    config = build_config({"data": str(tmp_path), "http": "127.0.0.1:0",
                           "tls_cert": "c.pem", "tls_key": "k.pem"})
    assert (config.tls_cert, config.tls_key) == (Path("c.pem"), Path("k.pem"))
    with pytest.raises(ConfigError, match="tls_dev is true or false"):
        build_config({"data": str(tmp_path), "http": "127.0.0.1:0", "tls_dev": "yes"})


def test_what_a_user_typed_is_shown_as_text_never_as_markup(https_node):
    answer = https_node.https.get("/search", params={"q": "<script>alert(1)</script>"})
    assert answer.status_code == 400
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    assert "<script>alert" not in answer.text


def _first_block_event(lines) -> tuple[str, dict]:
    """(id line, payload) of the next block event among an event stream's lines."""
    event_id = None
    for line in lines:
        if line.startswith("id: "):
            event_id = line
        elif line.startswith("data: "):
            return event_id, json.loads(line[6:])
    raise AssertionError("the stream ended before a block event")


def test_the_pages_feed_resumes_after_the_last_event_and_follows_new_blocks(tmp_path):
    data, wallet = make_chain(tmp_path)
    with ServiceThread(data, tls_dev=True) as node:
        url = node.url.replace("http://", "https://")
        trusted = ssl.create_default_context(cafile=data / "tls" / "dev-cert.pem")
        with httpx.Client(base_url=url, verify=trusted, timeout=30) as https:
            first = submit_json(https, *wallet.transfer(1, 1)).json()
            with https.stream("GET", "/events/blocks", headers={"last-event-id": "0"}) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                event_id, block = _first_block_event(stream.iter_lines())
            assert event_id == "id: 1" and block["hash"] == first["block_hash"]
            assert block["record_count"] == 1 and block["failed_count"] == 0
            with https.stream("GET", "/events/blocks") as stream:  # from the next new block
                lines = stream.iter_lines()
                assert next(lines) == "retry: 1000"  # the stream is open: the feed has it
                second = submit_json(https, *wallet.transfer(2, 1)).json()
                event_id, block = _first_block_event(lines)
            assert event_id == "id: 2" and block["hash"] == second["block_hash"]
            assert block["prev_hash"] == first["block_hash"]
