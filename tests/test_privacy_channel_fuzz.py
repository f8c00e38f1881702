"""Malformed input to the channel gets an error that says what to do, never a crash: random
bytes in every handshake step and frame, and random JSON messages inside a valid session.

Method: hypothesis draws the bytes and the messages (objects built from the protocol's own
field names with values of every JSON type); the only outcomes allowed are a refusal answered
inside the session, or ChannelError / IdentityError for what breaks the channel itself.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.core import keys
from tsunagi.errors import ChannelError, IdentityError
from tsunagi.privacy.channel import ClientHandshake, ServiceHandshake, ServiceKeys
from tsunagi.privacy.holders import HolderKeys
from tsunagi.privacy.pins import Argon2Params
from tsunagi.privacy.service import ANSWERED, ConfidentialityService, HolderClient, enroll_device

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
SERVICE_KEYS = ServiceKeys.generate()
FIELDS = ["type", "pin", "new_pin", "identity", "device_key", "request_id", "chain_id",
          "document_id", "part_id", "holder_index", "fragment", "signature"]
TYPES = st.sampled_from(["enroll", "unlock", "change_pin", "release", "other"])
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=80)
                      | st.binary(max_size=64).map(bytes.hex),
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
MESSAGES = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8).flatmap(
    lambda message: TYPES.map(lambda kind: {**message, "type": kind}))


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_in_any_handshake_step_are_refused(data):
    if len(data) == 33 and data[0] == 1:  # a well-formed hello: any 32 bytes are a key,
        try:                                # unless a low-order point, which is refused
            ServiceHandshake(SERVICE_KEYS, data, os.urandom(32))
        except ChannelError as refused:
            assert "not usable" in str(refused)
    else:
        with pytest.raises(ChannelError, match="client hello"):
            ServiceHandshake(SERVICE_KEYS, data, os.urandom(32))
    client = ClientHandshake(keys.PrivateKey.generate(), SERVICE_KEYS.signing.public_key)
    server = ServiceHandshake(SERVICE_KEYS, client.hello, os.urandom(32))
    with pytest.raises((ChannelError, IdentityError)):
        client.finish(data)
    with pytest.raises((ChannelError, IdentityError)):
        server.finish(data)
    auth, client_session = client.finish(server.reply)
    with pytest.raises(ChannelError):
        server.finish(auth).open(data)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    opened = ConfidentialityService(directory / "service",
                                    argon2=Argon2Params(memory_kib=8, iterations=1, lanes=1))
    holder = HolderKeys.generate()
    opened.invite(holder.signing.public_key)
    enroll_device(opened, opened.identity.signing_key, holder, directory / "h.json", "123456")
    yield opened, holder
    opened.close()


@SETTINGS
@given(MESSAGES)
def test_any_message_in_a_session_is_answered_or_refused(service, message):
    opened, holder = service
    client = HolderClient(opened, opened.identity.signing_key, holder.signing)
    try:
        answer = client.request(message)
    except tuple(ANSWERED.values()) as refused:
        assert str(refused)  # every refusal says what was wrong
        return
    assert answer["ok"] is True


@SETTINGS
@given(st.binary(max_size=200) | st.just(b"[" * 100_000) | st.just(b"[1, 2]"))
def test_a_payload_that_is_no_json_object_breaks_only_its_session(service, payload):
    opened, holder = service
    client = HolderClient(opened, opened.identity.signing_key, holder.signing)
    frame = client.session.seal(payload)
    try:
        json_object = isinstance(json.loads(payload), dict)
    except (ValueError, RecursionError):
        json_object = False
    if json_object:
        client.session.open(opened.exchange(client.session_id, frame))
        return
    with pytest.raises(ChannelError, match="JSON"):
        opened.exchange(client.session_id, frame)
