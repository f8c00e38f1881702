"""The channel from a holder to the confidentiality service carries PINs and fragments only
between the holder and the pinned service, and the service takes a fragment only from one of
the document's holders, for an open request, once, in the session it was signed for.

Method: the handshake and frames are driven in memory (the service's transport methods are
called directly, as the HTTP layer would); holders enrol and unlock through real device files
in a temporary directory with cheap Argon2id costs; frames are replayed, flipped, moved between
sessions, and releases are sent for closed requests, other documents and by strangers.
"""

from __future__ import annotations

import json
import os

import pytest

from tsunagi.core import keys
from tsunagi.errors import (
    ChannelError,
    ConfigError,
    EncodingError,
    FragmentError,
    HolderLockedError,
    IdentityError,
    NotFoundError,
    NotHolderError,
    PinError,
    ReplayError,
)
from tsunagi.privacy import limits
from tsunagi.privacy.channel import ClientHandshake, ServiceHandshake, ServiceKeys
from tsunagi.privacy.holders import (
    DeviceFile,
    FragmentContext,
    HolderKeys,
    open_fragment,
    seal_fragment,
)
from tsunagi.privacy.pins import Argon2Params, unlock_statement
from tsunagi.privacy.service import (
    ConfidentialityService,
    HolderClient,
    change_device_pin,
    enroll_device,
    release_statement,
    unlock_device,
)

CHEAP = Argon2Params(memory_kib=8, iterations=1, lanes=1)
CHAIN, DOCUMENT, PART = 7, b"w" * 32, 1
PINS = ["111111", "222222", "333333"]


def handshake(service: ServiceKeys, client_key: keys.PrivateKey, pinned: bytes):
    client = ClientHandshake(client_key, pinned)
    server = ServiceHandshake(service, client.hello, os.urandom(32))
    auth, client_session = client.finish(server.reply)
    return client_session, server.finish(auth)


def test_a_session_carries_messages_both_ways_in_order():
    service, holder = ServiceKeys.generate(), keys.PrivateKey.generate()
    client, server = handshake(service, holder, service.signing.public_key)
    assert server.peer_key == holder.public_key and server.transcript == client.transcript
    for number in range(3):
        assert server.open(client.seal(b"pin %d" % number)) == b"pin %d" % number
        assert client.open(server.seal(b"answer")) == b"answer"


def test_a_replayed_reordered_or_tampered_frame_is_refused_and_closes_the_session():
    service, holder = ServiceKeys.generate(), keys.PrivateKey.generate()
    client, server = handshake(service, holder, service.signing.public_key)
    first = client.seal(b"release")
    server.open(first)
    with pytest.raises(ReplayError, match="received before"):
        server.open(first)
    with pytest.raises(ChannelError, match="closed"):
        server.open(client.seal(b"more"))
    client, server = handshake(service, holder, service.signing.public_key)
    frame = bytearray(client.seal(b"release"))
    frame[-1] ^= 1
    with pytest.raises(ChannelError, match="failed its authentication"):
        server.open(bytes(frame))
    client, server = handshake(service, holder, service.signing.public_key)
    client.seal(b"lost")
    with pytest.raises(ChannelError, match="lost or reordered"):
        server.open(client.seal(b"next"))


def test_a_frame_from_another_session_or_direction_does_not_open():
    service, holder = ServiceKeys.generate(), keys.PrivateKey.generate()
    client_one, _ = handshake(service, holder, service.signing.public_key)
    client_two, server_two = handshake(service, holder, service.signing.public_key)
    with pytest.raises(ChannelError, match="another session"):
        server_two.open(client_one.seal(b"replayed"))
    client_three, server_three = handshake(service, holder, service.signing.public_key)
    with pytest.raises(ChannelError):
        client_three.open(client_three.seal(b"reflected"))  # sent back to its sender


def test_a_session_signed_by_another_key_or_with_an_impostor_service_is_refused():
    service, holder, thief = (ServiceKeys.generate(), keys.PrivateKey.generate(),
                              keys.PrivateKey.generate())
    client = ClientHandshake(holder, service.signing.public_key)
    server = ServiceHandshake(service, client.hello, os.urandom(32))
    auth, _ = client.finish(server.reply)
    forged = auth[:32] + thief.sign(b"\0" * 32)  # the holder's name, another signature
    with pytest.raises(IdentityError, match="not signed by the key it names"):
        server.finish(forged)
    swapped = thief.public_key + auth[32:]  # the holder's signature under another name
    with pytest.raises(IdentityError):
        server.finish(swapped)
    impostor = ServiceKeys.generate()
    client = ClientHandshake(holder, service.signing.public_key)
    with pytest.raises(IdentityError, match="not the service .* this holder trusts"):
        client.finish(ServiceHandshake(impostor, client.hello, os.urandom(32)).reply)
    # An impostor that copies the real identity but not its static key: the identity checks,
    # and the keys the client derives are ones the impostor cannot compute.
    client = ClientHandshake(holder, service.signing.public_key)
    impostor_side = ServiceHandshake(impostor, client.hello, os.urandom(32))
    impostor_side.reply = service.identity().to_bytes() + impostor_side.reply[128:]
    auth, client_session = client.finish(impostor_side.reply)
    with pytest.raises(ChannelError):
        impostor_side.finish(auth).open(client_session.seal(b"PIN 111111"))


