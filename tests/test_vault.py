"""The document vault's workflow on a real chain: a part opens for its requester only after k
holders approve, and every refused step releases nothing and is on the audit trail.

Method: a tsunagi ledger in a temporary directory whose config installs the vault contract by
the SHA-256 of its source; real BIP340 and X25519 keys, HPKE fragments and a
ConfidentialityService with Argon2id at test costs; holders enrol devices under PINs. Time is
the block time, set through the vault's clock, so an expiry needs no sleeping. Outcomes are
read back from the chain (contract state and call records).
"""

from __future__ import annotations

import hashlib
import inspect
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tsunagi.contracts.chain import ChainContracts
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import (
    FragmentError,
    HolderLockedError,
    NotFoundError,
    PartDamagedError,
    PinError,
    ReplayError,
    StepRefusedError,
    TooFewSharesError,
)
from tsunagi.ledger.ledger import Ledger
from tsunagi.privacy import limits, shamir, vault_contract
from tsunagi.privacy.holders import FragmentContext, HolderKeys, open_fragment
from tsunagi.privacy.pins import Argon2Params
from tsunagi.privacy.service import ConfidentialityService, HolderClient, enroll_device
from tsunagi.privacy.vault import Part, Vault, VaultCode, VaultService, _seal_part

CHAIN = 15
CHEAP = Argon2Params(memory_kib=8, iterations=1, lanes=1)
INSTALLED = {"vault": "tsunagi.privacy.vault_contract:VaultContract"}
SOURCE_SHA256 = hashlib.sha256(inspect.getsource(vault_contract).encode()).digest()
PEOPLE = ("person", "guardian", "lawyer", "alice", "bob", "carol", "dana", "outsider")
PINS = {name: f"{4711 + n:06d}" for n, name in enumerate(PEOPLE)}
WILL = b"I leave my piano to the music school of my town."


class World:
    """A chain, its service and vault, and people with accounts and enrolled devices."""

    def __init__(self, tmp_path: Path) -> None:
        self.now_s = int(time.time())
        self.tmp_path = tmp_path
        self.keys = {name: HolderKeys.generate() for name in PEOPLE}
        service_signing = PrivateKey.generate()
        config = ChainConfig(
            name="vault", chain_id=CHAIN, asset_code="TSU",
            allocations=tuple((self.keys[n].signing.public_key, 10) for n in PEOPLE)
            + ((service_signing.public_key, 10),),
            contracts=(("vault", SOURCE_SHA256),))
        self.account = {name: n for n, name in enumerate(PEOPLE, start=1)}
        self.contracts = ChainContracts(config, INSTALLED)
        self.ledger = Ledger.create(tmp_path / "chain", config, threads=1, calls=self.contracts)
        self.confidential = ConfidentialityService(tmp_path / "service", argon2=CHEAP)
        self.service = VaultService(self.ledger, self.contracts, self.confidential,
                                    account=len(PEOPLE) + 1, signing=service_signing,
                                    clock=self.clock)
        self.vault = Vault(self.ledger, self.contracts, self.service, clock=self.clock)
        self.device = {}
        for name in PEOPLE:
            self.confidential.invite(self.keys[name].signing.public_key)
            self.device[name] = tmp_path / f"{name}.json"
            enroll_device(self.confidential, self.confidential.identity.signing_key,
                          self.keys[name], self.device[name], PINS[name])

    def clock(self) -> int:
        return self.now_s

    def holders(self, *names: str) -> list:
        return [(self.keys[name].identity(), self.account[name]) for name in names]

    def will(self) -> bytes:
        return self.vault.create_document(
            self.keys["person"].signing, self.account["person"], "Last will",
            self.holders("person", "guardian", "lawyer"), 2,
            [Part(1, "Preamble", "The last will of the person."), Part(2, "Bequests", WILL,
                                                                        secret=True)])

    def request(self, document_id: bytes, name: str = "guardian", **options):
        reply = X25519PrivateKey.generate()
        request_id = self.vault.request_open(
            self.keys[name].signing, self.account[name], document_id, 2, "the person died",
            reply.public_key().public_bytes_raw(), **options)
        return request_id, reply

    def approve(self, name: str, request_id: bytes, pin: str | None = None):
        return self.vault.approve(self.device[name], PINS[name] if pin is None else pin,
                                  self.account[name], request_id)

    def close(self) -> None:
        self.ledger.close()
        self.confidential.close()


