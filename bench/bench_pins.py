"""Benchmarks of the vault's key handling: what one PIN check costs the service (and so each
offline guess whoever copies the store must pay), a channel handshake, and a fragment sealed
to a holder and opened.

Run ``python -m pytest bench/bench_pins.py --benchmark-only``. The PIN case uses the default
Argon2id costs (OWASP's 19 MiB, 2 passes, 1 lane) beside the cheap ones the tests use, so the
ratio shows what the default buys; each run's answer is checked.
"""

from __future__ import annotations

import os

import pytest

from tsunagi.core import keys
from tsunagi.privacy.channel import ClientHandshake, ServiceHandshake, ServiceKeys
from tsunagi.privacy.holders import FragmentContext, HolderKeys, open_fragment, seal_fragment
from tsunagi.privacy.pins import Argon2Params, PinStore

COSTS = {"owasp-default": Argon2Params(), "test-cheap": Argon2Params(memory_kib=8,
                                                                      iterations=1, lanes=1)}


@pytest.mark.benchmark(group="pin-unlock")
@pytest.mark.parametrize("costs", sorted(COSTS))
def test_unlock_with_the_right_pin(benchmark, tmp_path, costs):
    service = keys.PrivateKey.generate()
    with PinStore(tmp_path / "pins", service.public_key, argon2=COSTS[costs]) as store:
        holder = HolderKeys.generate()
        key = store.enroll(holder.identity(), keys.PrivateKey.generate().public_key, "482916")
        # Each unlock counts, checks and resets: two fsynced writes and one Argon2id.
        assert benchmark(store.unlock, holder.signing.public_key, "482916") == key


@pytest.mark.benchmark(group="pin-guess")
@pytest.mark.parametrize("costs", sorted(COSTS))
def test_one_offline_guess(benchmark, costs):
    """What a copy of the store charges an attacker per PIN guess: one Argon2id."""
    salt = os.urandom(16)
    assert len(benchmark(COSTS[costs].derive, b"482916", salt)) == 32


@pytest.mark.benchmark(group="channel")
def test_handshake_and_one_message(benchmark):
    service, holder = ServiceKeys.generate(), keys.PrivateKey.generate()

    def session():
        client = ClientHandshake(holder, service.signing.public_key)
        server = ServiceHandshake(service, client.hello, os.urandom(32))
        auth, client_session = client.finish(server.reply)
        return server.finish(auth).open(client_session.seal(b"unlock"))

    assert benchmark(session) == b"unlock"


@pytest.mark.benchmark(group="fragment")
def test_seal_and_open_a_fragment(benchmark):
    holder = HolderKeys.generate()
    identity, context = holder.identity(), FragmentContext(1, b"d" * 32, 0, 1)
    share = os.urandom(33)
    assert benchmark(lambda: open_fragment(seal_fragment(share, identity, context), holder,
                                           context)) == share