@pytest.fixture
def vault(tmp_path):
    """A service, the admin key, and three holders enrolled with device files."""
    admin = keys.PrivateKey.generate()
    service = ConfidentialityService(tmp_path / "service", admins=[admin.public_key],
                                     argon2=CHEAP)
    holders = [HolderKeys.generate() for _ in PINS]
    for n, (holder, pin) in enumerate(zip(holders, PINS)):
        service.invite(holder.signing.public_key)
        enroll_device(service, service.identity.signing_key, holder, tmp_path / f"h{n}.json",
                      pin)
    service.register_document(CHAIN, DOCUMENT, [h.identity() for h in holders], threshold=2)
    yield service, holders, admin
    service.close()


def context(index: int, document: bytes = DOCUMENT) -> FragmentContext:
    return FragmentContext(CHAIN, document, PART, index)


def release(service, holder, request_id, index, share, document=DOCUMENT):
    client = HolderClient(service, service.identity.signing_key, holder.signing)
    return client.release(request_id, context(index, document), share, holder)


def test_a_holder_unlocks_its_device_and_releases_its_fragment(vault, tmp_path):
    service, holders, _ = vault
    shares = [os.urandom(33) for _ in holders]
    sealed = [seal_fragment(share, holder.identity(), context(n + 1))
              for n, (share, holder) in enumerate(zip(shares, holders))]
    request_id = os.urandom(32)
    service.open_request(request_id, CHAIN, DOCUMENT, PART)
    for n in (0, 2):
        opened_keys = unlock_device(service, tmp_path / f"h{n}.json", PINS[n])
        assert opened_keys.to_bytes() == holders[n].to_bytes()
        share = open_fragment(sealed[n], opened_keys, context(n + 1))
        answer = release(service, opened_keys, request_id, n + 1, share)
        assert answer["threshold"] == 2
    assert service.fragments(request_id) == {1: shares[0], 3: shares[2]}
    assert set(service.releases(request_id)) == {1, 3}
    service.close_request(request_id)
    with pytest.raises(ReplayError, match="is closed"):
        service.fragments(request_id)


def test_a_wrong_pin_over_the_channel_is_counted_then_locks(vault, tmp_path):
    service, holders, admin = vault
    path = tmp_path / "h1.json"
    for tries_left in range(limits.pin_attempts_max - 1, 0, -1):
        with pytest.raises(PinError, match=f"{tries_left} tr") as wrong:
            unlock_device(service, path, "999999")
        assert wrong.value.tries_left == tries_left
    with pytest.raises(HolderLockedError, match="administrator"):
        unlock_device(service, path, "999999")
    with pytest.raises(HolderLockedError):
        unlock_device(service, path, PINS[1])
    key = holders[1].signing.public_key
    statement = unlock_statement(service.identity.signing_key, key, 1)
    signatures = {h.signing.public_key: h.signing.sign(statement) for h in (holders[0],
                                                                              holders[2])}
    service.unlock_by_holders(key, CHAIN, DOCUMENT, signatures)
    assert unlock_device(service, path, PINS[1]).to_bytes() == holders[1].to_bytes()


def test_a_replayed_release_is_refused(vault):
    service, holders, _ = vault
    first, second = os.urandom(32), os.urandom(32)
    service.open_request(first, CHAIN, DOCUMENT, PART)
    share = os.urandom(33)
    release(service, holders[0], first, 1, share)
    with pytest.raises(ReplayError, match="already"):  # the same release again
        release(service, holders[0], first, 1, share)
    service.close_request(first)
    with pytest.raises(ReplayError, match="earlier request"):
        release(service, holders[0], first, 1, share)
    # A release signed in one session and sent in another (the service's challenge differs).
    service.open_request(second, CHAIN, DOCUMENT, PART)
    old = HolderClient(service, service.identity.signing_key, holders[0].signing)
    signature = holders[0].signing.sign(release_statement(old.session.transcript, second,
                                                          context(1), share))
    new = HolderClient(service, service.identity.signing_key, holders[0].signing)
    with pytest.raises(IdentityError, match="signed in another session"):
        new.request(HolderClient.release_message(second, context(1), share, signature))
    assert service.fragments(second) == {}