@pytest.fixture
def world(tmp_path):
    opened = World(tmp_path)
    yield opened
    opened.close()


def refusals(world: World, request_id: bytes) -> list[tuple[str, Result, VaultCode]]:
    return [(step.method, step.code, step.refusal)
            for step in world.vault.audit_trail(request_id) if step.refusal]


def test_the_will_opens_for_the_requester_after_two_of_three_approvals(world):
    document_id = world.will()
    assert world.vault.open_part(document_id, 1) == "The last will of the person."
    assert world.vault.document(document_id)["threshold"] == 2
    request_id, reply = world.request(document_id)
    world.now_s += 60
    first = world.approve("person", request_id)
    assert first.status == "open" and not first.delivered
    with pytest.raises(NotFoundError, match="not opened"):
        world.vault.receive(request_id, reply)
    world.now_s += 60
    outcome = world.approve("lawyer", request_id)
    assert outcome.status == "opened" and outcome.delivered
    assert outcome.approvals == (1, 3) and outcome.at_s == world.now_s
    assert world.vault.receive(request_id, reply) == WILL
    # Sealed to the requester: another key does not open the delivery.
    with pytest.raises(FragmentError):
        world.vault.receive(request_id, X25519PrivateKey.generate())
    trail = world.vault.audit_trail(request_id)
    assert [(s.method, s.account, s.code) for s in trail] == [
        ("request_open", world.account["guardian"], Result.ok),
        ("approve", world.account["person"], Result.ok),
        ("approve", world.account["lawyer"], Result.ok)]
    assert trail[2].time_s - trail[0].time_s == 120


def test_a_denied_request_and_an_expired_one_release_nothing(world):
    document_id = world.will()
    denied, reply = world.request(document_id)
    world.approve("person", denied)
    assert world.vault.deny(world.keys["lawyer"], world.account["lawyer"], denied,
                            "the person is alive").status == "denied"
    with pytest.raises(StepRefusedError, match="request_closed") as caught:
        world.approve("guardian", denied)
    assert caught.value.code == VaultCode.request_closed
    assert world.service.delivery(denied) is None
    assert refusals(world, denied) == [("approve", Result.call_refused,
                                        VaultCode.request_closed)]

    expired, _ = world.request(document_id)
    world.approve("person", expired)
    world.now_s += vault_contract.EXPIRY_DEFAULT_S + 1
    # Chain time moves with blocks only: until one is made past the expiry it is still open.
    assert world.vault.outcome(expired).status == "open"
    with pytest.raises(StepRefusedError, match="expired") as caught:
        world.approve("lawyer", expired)
    assert caught.value.code == VaultCode.request_expired
    outcome = world.vault.outcome(expired)
    assert outcome.status == "expired" and not outcome.delivered
    assert refusals(world, expired) == [("approve", Result.call_refused,
                                         VaultCode.request_expired)]
    # The service forgot the fragment the person released.
    with pytest.raises(ReplayError):
        world.confidential.fragments(expired)


def test_an_expiry_beyond_24_hours_is_refused(world):
    document_id = world.will()
    with pytest.raises(StepRefusedError, match="expiry") as caught:
        world.request(document_id, expiry_s=vault_contract.EXPIRY_MAX_S + 1)
    assert caught.value.code == VaultCode.expiry_invalid


def test_a_wrong_pin_is_counted_then_locks_the_holder_out_on_the_audit_trail(world):
    document_id = world.will()
    request_id, _ = world.request(document_id)
    with pytest.raises(PinError) as caught:
        world.approve("lawyer", request_id, pin="000000")
    assert caught.value.tries_left == limits.pin_attempts_max - 1
    for _ in range(limits.pin_attempts_max - 2):
        with pytest.raises(PinError):
            world.approve("lawyer", request_id, pin="000000")
    with pytest.raises(HolderLockedError):
        world.approve("lawyer", request_id, pin="000000")
    with pytest.raises(HolderLockedError):  # even the right PIN, once locked
        world.approve("lawyer", request_id)
    codes = [code for _, _, code in refusals(world, request_id)]
    assert codes == [VaultCode.pin_wrong] * (limits.pin_attempts_max - 1) \
        + [VaultCode.holder_locked] * 2
    lawyer = world.keys["lawyer"].signing.public_key
    assert all(step.holder_key == lawyer for step in world.vault.audit_trail(request_id)
               if step.refusal)
    assert world.vault.outcome(request_id).approvals == ()


