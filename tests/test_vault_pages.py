"""The vault's pages and JSON routes answer what a user needs, and refuse what they must, when a
real `tsunagi node --vault --http --tls-dev` serves a chain with the will on it.

Method: the chain (its config runs the vault contract), the service account's key, the holders'
enrolment (device files under PINs, at Argon2id test costs) and the will document are made
through the Python API against the data directory before the node starts (`will_chain`, which
the browser test shares); then httpx talks to the node over HTTPS, trusting its development
certificate. Outcomes are read back from the pages and from the JSON the pages' script reads.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import ssl
from pathlib import Path

import httpx
import pytest
from cli_helpers import NodeProcess

from tsunagi.contracts.chain import ChainContracts
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import ConfigError, HolderLockedError, PinError
from tsunagi.ledger.ledger import Ledger
from tsunagi.node.http.vault_node import prepare_vault, service_directory
from tsunagi.node.service import build_config
from tsunagi.privacy import vault_contract
from tsunagi.privacy.holders import DeviceFile, HolderKeys
from tsunagi.privacy.pins import Argon2Params
from tsunagi.privacy.service import (
    ConfidentialityService,
    HolderClient,
    enroll_device,
    unlock_device,
)
from tsunagi.privacy.vault import Part, Vault, VaultService

CHAIN = 15
CHEAP = Argon2Params(memory_kib=8, iterations=1, lanes=1)
SOURCE_SHA256 = hashlib.sha256(inspect.getsource(vault_contract).encode()).digest()
PEOPLE = ("person", "guardian", "lawyer", "outsider")
PINS = {name: f"{4711 + n:06d}" for n, name in enumerate(PEOPLE)}
PREAMBLE = "The last will of the person."
WILL = "I leave my piano to the music school of my town."


def will_chain(folder: Path) -> dict:
    """A vault chain in ``folder``/chain with the will of person (holders person, guardian and
    lawyer, two of whom open its bequests); device files at ``folder``/NAME.json. Returns the
    data directory, the document id (hex), and each person's account and device file text."""
    people = {name: HolderKeys.generate() for name in PEOPLE}
    service_key = PrivateKey.generate()
    config = ChainConfig(
        name="vault-pages", chain_id=CHAIN, asset_code="TSU",
        allocations=tuple((people[name].signing.public_key, 10) for name in PEOPLE)
        + ((service_key.public_key, 10),), contracts=(("vault", SOURCE_SHA256),))
    account = {name: number for number, name in enumerate(PEOPLE, start=1)}
    data = folder / "chain"
    contracts = ChainContracts(config, {"vault": "tsunagi.privacy.vault_contract:"
                                                 "VaultContract"})
    ledger = Ledger.create(data, config, threads=1, calls=contracts)
    prepare_vault(data, service_key)
    confidential = ConfidentialityService(service_directory(data), argon2=CHEAP)
    try:
        for name in PEOPLE:  # enrolment: the holder's client and the service, in one process
            confidential.invite(people[name].signing.public_key)
            enroll_device(confidential, confidential.identity.signing_key, people[name],
                          folder / f"{name}.json", PINS[name])
        service = VaultService(ledger, contracts, confidential, account=len(PEOPLE) + 1,
                               signing=service_key)
        vault = Vault(ledger, contracts, service)
        holders = [(people[name].identity(), account[name])
                   for name in ("person", "guardian", "lawyer")]
        document_id = vault.create_document(
            people["person"].signing, account["person"], "Last will", holders, 2,
            [Part(1, "Preamble", PREAMBLE), Part(2, "Bequests", WILL.encode(), secret=True)])
    finally:
        ledger.close()
        confidential.close()
    return {"data": data, "document": document_id.hex(), "account": account,
            "path": {name: folder / f"{name}.json" for name in PEOPLE},
            "device": {name: (folder / f"{name}.json").read_text() for name in PEOPLE}}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    made = will_chain(tmp_path_factory.mktemp("vault-pages"))
    with NodeProcess(made["data"], "--http", "127.0.0.1:0", "--tls-dev", "--vault") as served:
        served.made = made
        served.http = https_client(served)
        yield served
        served.http.close()


