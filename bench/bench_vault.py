"""Documents stored and opened a second through the ledger, and what dominates.

Run: ``python bench/bench_vault.py [--documents N]``. Each document is the will example: an open
part and a secret part, 3 holders, k = 2. Storing is one create call (encrypt, split, seal three
HPKE fragments, one block with its fsync). Opening is a request, two approvals (each unlocks
the holder's device with its PIN through the service's Argon2id, signs a call, opens its HPKE
fragment and releases it over the channel) and the service's recombine, decrypt and seal: five
blocks with their fsyncs. Argon2id runs at the service's default (OWASP) costs unless
``--cheap``. The figures printed are wall-clock over N documents on this machine.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import inspect
import pstats
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tsunagi.contracts.chain import ChainContracts
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger.ledger import Ledger
from tsunagi.privacy import vault_contract
from tsunagi.privacy.holders import HolderKeys
from tsunagi.privacy.pins import Argon2Params
from tsunagi.privacy.service import ConfidentialityService, enroll_device
from tsunagi.privacy.vault import Part, Vault, VaultService

NAMES = ("person", "guardian", "lawyer")
PIN = "482916"


def build(directory: Path, argon2: Argon2Params):
    people = {name: HolderKeys.generate() for name in NAMES}
    service_signing = PrivateKey.generate()
    config = ChainConfig(
        name="vault-bench", chain_id=15, asset_code="TSU",
        allocations=tuple((people[n].signing.public_key, 10) for n in NAMES)
        + ((service_signing.public_key, 10),),
        contracts=(("vault", hashlib.sha256(inspect.getsource(vault_contract).encode())
                    .digest()),))
    contracts = ChainContracts(config, {"vault": "tsunagi.privacy.vault_contract:VaultContract"})
    ledger = Ledger.create(directory / "chain", config, threads=1, calls=contracts)
    confidential = ConfidentialityService(directory / "service", argon2=argon2)
    service = VaultService(ledger, contracts, confidential, account=len(NAMES) + 1,
                           signing=service_signing)
    vault = Vault(ledger, contracts, service)
    devices = {}
    for name in NAMES:
        confidential.invite(people[name].signing.public_key)
        devices[name] = directory / f"{name}.json"
        enroll_device(confidential, confidential.identity.signing_key, people[name],
                      devices[name], PIN)
    return ledger, confidential, vault, people, devices


def run(count: int, argon2: Argon2Params) -> None:
    with tempfile.TemporaryDirectory() as name:
        ledger, confidential, vault, people, devices = build(Path(name), argon2)
        holders = [(people[n].identity(), n_ + 1) for n_, n in enumerate(NAMES)]
        started = time.perf_counter()
        documents = [vault.create_document(
            people["person"].signing, 1, f"Will {i}", holders, 2,
            [Part(1, "Preamble", "The last will."), Part(2, "Bequests", b"x" * 200, True)])
            for i in range(count)]
        stored_s = time.perf_counter() - started
        started = time.perf_counter()
        for document_id in documents:
            reply = X25519PrivateKey.generate()
            request_id = vault.request_open(people["guardian"].signing, 2, document_id, 2,
                                            "bench", reply.public_key().public_bytes_raw())
            vault.approve(devices["person"], PIN, 1, request_id)
            vault.approve(devices["lawyer"], PIN, 3, request_id)
            assert vault.receive(request_id, reply) == b"x" * 200
        opened_s = time.perf_counter() - started
        print(f"documents stored: {count / stored_s:8.1f} /s  ({1000 * stored_s / count:.1f} ms "
              "each, one block)")
        print(f"documents opened: {count / opened_s:8.1f} /s  ({1000 * opened_s / count:.1f} ms "
              "each: request + 2 approvals, 2 Argon2id unlocks, 3 blocks with fsync)")
        ledger.close()
        confidential.close()


def profile(count: int, argon2: Argon2Params) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(run, count, argon2)
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=50)
    parser.add_argument("--cheap", action="store_true", help="Argon2id at test costs")
    parser.add_argument("--profile", action="store_true", help="print where the time goes")
    options = parser.parse_args()
    argon2 = Argon2Params(memory_kib=8, iterations=1, lanes=1) if options.cheap \
        else Argon2Params()
    (profile if options.profile else run)(options.documents, argon2)


if __name__ == "__main__":
    main()
