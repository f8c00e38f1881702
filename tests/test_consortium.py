"""A consortium chain of real `tsunagi node` processes: four validators over TCP agree on every
block (Tendermint), and a final block is never undone.

Method: four validator processes of one chain (weights 1 each: f = 1), each dialing the
other three; clients submit signed transfers to every validator from threads, each payer to
one node (so its sequences do not race). The test SIGKILLs one validator (the chain must go
on), then a second (it must stop: with half the weight no block can be decided, and none is),
then restarts both (they must catch up and the chain go on). Throughout, every (height, block
hash) any node or client reported final is recorded; at the end every node's chain must hold
exactly those blocks at those heights, and every transfer a client was answered final for
must be in every node's chain at its height. A Byzantine test runs one validator in the
equivocating test mode: the others keep deciding, agree, and put the evidence on chain. The
same four-validator run is repeated across two network namespaces.

Waits poll with a generous hang guard; nothing asserts on timing (the "stops" check holds
however long the test waits: no block past the one being decided at the second kill).
"""

from __future__ import annotations

import contextlib
import threading
import time

import net_helpers
import pytest
from net_helpers import PAYERS, NetNode, Payments, data_dirs, free_ports, wait_until

from tsunagi import hashing
from tsunagi.core import entries
from tsunagi.core.block import decode_block
from tsunagi.core.keyfile import save_key
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import NodeError

net_helpers.ENV["TSUNAGI_PASSPHRASE"] = "validator passphrase"
VALIDATOR_KEYS = [PrivateKey.from_bytes(bytes([0x60 + n]) * 32) for n in range(7)]
TIMEOUTS = {"timeout_propose_ms": 800, "timeout_prevote_ms": 400,
            "timeout_precommit_ms": 400, "timeout_delta_ms": 200, "block_wait_ms": 20}


def consortium_dirs(root, count: int, validators: int | None = None):
    keys = VALIDATOR_KEYS[: validators or count]
    dirs = data_dirs(root, count, validators=tuple((k.public_key, 1) for k in keys),
                     **TIMEOUTS)
    files = []
    for n, key in enumerate(keys):
        files.append(save_key(root / f"validator{n}.key", key,
                              net_helpers.ENV["TSUNAGI_PASSPHRASE"], scrypt_n=1024))
    return dirs, files


def start_validators(dirs, files, ports, hosts=None, netns=None, byzantine=()):
    hosts = hosts or ["127.0.0.1"] * len(dirs)
    nodes = []
    for n, data in enumerate(dirs):
        peers = [f"{hosts[m]}:{ports[m]}" for m in range(len(dirs)) if m != n]
        extra = ("--validator-key", str(files[n]))
        if n in byzantine:
            extra += ("--byzantine", "equivocate")
        nodes.append(NetNode(data, ports[n], peers, mine=False, extra=extra,
                             netns=netns[n] if netns else None, host=hosts[n]))
    for node in nodes:
        node.start()
    return nodes


class Load:
    """Client threads submitting signed transfers to nodes; records every final answer."""

    def __init__(self, nodes, payments: Payments) -> None:
        self.nodes, self.payments = nodes, payments
        self.final: list[tuple[bytes, int, bytes]] = []  # (txid, height, block hash)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = []

    def start(self, which) -> None:
        for n in which:
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self.threads.append((n, thread))

    def _run(self, n: int) -> None:
        payer = 1 + n  # one payer per node: its sequences never race
        node = self.nodes[n]
        while not self.stop.is_set():
            try:
                with node.client() as client:
                    while not self.stop.is_set():
                        with self.lock:
                            records, signatures = self.payments.batch(4, payer=payer)
                        answer = client.submit_batch(records, signatures)
                        if answer.height is None:
                            continue
                        txids = hashing.sha256d_records(records, 128)
                        with self.lock:
                            for txid, code in zip(txids, answer.codes):
                                if code == 0:
                                    self.final.append((txid.tobytes(), answer.height,
                                                       bytes(answer.block_hash)))
            except (NodeError, OSError, TimeoutError):
                # The node was killed (or is stopping): the transfers not answered may or
                # may not be in; sequences stay unique, so resync this payer's sequence.
                with self.lock:
                    self.payments.sequence[payer] += 1000
                time.sleep(0.2)

    def finish(self, which=None) -> None:
        self.stop.set()
        for n, thread in self.threads:
            thread.join(60)