def test_a_frame_replayed_to_the_service_closes_the_session(vault):
    service, holders, _ = vault
    client = HolderClient(service, service.identity.signing_key, holders[0].signing)
    frame = client.session.seal(json.dumps({"type": "unlock", "pin": PINS[0]}).encode())
    client.session.open(service.exchange(client.session_id, frame))
    with pytest.raises(ReplayError):
        service.exchange(client.session_id, frame)
    with pytest.raises(ChannelError, match="no session is open"):
        service.exchange(client.session_id, client.session.seal(b"{}"))


def test_a_stranger_another_document_or_another_index_is_refused(vault, tmp_path):
    service, holders, _ = vault
    request_id = os.urandom(32)
    service.open_request(request_id, CHAIN, DOCUMENT, PART)
    stranger = HolderKeys.generate()
    service.invite(stranger.signing.public_key)
    enroll_device(service, service.identity.signing_key, stranger, tmp_path / "s.json", "444444")
    with pytest.raises(NotHolderError, match="not one of the document's 3 holders"):
        release(service, stranger, request_id, 1, b"share")
    with pytest.raises(FragmentError, match="release the fragment of the requested part"):
        release(service, holders[0], request_id, 1, b"share", document=b"x" * 32)
    with pytest.raises(FragmentError, match="holder 1, not 2"):
        release(service, holders[0], request_id, 2, b"share")
    with pytest.raises(NotFoundError, match="not open"):
        release(service, holders[0], os.urandom(32), 1, b"share")
    unknown = keys.PrivateKey.generate()
    client = HolderClient(service, service.identity.signing_key, unknown)
    with pytest.raises(NotFoundError, match="enrol first"):
        client.unlock(PINS[0])
    assert service.fragments(request_id) == {}


def test_a_device_key_session_may_unlock_but_not_release(vault, tmp_path):
    service, holders, _ = vault
    request_id = os.urandom(32)
    service.open_request(request_id, CHAIN, DOCUMENT, PART)
    device = DeviceFile.load(tmp_path / "h0.json").device
    client = HolderClient(service, service.identity.signing_key, device)
    assert client.unlock(PINS[0])
    with pytest.raises(NotHolderError, match="may only unlock"):
        client.release(request_id, context(1), b"share", holders[0])


def test_only_an_invited_key_enrols_and_only_once(vault, tmp_path):
    service, holders, _ = vault
    uninvited = HolderKeys.generate()
    with pytest.raises(NotHolderError, match="not invited to enrol"):
        enroll_device(service, service.identity.signing_key, uninvited, tmp_path / "u.json",
                      "555555")
    service.invite(uninvited.signing.public_key)
    with pytest.raises(EncodingError, match="4 to 64 characters"):  # the invitation stays
        enroll_device(service, service.identity.signing_key, uninvited, tmp_path / "u.json",
                      "55")
    enroll_device(service, service.identity.signing_key, uninvited, tmp_path / "u.json",
                  "555555")
    service.invite(holders[0].signing.public_key)
    with pytest.raises(ConfigError, match="enrolled already"):
        enroll_device(service, service.identity.signing_key, holders[0], tmp_path / "again.json",
                      "666666")
    assert not (tmp_path / "again.json").exists()
    assert unlock_device(service, tmp_path / "h0.json", PINS[0]).to_bytes() \
        == holders[0].to_bytes()


def test_an_administrator_unlocks_through_the_service_and_strangers_cannot(vault, tmp_path):
    service, holders, admin = vault
    path = tmp_path / "h2.json"
    for _ in range(limits.pin_attempts_max):
        with pytest.raises(PinError):
            unlock_device(service, path, "999999")
    key = holders[2].signing.public_key
    stranger = HolderKeys.generate()
    with pytest.raises(NotHolderError, match="not one of the document's"):
        service.unlock_by_holders(stranger.signing.public_key, CHAIN, DOCUMENT, {})
    service.admin_unlock(key, admin.public_key,
                         admin.sign(unlock_statement(service.identity.signing_key, key, 1)))
    assert unlock_device(service, path, PINS[2]).to_bytes() == holders[2].to_bytes()


def test_a_pin_change_seals_the_device_file_under_the_new_key(vault, tmp_path):
    service, holders, _ = vault
    path = tmp_path / "h0.json"
    with pytest.raises(PinError):
        change_device_pin(service, path, "999999", "246802")
    change_device_pin(service, path, PINS[0], "246802")
    assert unlock_device(service, path, "246802").to_bytes() == holders[0].to_bytes()
    with pytest.raises(PinError):
        unlock_device(service, path, PINS[0])