def test_a_holder_who_is_not_the_documents_is_refused(world):
    document_id = world.will()
    with pytest.raises(StepRefusedError, match="not_requester"):
        world.request(document_id, name="outsider")
    request_id, _ = world.request(document_id)
    with pytest.raises(StepRefusedError, match="not one of the document's") as caught:
        world.approve("outsider", request_id)
    assert caught.value.code == VaultCode.not_holder
    world.approve("person", request_id)
    with pytest.raises(StepRefusedError, match="already_approved"):
        world.approve("person", request_id)
    assert refusals(world, request_id) == [
        ("approve", Result.call_refused, VaultCode.not_holder),
        ("approve", Result.call_refused, VaultCode.already_approved)]
    assert world.vault.outcome(request_id).approvals == (1,)


def test_a_fragment_replayed_from_an_earlier_request_is_refused(world):
    document_id = world.will()
    first, reply = world.request(document_id)
    world.approve("person", first)
    world.approve("lawyer", first)
    assert world.vault.receive(first, reply) == WILL
    # The lawyer's release for the closed request, sent again.
    with pytest.raises(ReplayError, match="earlier request"):
        world.vault.release(world.keys["lawyer"], first)
    assert refusals(world, first)[-1] == ("note_refusal", Result.ok,
                                          VaultCode.fragment_replayed)
    # A release signed for the first request, sent for a second one.
    second, _ = world.request(document_id)
    lawyer = world.keys["lawyer"]
    client = HolderClient(world.confidential, world.confidential.identity.signing_key,
                          lawyer.signing)
    context = FragmentContext(CHAIN, document_id, 2, 3)
    part = world.vault.chain.read(vault_contract.part_key(document_id, 2))
    fragment = open_fragment(part["fragments"][2], lawyer, context)
    from tsunagi.privacy.service import release_statement
    signature = lawyer.signing.sign(release_statement(client.session.transcript, first,
                                                      context, fragment))
    message = client.release_message(second, context, fragment, signature)
    with pytest.raises(Exception, match="not signed by the holder"):
        client.request(message)
    world.service.record_refusals()
    assert refusals(world, second) == [("note_refusal", Result.ok,
                                        VaultCode.release_unsigned)]
    assert world.confidential.fragments(second) == {}


def test_a_fragment_of_another_document_is_refused(world):
    will = world.will()
    other = world.vault.create_document(
        world.keys["person"].signing, world.account["person"], "Diary",
        world.holders("person", "guardian", "lawyer"), 2,
        [Part(2, "Secret", b"dear diary", secret=True)])
    request_id, _ = world.request(will)
    lawyer = world.keys["lawyer"]
    other_context = FragmentContext(CHAIN, other, 2, 3)
    part = world.vault.chain.read(vault_contract.part_key(other, 2))
    foreign = open_fragment(part["fragments"][2], lawyer, other_context)
    # Named as the other document's fragment: the service refuses it for this request.
    client = HolderClient(world.confidential, world.confidential.identity.signing_key,
                          lawyer.signing)
    with pytest.raises(FragmentError, match="release the fragment of the requested part"):
        client.release(request_id, other_context, foreign, lawyer)
    world.service.record_refusals()
    # Passed off as this document's: the share's set id gives it away, at the service.
    world.approve("person", request_id)
    world.vault._step(lawyer.signing, world.account["lawyer"], "approve",
                      {"request_id": request_id})
    world.vault.release(lawyer, request_id, fragment=foreign)
    outcome = world.vault.outcome(request_id)
    assert outcome.status == "opened" and not outcome.delivered
    assert [code for _, _, code in refusals(world, request_id)] == [
        VaultCode.fragment_foreign, VaultCode.share_damaged]
    assert "another key" in world.vault.audit_trail(request_id)[-1].message
    # The lawyer's own fragment, released afterwards, opens it.
    world.vault.release(lawyer, request_id)
    assert world.vault.outcome(request_id).delivered