def https_client(node) -> httpx.Client:
    """A client of the node's HTTPS listener that trusts its development certificate only."""
    return httpx.Client(base_url=node.ready["http"], timeout=60,
                        verify=ssl.create_default_context(cafile=node.ready["tls_cert"]))


def session(node) -> tuple[httpx.Client, str]:
    """A client with a session cookie, and the CSRF token of its document page."""
    client = https_client(node)
    page = client.get(f"/vault/documents/{node.made['document']}")
    token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text).group(1)
    return client, token


def test_the_list_and_the_document_show_open_parts_and_keep_secret_ones_locked(node):
    listed = node.http.get("/vault")
    assert listed.status_code == 200 and "Last will" in listed.text
    assert "default-src 'self'" in listed.headers["content-security-policy"]
    page = node.http.get(f"/vault/documents/{node.made['document']}")
    assert page.status_code == 200
    assert PREAMBLE in page.text and "Encrypted" in page.text
    assert WILL not in page.text and "piano" not in page.text
    found = node.http.get(f"/vault/api/documents/{node.made['document']}").json()
    assert [part["secret"] for part in found["parts"]] == [False, True]
    assert found["parts"][1]["text"] is None and found["threshold"] == 2


def test_an_unknown_document_is_a_page_saying_where_to_start(node):
    page = node.http.get("/vault/documents/" + "00" * 32, headers={"accept": "text/html"})
    assert page.status_code == 404 and "start from the list of documents" in page.text
    page = node.http.get("/vault/documents/nothex", headers={"accept": "text/html"})
    assert page.status_code == 400 and "64 hex digits" in page.text


class HttpChannel:
    """The channel's transport over the node's HTTPS routes, for HolderClient: what the
    holder's page does, from Python."""

    def __init__(self, client: httpx.Client, token: str) -> None:
        self.client, self.headers = client, {"X-CSRF-Token": token}

    def post(self, path: str, body: dict) -> dict:
        answer = self.client.post(path, headers=self.headers, json=body).json()
        assert answer["ok"], answer
        return answer

    def open_session(self, hello: bytes) -> tuple[bytes, bytes]:
        answer = self.post("/vault/api/channel/open", {"hello": hello.hex()})
        return bytes.fromhex(answer["session"]), bytes.fromhex(answer["reply"])

    def authenticate(self, session_id: bytes, auth: bytes) -> None:
        self.post("/vault/api/channel/authenticate", {"session": session_id.hex(),
                                                      "auth": auth.hex()})

    def exchange(self, session_id: bytes, frame: bytes) -> bytes:
        return bytes.fromhex(self.post("/vault/api/channel/exchange", {
            "session": session_id.hex(), "frame": frame.hex()})["frame"])

    def step(self, holder, method: str, args: dict) -> dict:
        """A call prepared by the node, signed here, submitted."""
        prepared = self.post("/vault/api/calls/prepare", {
            "key": holder.signing.public_key.hex(), "method": method, "args": args})
        signature = holder.signing.sign(bytes.fromhex(prepared["txid"]))
        return self.post("/vault/api/calls/submit", {"record": prepared["record"],
                                                     "signature": signature.hex()})


def test_a_step_without_the_sessions_token_is_refused(node):
    client, _ = session(node)
    try:  # the session's cookie goes with it, its token does not
        answer = client.post("/vault/api/channel/open", json={"hello": "01" + "00" * 32})
        forged = client.post("/vault/api/channel/open", json={"hello": "01" + "00" * 32},
                             headers={"X-CSRF-Token": "0" * 32})
    finally:
        client.close()
    for refused in (answer, forged):
        assert refused.status_code == 403
        assert "session token is missing or stale" in refused.json()["message"]


