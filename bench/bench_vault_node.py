"""Documents stored and opened a second through a real node, and what dominates.

Run: ``python bench/bench_vault_node.py [--documents N] [--cheap]``, or under pytest-benchmark
``python -m pytest bench/bench_vault_node.py --benchmark-only``. The node is
``tsunagi node --vault --http 127.0.0.1:0 --tls-dev`` in its own process, on a chain made here
whose holders (person, guardian, lawyer; two of whom open a part) are enrolled beforehand at
the service's default Argon2id costs (OWASP's), or at test costs with ``--cheap``. Each
document is the will example: an open part and a 200-byte secret part.

- Storing: each document is sealed here as Vault.create_document seals it (a fresh AES-256-GCM
  key, split 2 of 3, three HPKE-sealed fragments) and sent as a create_document call record
  over the binary protocol (Client.submit_calls): one document a submit (a block and its fsync
  each), and ``--batch`` documents a submit (one block), the fast path.
- Opening goes through the vault's HTTPS routes as the holder's page does (static/vault.js):
  the requester's request_open (prepared by the node, signed here, submitted); for each of two
  holders, the PIN unlock through the service (Argon2id), the approve call, the sealed fragment
  fetched, opened and released over the authenticated channel, and the service asked to open
  the part; then the requester fetches the delivery and opens it with its reply key. The
  requester's own keys are unlocked once before the clock starts (one Argon2id).

Every figure is wall-clock on this machine with the node beside the benchmark (both share its
cores); medians are of the per-document (or per-batch) times. ``--py-spy FILE`` records the
node's process with py-spy while documents are opened (an SVG flame graph, or collapsed
stacks when FILE ends in .txt).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tsunagi.contracts.chain import ChainContracts
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger
from tsunagi.node.client import Client
from tsunagi.node.http.vault_client import VaultHttpClient, document_call
from tsunagi.node.http.vault_node import VAULT_CONTRACT, prepare_vault, service_directory
from tsunagi.privacy import vault_contract
from tsunagi.privacy.holders import HolderKeys
from tsunagi.privacy.pins import Argon2Params
from tsunagi.privacy.service import ConfidentialityService, enroll_device
from tsunagi.privacy.vault import Part

# The holders in the document's order (index 1, 2, 3) and accounts 1, 2, 3; the service's is 4.
NAMES = ("person", "guardian", "lawyer")
SERVICE_ACCOUNT = len(NAMES) + 1
CHAIN_ID = 15
PIN = "482916"
SECRET_BYTES = 200
PART_ID = 2
CHEAP = Argon2Params(memory_kib=8, iterations=1, lanes=1)
NODE_START_S = 120  # a node that has not printed its ready line by then is not starting
NODE_STOP_S = 60


@dataclass
class Made:
    """A vault chain in ``data`` with the holders enrolled: their keys (the creator's and the
    requester's are used here directly), their device files, and each one's account."""

    data: Path
    people: dict[str, HolderKeys]
    devices: dict[str, Path]
    account: dict[str, int] = field(default_factory=lambda: {
        name: number for number, name in enumerate(NAMES, start=1)})

    def holders(self):
        return [(self.people[name].identity(), self.account[name]) for name in NAMES]


def build(folder: Path, argon2: Argon2Params) -> Made:
    """The chain (its config runs the vault contract), the service account's key in the data
    directory, and the three holders enrolled with the service under PIN at ``argon2``."""
    people = {name: HolderKeys.generate() for name in NAMES}
    service_key = PrivateKey.generate()
    config = ChainConfig(
        name="vault-node-bench", chain_id=CHAIN_ID, asset_code="TSU",
        allocations=tuple((people[name].signing.public_key, 10) for name in NAMES)
        + ((service_key.public_key, 10),),
        contracts=(("vault", hashlib.sha256(inspect.getsource(vault_contract).encode())
                    .digest()),))
    data = folder / "chain"
    Ledger.create(data, config, threads=1,
                  calls=ChainContracts(config, dict([VAULT_CONTRACT]))).close()
    prepare_vault(data, service_key)
    confidential = ConfidentialityService(service_directory(data), argon2=argon2)
    devices = {name: folder / f"{name}.json" for name in NAMES}
    try:  # enrolment: the holder's client and the service in one process, before the node
        for name in NAMES:
            confidential.invite(people[name].signing.public_key)
            enroll_device(confidential, confidential.identity.signing_key, people[name],
                          devices[name], PIN)
    finally:
        confidential.close()
    return Made(data, people, devices)


class NodeProcess:
    """``tsunagi node --vault`` on 127.0.0.1 (ports chosen by the system) serving ``data``
    over HTTPS with its development certificate; its log goes to ``data``/../node.log."""

    def __init__(self, data: Path) -> None:
        self.log = open(data.parent / "node.log", "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tsunagi", "node", "--data", str(data), "--listen",
             "127.0.0.1:0", "--http", "127.0.0.1:0", "--tls-dev", "--vault"],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = _line_within(self.process.stdout, NODE_START_S)
        if not line:
            self.stop()
            raise RuntimeError(f"the node did not start: see {self.log.name}")
        self.ready = json.loads(line)
        # Whatever else it prints is drained, so a full pipe never stalls it.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        host, port = self.ready["node"].rsplit(":", 1)
        self.host, self.port = host, int(port)

    def https(self) -> VaultHttpClient:
        return VaultHttpClient(self.ready["http"], self.ready["tls_cert"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(NODE_STOP_S)
            finally:
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait()
        self.log.close()


def _line_within(stream, timeout_s: float) -> str:
    """The first line of ``stream``, or "" when none came within ``timeout_s``."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return found[0] if found else ""


def secret_of(number: int) -> bytes:
    return f"Bequest {number}: the piano to the music school. ".encode().ljust(
        SECRET_BYTES, b".")


# --- storing: create_document calls over the binary protocol -----------------------------------


def store(client: Client, made: Made, first: int, count: int, batch: int):
    """Stores documents ``first`` .. ``first + count - 1`` in submits of ``batch``; returns
    their ids, each submit's seconds and the seconds spent sealing on this side."""
    creator = made.people["person"]
    account = made.account["person"]
    holders = made.holders()
    sequence = client.account(account).sequence
    ids, submit_s, seal_s = [], [], 0.0
    for start in range(first, first + count, batch):
        records, signatures, payloads = [], [], []
        started = time.perf_counter()
        for number in range(start, min(start + batch, first + count)):
            sequence += 1
            document_id, record, payload = document_call(
                account, sequence, CHAIN_ID, 1, f"Will {number}", holders, 2,
                [Part(1, "Preamble", "The last will."),
                 Part(PART_ID, "Bequests", secret_of(number), secret=True)],
                service_account=SERVICE_ACCOUNT)
            ids.append(document_id)
            records.append(record)
            signatures.append(creator.signing.sign_record(record))
            payloads.append(payload)
        sealed = time.perf_counter()
        answer = client.submit_calls(b"".join(records), b"".join(signatures), payloads)
        done = time.perf_counter()
        refused = [Result(int(code)).name for code in answer.codes if code != Result.ok]
        if refused:
            raise AssertionError(f"the node refused create_document calls: {refused[:5]}")
        seal_s += sealed - started
        submit_s.append(done - started)
    return ids, submit_s, seal_s


# --- opening: the holder's page's steps over HTTPS -------------------------------------------


PHASES = ("request", "unlock", "approve", "release", "receive")


def open_one(http: VaultHttpClient, made: Made, requester, document_id: bytes,
             phases: dict[str, list[float]]) -> bytes:
    """Opens the secret part of ``document_id`` through the node's routes; returns it. Adds
    the seconds of each phase to ``phases``."""
    clock = time.perf_counter
    started = clock()
    reply = X25519PrivateKey.generate()
    request_id = http.request_open(requester.signing, document_id, PART_ID, "bench", reply)
    phases["request"].append(clock() - started)
    delivered = False
    for name in ("person", "lawyer"):
        started = clock()
        holder = http.unlock(made.devices[name], PIN, request_id)
        unlocked = clock()
        http.step(holder.signing, "approve", {"request_id": request_id.hex()})
        approved = clock()
        # The holder's page knows its index from when it loaded (the document's holder list).
        delivered = http.release(holder, request_id, document_id, PART_ID,
                                 NAMES.index(name) + 1)
        phases["unlock"].append(unlocked - started)
        phases["approve"].append(approved - unlocked)
        phases["release"].append(clock() - approved)
    if not delivered:
        raise AssertionError("two approvals and releases did not open the part")
    started = clock()
    opened = http.receive(request_id, reply)
    phases["receive"].append(clock() - started)
    return opened


def argon2_alone(argon2: Argon2Params, repeats: int = 5) -> list[float]:
    """Seconds of each of ``repeats`` Argon2id derivations in this process, for comparison
    with an unlock through the node."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        argon2.derive(PIN.encode(), os.urandom(16))
        seconds.append(time.perf_counter() - started)
    return seconds


def read_document(http: VaultHttpClient, document_id: bytes, made: Made,
                  repeats: int = 5) -> list[float]:
    """Seconds of each of ``repeats`` reads of the document's JSON, what its page is made
    from (a page load, and every open page at each change)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        index = http.holder_index(document_id, made.people["lawyer"].signing.public_key)
        seconds.append(time.perf_counter() - started)
        assert index == NAMES.index("lawyer") + 1
    return seconds


def round_trips(http: VaultHttpClient, document_id: bytes, repeats: int = 50) -> list[float]:
    """Seconds of each of ``repeats`` fetches of a sealed fragment: an HTTPS round trip
    through the node's routes and the vault thread with the least work behind it."""
    path = f"/vault/api/documents/{document_id.hex()}/parts/{PART_ID}/fragments/1"
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        http.get(path)
        seconds.append(time.perf_counter() - started)
    return seconds


@contextmanager
def py_spy(pid: int, output: str | None):
    """py-spy records ``pid`` inside the block when ``output`` names its SVG."""
    if output is None:
        yield
        return
    form = "raw" if output.endswith(".txt") else "flamegraph"  # raw: collapsed stacks
    recorder = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--output", output,
                                 "--format", form, "--rate", "100", "--threads"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # py-spy attaches before the first document (not a test: a tool)
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(60)


# --- the table ------------------------------------------------------------------------------


def median_ms(seconds) -> float:
    return 1000 * statistics.median(seconds)


def run(documents: int, batched: int, batch: int, argon2: Argon2Params,
        spy: str | None = None, spy_phase: str = "open", out=sys.stdout) -> dict:
    """The whole benchmark on a fresh chain and node; prints the table, returns the figures."""
    with tempfile.TemporaryDirectory() as name:
        made = build(Path(name), argon2)
        node = NodeProcess(made.data)
        try:
            with Client(node.host, node.port) as client, \
                    py_spy(node.process.pid, spy if spy_phase == "store" else None):
                ids, single_s, single_seal_s = store(client, made, 0, documents, 1)
                _, batch_s, batch_seal_s = store(client, made, documents, batched, batch)
            with node.https() as http:
                http.begin(ids[0])
                requester = http.unlock(made.devices["guardian"], PIN)
                phases = {phase: [] for phase in PHASES}
                each_s, parts = [], []
                with py_spy(node.process.pid, spy if spy_phase == "open" else None):
                    for number, document_id in enumerate(ids):
                        started = time.perf_counter()
                        opened = open_one(http, made, requester, document_id, phases)
                        each_s.append(time.perf_counter() - started)
                        parts.append(opened)
                        if opened != secret_of(number):
                            raise AssertionError(f"document {number} opened to other bytes")
                page_s = read_document(http, ids[0], made)
                trip_s = round_trips(http, ids[0])
        finally:
            node.stop()
    figures = {"single_s": single_s, "single_seal_s": single_seal_s, "batch_s": batch_s,
               "batch_seal_s": batch_seal_s, "batch": batch, "batched": batched,
               "open_s": each_s, "phases": phases, "page_s": page_s, "opened": parts,
               "trip_s": trip_s,
               "documents_on_chain": documents + batched, "argon2_s": argon2_alone(argon2)}
    print_table(figures, argon2, out)
    return figures


def print_table(figures: dict, argon2: Argon2Params, out) -> None:
    single, batches, opens = figures["single_s"], figures["batch_s"], figures["open_s"]
    batched, batch = figures["batched"], figures["batch"]
    write = lambda text: print(text, file=out)  # noqa: E731
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    write(f"vault through the node: {os.cpu_count()} cores, load average {load} at the end; "
          f"Argon2id {argon2.memory_kib} KiB x {argon2.iterations} iterations x "
          f"{argon2.lanes} lanes")
    write(f"{'':34} {'per second':>11} {'median ms':>10}  what")
    write(f"{'stored, one a submit':34} {len(single) / sum(single):11.1f} "
          f"{median_ms(single):10.2f}  {len(single)} documents: seal here "
          f"({1000 * figures['single_seal_s'] / len(single):.2f} ms each), submit_calls, a "
          "block")
    write(f"{f'stored, {batch} a submit':34} {batched / sum(batches):11.1f} "
          f"{median_ms(batches) / batch:10.2f}  {batched} documents in {len(batches)} "
          f"blocks: seal ({1000 * figures['batch_seal_s'] / batched:.2f} ms each), "
          f"median block {median_ms(batches):.0f} ms")
    node_s = (sum(batches) - figures["batch_seal_s"]) / batched
    write(f"{'  of which the node':34} {1 / node_s:11.1f} {1000 * node_s:10.2f}  "
          "submit_calls to its answer: sigverify, the contract, the block, fsync")
    write(f"{'opened over HTTPS':34} {len(opens) / sum(opens):11.2f} {median_ms(opens):10.1f}  "
          f"{len(opens)} documents: request, 2 x (unlock, approve, release), receive")
    for phase, seconds in figures["phases"].items():
        count = len(seconds) // len(opens)
        write(f"{'  ' + phase + (' (x2)' if count == 2 else ''):34} {'':11} "
              f"{median_ms(seconds):10.1f}  {_PHASE_TEXT[phase]}")
    write(f"{'Argon2id alone, apart':34} {'':11} {median_ms(figures['argon2_s']):10.1f}  "
          "one derivation in this process, at the service's costs")
    write(f"{'an HTTPS round trip, apart':34} {'':11} {median_ms(figures['trip_s']):10.1f}  "
          "GET a sealed fragment (an opening makes 23 requests; the 3 submits wait for "
          "a block)")
    write(f"{'a document page read, apart':34} {'':11} {median_ms(figures['page_s']):10.1f}  "
          f"GET /vault/api/documents/ID with {figures['documents_on_chain']} documents on "
          "the chain (its trail: every vault call)")


_PHASE_TEXT = {
    "request": "request_open prepared, signed, submitted: a block",
    "unlock": "PIN over the channel: 3 round trips, the service's Argon2id",
    "approve": "approve prepared, signed, submitted: a block",
    "release": "fragment fetched, opened, released over a new session; open-part",
    "receive": "delivery fetched, opened with the reply key"}


# --- pytest-benchmark ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(request, tmp_path_factory):
    """A node on a fresh vault chain, holders enrolled at the costs named by the test's
    parameter ("owasp": the service's default; "cheap": test costs)."""
    argon2 = CHEAP if request.param == "cheap" else Argon2Params()
    made = build(tmp_path_factory.mktemp(f"vault-node-{request.param}"), argon2)
    node = NodeProcess(made.data)
    client = Client(node.host, node.port)
    http = node.https()
    state = {"made": made, "node": node, "client": client, "http": http, "next": 0,
             "costs": request.param}
    yield state
    http.close()
    client.close()
    node.stop()


def _store(state, count: int, batch: int) -> list[bytes]:
    ids, _, _ = store(state["client"], state["made"], state["next"], count, batch)
    state["next"] += count
    return ids


# Storing runs no Argon2id: one node serves both store cases; opening runs at both costs.
@pytest.mark.parametrize("served", ["cheap"], indirect=True)
def test_store_one_a_submit(benchmark, served):
    benchmark.group = "vault node store"
    ids = benchmark.pedantic(_store, (served, 1, 1), rounds=20, iterations=1)
    assert len(ids) == 1


@pytest.mark.parametrize("served", ["cheap"], indirect=True)
def test_store_100_a_submit(benchmark, served):
    benchmark.group = "vault node store"
    ids = benchmark.pedantic(_store, (served, 100, 100), rounds=5, iterations=1)
    benchmark.extra_info["documents_per_round"] = 100
    assert len(ids) == 100


@pytest.mark.parametrize("served", ["owasp", "cheap"], indirect=True)
def test_open_over_https(benchmark, served):
    benchmark.group = f"vault node open ({served['costs']})"
    made, http = served["made"], served["http"]
    first = served["next"]
    ids = _store(served, 6, 6)  # one warm-up round and five timed ones
    http.begin(ids[0])
    requester = http.unlock(made.devices["guardian"], PIN)
    pending = iter(enumerate(ids, start=first))
    phases = {phase: [] for phase in PHASES}

    def open_next() -> bool:
        number, document_id = next(pending)
        return open_one(http, made, requester, document_id, phases) == secret_of(number)

    assert benchmark.pedantic(open_next, rounds=5, iterations=1, warmup_rounds=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20,
                        help="documents stored one a submit, then opened (default 20)")
    parser.add_argument("--batched", type=int, default=1000,
                        help="documents stored --batch a submit (default 1000)")
    parser.add_argument("--batch", type=int, default=100, help="documents a submit (100)")
    parser.add_argument("--cheap", action="store_true", help="Argon2id at test costs")
    parser.add_argument("--py-spy", metavar="SVG", help="record the node with py-spy")
    parser.add_argument("--py-spy-phase", choices=("open", "store"), default="open",
                        help="while documents are opened (default) or stored")
    options = parser.parse_args()
    if options.documents < 1 or options.batched < options.batch or options.batch < 1:
        parser.error("--documents and --batch are at least 1, --batched at least --batch")
    run(options.documents, options.batched, options.batch,
        CHEAP if options.cheap else Argon2Params(), options.py_spy, options.py_spy_phase)


if __name__ == "__main__":
    main()