def test_a_tampered_share_is_refused_and_a_good_one_still_opens(world):
    document_id = world.will()
    request_id, reply = world.request(document_id)
    world.approve("person", request_id)
    lawyer = world.keys["lawyer"]
    world.vault._step(lawyer.signing, world.account["lawyer"], "approve",
                      {"request_id": request_id})
    part = world.vault.chain.read(vault_contract.part_key(document_id, 2))
    share = bytearray(open_fragment(part["fragments"][2], lawyer,
                                    FragmentContext(CHAIN, document_id, 2, 3)))
    share[14] ^= 1
    world.vault.release(lawyer, request_id, fragment=bytes(share))
    assert not world.vault.outcome(request_id).delivered
    step = world.vault.audit_trail(request_id)[-1]
    assert step.refusal == VaultCode.share_damaged and "damaged" in step.message
    world.vault.release(lawyer, request_id)
    assert world.vault.receive(request_id, reply) == WILL


def test_a_tampered_ciphertext_releases_nothing(world):
    holders = world.holders("person", "guardian", "lawyer")
    document_id = b"\x07" * 32
    stored = _seal_part(CHAIN, document_id, Part(2, "Bequests", WILL, secret=True), holders, 2)
    stored["ciphertext"] = bytes([stored["ciphertext"][0] ^ 1]) + stored["ciphertext"][1:]
    world.vault._step(world.keys["person"].signing, world.account["person"],
                      "create_document", {
                          "document_id": document_id, "title": "Will", "threshold": 2,
                          "holders": [[i.to_bytes(), a] for i, a in holders],
                          "parts": [stored], "service_account": world.service.account})
    request_id, reply = world.request(document_id)
    world.approve("person", request_id)
    with pytest.raises(PartDamagedError, match="nothing was released"):
        world.approve("lawyer", request_id)
    assert world.service.delivery(request_id) is None
    assert refusals(world, request_id)[-1] == ("note_refusal", Result.ok,
                                               VaultCode.part_damaged)


def test_a_lost_key_is_rescued_by_colleagues_through_the_same_workflow(world):
    wallet_key = bytes(range(32))
    document_id = world.vault.create_document(
        world.keys["dana"].signing, world.account["dana"], "Dana's wallet recovery",
        world.holders("alice", "bob", "carol"), 2,
        [Part(1, "Owner", "Dana, accounts team"), Part(2, "Wallet key", wallet_key,
                                                         secret=True)],
        requesters=[world.account["dana"]])
    with pytest.raises(StepRefusedError, match="not_requester"):
        world.request(document_id, name="alice")
    request_id, reply = world.request(document_id, name="dana")
    world.approve("carol", request_id)
    world.approve("alice", request_id)
    assert world.vault.receive(request_id, reply) == wallet_key


def test_the_service_store_and_a_copy_of_the_chain_open_nothing_with_fewer_than_k(world):
    document_id = world.will()
    request_id, _ = world.request(document_id)
    world.approve("person", request_id)  # one holder released: k - 1
    part = world.vault.chain.read(vault_contract.part_key(document_id, 2))
    shares = [open_fragment(part["fragments"][i - 1], world.keys[name],
                            FragmentContext(CHAIN, document_id, 2, i))
              for i, name in ((1, "person"), (2, "guardian"), (3, "lawyer"))]
    # Nothing the chain or the service stores holds a share, the part, or a holder's private
    # keys in the clear (the holders' device files, kept on their own devices, are left out).
    stored = b"".join(path.read_bytes() for top in ("chain", "service")
                      for path in (world.tmp_path / top).rglob("*") if path.is_file())
    secrets = [*shares, WILL] + [world.keys[name].to_bytes()[32:] for name in PEOPLE]
    for secret in secrets:
        assert secret not in stored and secret.hex().encode() not in stored
    # Without a holder's X25519 key a sealed fragment opens to nobody else.
    stranger = HolderKeys.generate()
    with pytest.raises(FragmentError):
        open_fragment(part["fragments"][1], stranger, FragmentContext(CHAIN, document_id, 2, 2))
    # The one share an attacker may get with one holder's help is too few.
    with pytest.raises(TooFewSharesError):
        shamir.combine(shares[:1])
    assert shamir.combine(shares[:2]) == shamir.combine(shares[1:])


def test_the_refusal_codes_of_the_api_are_the_contracts():
    for code in VaultCode:
        if 0 < code < 100:
            assert getattr(vault_contract, code.name.upper()) == code
    assert vault_contract.HOLDERS_MAX == limits.document_holders_max