def test_a_wrong_pin_and_an_outsider_are_refused_and_on_the_audit_trail(node):
    client, token = session(node)
    made, channel = node.made, HttpChannel(client, token)
    try:
        guardian = unlock_device(channel, made["path"]["guardian"], PINS["guardian"])
        opened = channel.step(guardian, "request_open", {
            "document_id": made["document"], "part_id": 2, "reason": "the person died",
            "reply_key": "11" * 32, "expiry_s": 0})
        assert opened["stands"] and opened["code"] == "ok"
        request_id = opened["txid"]
        with pytest.raises(PinError, match="wrong PIN") as wrong:
            device = DeviceFile.load(made["path"]["lawyer"])
            HolderClient(channel, device.service_key, device.device).request(
                {"type": "unlock", "pin": "000000", "request_id": request_id})
        assert wrong.value.tries_left == 4
        outsider = unlock_device(channel, made["path"]["outsider"], PINS["outsider"])
        refused = channel.step(outsider, "approve", {"request_id": request_id})
        assert not refused["stands"] and refused["refusal"] == "not_holder"
        found = client.get(f"/vault/api/requests/{request_id}").json()
    finally:
        client.close()
    assert found["status"] == "open" and found["approvals"] == [] and not found["delivered"]
    codes = [(step["method"], step["code"]) for step in found["trail"]]
    assert ("note_refusal", "pin_wrong") in codes and ("approve", "not_holder") in codes


def test_five_wrong_pins_lock_the_holder_out_with_a_message_saying_who_unlocks(node):
    client, token = session(node)
    channel = HttpChannel(client, token)
    device = DeviceFile.load(node.made["path"]["outsider"])
    try:
        session_keys = HolderClient(channel, device.service_key, device.device)
        for tries_left in (4, 3, 2, 1):
            with pytest.raises(PinError) as wrong:
                session_keys.request({"type": "unlock", "pin": "000000"})
            assert wrong.value.tries_left == tries_left
        with pytest.raises(HolderLockedError, match="administrator"):
            session_keys.request({"type": "unlock", "pin": "000000"})
        with pytest.raises(HolderLockedError):  # the right PIN is not checked any more
            session_keys.request({"type": "unlock", "pin": PINS["outsider"]})
    finally:
        client.close()


def test_a_call_the_node_did_not_prepare_is_refused(node):
    client, token = session(node)
    try:
        answer = client.post("/vault/api/calls/submit", headers={"X-CSRF-Token": token},
                             json={"record": "00" * 128, "signature": "00" * 64})
    finally:
        client.close()
    assert answer.status_code == 404 and "prepare the step again" in answer.json()["message"]


def test_the_services_keys_and_pin_counts_outlive_a_restart(tmp_path):
    made = will_chain(tmp_path)
    for run in range(2):
        with NodeProcess(made["data"], "--http", "127.0.0.1:0", "--tls-dev",
                         "--vault") as served:
            served.made = made
            client, token = session(served)
            channel = HttpChannel(client, token)
            try:  # the device file pins the service's key: a new key would refuse it
                holder = unlock_device(channel, made["path"]["lawyer"], PINS["lawyer"])
                assert holder.signing.public_key == DeviceFile.load(
                    made["path"]["lawyer"]).identity.signing_key
                device = DeviceFile.load(made["path"]["person"])
                with pytest.raises(PinError) as wrong:
                    HolderClient(channel, device.service_key, device.device).request(
                        {"type": "unlock", "pin": "000000"})
                assert wrong.value.tries_left == 4 - run  # the count was kept on disk
            finally:
                client.close()


def test_the_vault_needs_the_http_listener():
    with pytest.raises(ConfigError, match="--vault serves its pages on the --http listener"):
        build_config({"data": "chain", "vault": True})