def heights(nodes) -> list[int]:
    found = []
    for node in nodes:
        with node.client() as client:
            found.append(client.status().height)
    return found


def chain_of(node, end: int) -> list[bytes]:
    with node.client() as client:
        return [hashing.header_hash(client.block(h)[:80]) for h in range(end)]


def check_agreement(nodes, load: Load) -> None:
    """Every node holds the same blocks, including every one a client was told is final,
    and every transfer answered final is in every node's chain at its height."""
    end = min(heights(nodes)) + 1
    chains = [chain_of(node, end) for node in nodes]
    assert all(chain == chains[0] for chain in chains), "two nodes hold different blocks"
    told = {}
    for txid, height, block_hash in load.final:
        assert told.setdefault(height, block_hash) == block_hash, \
            f"clients were told two different final blocks at height {height}"
    for node in nodes:
        with node.client() as client:
            for txid, height, block_hash in load.final:
                found = client.transaction(txid)
                assert found is not None and found.height == height, \
                    f"a transfer answered final at {height} is not there on {node.data.name}"
                assert hashing.header_hash(client.block(height)[:80]) == block_hash


def stop_all(nodes) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            node.stop()


def _kill_restart_scenario(nodes, load: Load) -> None:
    grow = 3
    load.start(range(4))
    base = min(heights(nodes))
    wait_until(lambda: min(heights(nodes)) >= base + grow and len(load.final) > 0,
               "four validators deciding blocks")
    nodes[3].stop(kill=True)
    alive = nodes[:3]
    base = max(heights(alive))
    wait_until(lambda: min(heights(alive)) >= base + grow, "the chain going on with 3 of 4")
    nodes[2].stop(kill=True)
    alive = nodes[:2]
    stopped_at = max(heights(alive))
    time.sleep(3.0)  # however long this is, no block may be decided past the one in flight
    assert max(heights(alive)) <= stopped_at + 1, "two of four validators decided a block"
    nodes[2].start()
    nodes[3].start()
    load.start([2, 3])
    base = max(heights(nodes))
    wait_until(lambda: min(heights(nodes)) >= base + grow,
               lambda: f"the chain going on after the restarts: {heights(nodes)}")
    load.finish()
    wait_until(lambda: len(set(heights(nodes))) == 1 or min(heights(nodes)) > base + grow,
               "the restarted validators catching up")
    check_agreement(nodes, load)