def test_a_revoked_approval_no_longer_counts_towards_the_threshold(world):
    document_id = world.will()
    request_id, reply = world.request(document_id)
    world.approve("person", request_id)
    outcome = world.vault.revoke(world.keys["person"], world.account["person"], request_id)
    assert outcome.approvals == () and outcome.status == "open"
    assert world.confidential.fragments(request_id) == {}  # the service dropped it
    assert world.approve("lawyer", request_id).status == "open"
    assert world.approve("guardian", request_id).delivered
    assert world.vault.receive(request_id, reply) == WILL
    with pytest.raises(StepRefusedError, match="request_closed"):
        world.vault.revoke(world.keys["lawyer"], world.account["lawyer"], request_id)
    assert [s.method for s in world.vault.audit_trail(request_id)] == [
        "request_open", "approve", "revoke", "approve", "approve", "revoke"]


def test_a_document_with_a_forged_holder_identity_is_stored_but_never_opened(world):
    forged = world.keys["lawyer"].identity()
    forged = type(forged)(forged.signing_key, world.keys["outsider"].identity().fragment_key,
                          forged.signature)  # the outsider's X25519 key under the lawyer's name
    document_id = b"\x09" * 32
    holders = [[world.keys["person"].identity().to_bytes(), world.account["person"]],
               [forged.to_bytes(), world.account["lawyer"]]]
    # Positional arguments, as any client may send them.
    world.vault._step(world.keys["person"].signing, world.account["person"], "create_document",
                      [document_id, "Forged", holders, 2, [{"id": 1, "text": "hello"}]])
    assert world.vault.open_part(document_id, 1) == "hello"
    assert "not signed by its own key" in world.service.ignored[-1][1]
    # The vault goes on working for other documents.
    will = world.will()
    request_id, reply = world.request(will)
    world.approve("person", request_id)
    world.approve("guardian", request_id)
    assert world.vault.receive(request_id, reply) == WILL


def test_a_document_with_255_holders_opens_with_the_last_holders_fragment(world):
    """The largest set a share format can make, 255 holders (share x = 0..254), stored on chain
    and opened by two of them, the last one (whose share sits at x = 254) among them."""
    strangers = [HolderKeys.generate() for _ in range(252)]
    holders = world.holders("person", "guardian") \
        + [(keys.identity(), 100 + n) for n, keys in enumerate(strangers)] \
        + world.holders("lawyer")
    assert len(holders) == limits.document_holders_max == shamir.limits.shamir_shares_max == 255
    document_id = world.vault.create_document(
        world.keys["person"].signing, world.account["person"], "Last will of many",
        holders, 2, [Part(2, "Bequests", WILL, secret=True)])
    assert world.vault.document(document_id)["threshold"] == 2
    request_id, reply = world.request(document_id)
    world.approve("person", request_id)
    outcome = world.approve("lawyer", request_id)
    assert outcome.status == "opened" and outcome.approvals == (1, 255)
    assert world.vault.receive(request_id, reply) == WILL


def test_the_audit_trail_follows_the_chain_when_blocks_are_undone(world):
    """The trail is read incrementally; when the chain's tip is undone (a reorganisation), the
    steps of the undone blocks leave it, and the steps of the blocks that replace them enter."""
    document_id = world.will()
    request_id, _ = world.request(document_id)
    world.approve("person", request_id)
    assert [step.method for step in world.vault.audit_trail(request_id)] \
        == ["request_open", "approve"]
    world.ledger.disconnect_blocks(1)  # the person's approval undone, read at a lower tip
    assert [step.method for step in world.vault.audit_trail(request_id)] == ["request_open"]
    world.approve("guardian", request_id)
    assert [step.account for step in world.vault.audit_trail(request_id)][-1] \
        == world.account["guardian"]
    world.ledger.disconnect_blocks(1)  # and the guardian's, replaced at the same height
    world.approve("lawyer", request_id)
    trail = world.vault.audit_trail(request_id)
    assert [(step.method, step.account) for step in trail] == [
        ("request_open", world.account["guardian"]), ("approve", world.account["lawyer"])]
    assert trail == [step for step in world.vault.audit_trail()
                     if step.request_id == request_id]