def test_four_validators_survive_one_kill_stop_at_two_and_resume(tmp_path):
    """With a fifth node that holds no key: it follows, checking every certificate, and
    ends with the validators' chain."""
    dirs, files = consortium_dirs(tmp_path, 5, validators=4)
    ports = free_ports(5)
    nodes = start_validators(dirs[:4], files, ports[:4])
    follower = NetNode(dirs[4], ports[4], [f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"],
                       mine=False).start()
    load = Load(nodes, Payments())
    try:
        _kill_restart_scenario(nodes, load)
        wait_until(lambda: heights([follower])[0] >= min(heights(nodes)),
                   "the follower catching up")
        check_agreement(nodes + [follower], load)
    finally:
        load.finish()
        stop_all(nodes + [follower])


def test_an_equivocating_validator_is_outvoted_and_its_evidence_is_on_chain(tmp_path):
    dirs, files = consortium_dirs(tmp_path, 4)
    nodes = start_validators(dirs, files, free_ports(4), byzantine={3})
    honest = nodes[:3]
    load = Load(nodes, Payments())
    try:
        load.start(range(3))
        wait_until(lambda: min(heights(honest)) >= 12 and len(load.final) > 0,
                   lambda: f"honest validators deciding with a Byzantine one: "
                           f"{heights(honest)}")

        def evidence_on_chain():
            with honest[0].client() as client:
                for height in range(1, client.status().height + 1):
                    block = decode_block(client.block(height))
                    for entry in entries.decode_entries(bytes(block.extension)) \
                            if block.extension_length else ():
                        if isinstance(entry, entries.Evidence) \
                                and entry.key == VALIDATOR_KEYS[3].public_key:
                            return entry
            return None

        entry = wait_until(evidence_on_chain, "evidence of the equivocation on chain")
        assert entry.first.value != entry.second.value
        load.finish()
        check_agreement(honest, load)
    finally:
        load.finish()
        stop_all(nodes)


def test_four_validators_across_two_network_namespaces(tmp_path):
    from test_netns import namespaces_unavailable
    from test_network import _two_namespaces_with_control

    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    dirs, files = consortium_dirs(tmp_path, 4)
    port = free_ports(1)[0]
    with _two_namespaces_with_control() as (ns_a, ns_b, _, addresses):
        namespace = [ns_a, ns_b, ns_a, ns_b]
        ports = [port, port, port + 1, port + 1]
        nodes = []
        for n in range(4):
            # Within a namespace over its loopback, across over the a-b link.
            peers = [f"{'127.0.0.1' if namespace[m] == namespace[n] else addresses[namespace[m]][0]}"
                     f":{ports[m]}" for m in range(4) if m != n]
            nodes.append(NetNode(dirs[n], ports[n], peers, mine=False,
                                 extra=("--validator-key", str(files[n])),
                                 netns=namespace[n], host="0.0.0.0"))
        try:
            for node in nodes:
                node.start()
                node.host = addresses[node.netns][1]  # this process reaches it here
            _kill_restart_scenario(nodes, Load(nodes, Payments()))
        finally:
            stop_all(nodes)


def _certificate_keys(node, height: int, validators) -> set[bytes]:
    """The keys whose precommits make the certificate of block ``height``."""
    from tsunagi.consensus.certificate import Certificate

    with node.client() as client:
        seal = bytes(decode_block(client.block(height)).seal)
    return {validators.validators[i].key for i in Certificate.decode(seal).signers}


def _cli(*args) -> dict:
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tsunagi", *args], capture_output=True,
                          text=True, env=net_helpers.ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_validators_are_added_and_removed_by_on_chain_updates(tmp_path):
    """A fifth key joins (approved by three of four, from a stated height) and starts voting;
    then the first leaves (approved by four of five) and its precommits no longer count."""
    from tsunagi.consensus.certificate import ValidatorSet
    from tsunagi.core.address import encode_address

    dirs, files = consortium_dirs(tmp_path, 5, validators=4)
    extra_key = save_key(tmp_path / "validator4.key", VALIDATOR_KEYS[4],
                         net_helpers.ENV["TSUNAGI_PASSPHRASE"], scrypt_n=1024)
    files.append(extra_key)
    nodes = start_validators(dirs, files, free_ports(5))
    load = Load(nodes, Payments())
    try:
        # No load until the set has changed: an idle height waits for records (about 0.4 s
        # here), so the 30 heights of room below outlast a slow start of the command.
        wait_until(lambda: min(heights(nodes[:4])) >= 3, "four validators deciding")
        node = f"127.0.0.1:{nodes[0].port}"
        joined = max(heights(nodes)) + 30  # room for the validator to propose it
        answer = _cli("validators", "update", "--node", node, "--validator",
                      encode_address(VALIDATOR_KEYS[4].public_key), "--weight", "1",
                      "--effective-height", str(joined), "--approver-key", str(files[0]),
                      "--approver-key", str(files[1]), "--approver-key", str(files[2]))
        assert answer["height"] < joined
        wait_until(lambda: min(heights(nodes)) >= joined + 4, "the chain past the join")
        shown = _cli("validators", "show", "--node", node)
        assert len(shown["validators"]) == 5
        five = ValidatorSet((key.public_key, 1) for key in VALIDATOR_KEYS[:5])
        signed_by = set().union(*(_certificate_keys(nodes[1], h, five)
                                  for h in range(joined, joined + 4)))
        assert VALIDATOR_KEYS[4].public_key in signed_by, "the new validator never voted"
        left = max(heights(nodes)) + 30
        _cli("validators", "update", "--node", f"127.0.0.1:{nodes[1].port}", "--validator",
             encode_address(VALIDATOR_KEYS[0].public_key), "--weight", "0",
             "--effective-height", str(left), *[arg for n in (1, 2, 3, 4)
                                                for arg in ("--approver-key", str(files[n]))])
        load.start(range(4))
        wait_until(lambda: min(heights(nodes[1:])) >= left + 4, "the chain past the leave")
        four = ValidatorSet((key.public_key, 1) for key in VALIDATOR_KEYS[1:5])
        for height in range(left, left + 4):
            assert VALIDATOR_KEYS[0].public_key not in _certificate_keys(nodes[2], height, four)
        load.finish()
        check_agreement(nodes, load)
    finally:
        load.finish()
        stop_all(nodes)


def test_verify_checks_every_certificate_and_names_the_block_that_fails(tmp_path):
    """`tsunagi verify` on a consortium chain checks the certificates too, from headers and
    seals alone: a block stored with a forged precommit is named, with its code."""
    import subprocess
    import sys

    from tsunagi.consensus.certificate import Certificate, make_certificate
    from tsunagi.consensus.consortium import ConsortiumChain
    from tsunagi.ledger.ledger import Ledger

    keys = VALIDATOR_KEYS[:4]
    config = net_helpers.config(validators=tuple((k.public_key, 1) for k in keys))
    payments = Payments()
    with Ledger.create(tmp_path / "chain", config, threads=1) as ledger:
        chain = ConsortiumChain(ledger)
        for height in range(1, 6):
            records, signatures = payments.batch(3, payer=1)
            if height != 4:
                chain.commit_with_keys(keys[:3], records, signatures)
                continue
            staged = ledger.stage_batch(records, signatures)
            validators = chain.validators_at(height)
            good = make_certificate(chain.chain_id, height, 0, staged.block_hash,
                                    list(enumerate(keys[:3])), validators)
            forged = Certificate(good.round, good.signers,
                                 (good.signatures[0], bytes(64), good.signatures[2]))
            chain.commit_decided(forged.encode())
        chain.close()
    done = subprocess.run([sys.executable, "-m", "tsunagi", "verify", str(tmp_path / "chain")],
                          capture_output=True, text=True, env=net_helpers.ENV, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "certificates: block 4 fails: bad_signature" in done.stdout


def _lie(node: NetNode, genesis_hash: bytes, message, listen_port: int) -> list:
    """Connects to ``node`` as a peer, sends ``message`` after the handshake, and returns the
    error codes the node sent before it closed the connection (or [] if it did not)."""
    import socket
    import time

    from tsunagi.node import protocol as p

    errors = []
    deadline = time.monotonic() + 300  # a hang guard for the whole exchange, not a timing test
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        sock.sendall(p.encode(p.PeerHello((1,), genesis_hash, 0, 0, listen_port,
                                          777 + listen_port), 0, 1))
        reader = p.FrameReader((1,), 1 << 28)
        sent = False
        sock.settimeout(120)  # a hang guard: the node closes the connection long before
        while time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                break
            if not data:
                break
            reader.feed(data)
            while (frame := reader.next_frame()) is not None:
                found = p.decode(frame)
                if isinstance(found, p.PeerHello) and not sent:
                    sock.sendall(p.encode(message, 0, 1))
                    sent = True
                elif isinstance(found, p.Error):
                    errors.append(found.code)
    return errors


def test_a_peer_that_forges_votes_or_proposals_is_banned_and_the_chain_goes_on(tmp_path):
    from tsunagi.consensus.tendermint import proposer_of
    from tsunagi.node import protocol as p

    dirs, files = consortium_dirs(tmp_path, 4)
    nodes = start_validators(dirs, files, free_ports(4))
    load = Load(nodes, Payments())
    try:
        load.start(range(4))
        wait_until(lambda: min(heights(nodes)) >= 3, "four validators deciding")
        with nodes[0].client() as client:
            genesis = hashing.header_hash(client.block(0)[:80])
            block = client.block(1)
        # A later height: a message of a later height waits for it, and is checked then with
        # the peer it came from (one of the height being decided may arrive after it ends).
        # Near enough that the node reaches it soon, whatever the load lets the chain do.
        for port in (41001, 41002):
            height = max(heights(nodes)) + 4
            if port == 41001:
                message = p.VoteMessage(2, height, 0, 1, bytes(32), bytes(64))  # not 1's
            else:
                not_proposer = next(n for n in range(4) if n != proposer_of([1] * 4, height, 0))
                message = p.ProposalMessage(height, 0, -1, not_proposer, bytes(64), block)
            assert p.ErrorCode.misbehaving in _lie(nodes[0], genesis, message, port)
        base = max(heights(nodes))
        wait_until(lambda: min(heights(nodes)) >= base + 3, "the chain going on")
        load.finish()
        check_agreement(nodes, load)
    finally:
        load.finish()
        stop_all(nodes)


assert PAYERS >= 5
