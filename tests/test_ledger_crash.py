"""A ledger killed with SIGKILL at random moments keeps every acknowledged transfer.

Method: a child process commits batches of signed transfers and prints each batch's txids
before submitting and an acknowledgment after the ledger answers. The test kills it with SIGKILL
at a random moment, many times, reopening the directory each time: every acknowledged transfer
must be there with its code, each batch in flight must be there whole or not at all (and only
after every batch before it), money must be conserved, and the chain must verify. Half the
rounds keep two batches in flight (begin_batch, then wait for the one before), as a node does;
half write their blocks by O_DIRECT with the records sent ahead of the block, as large batches
are.
"""

import random
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_until_killed

from tsunagi.core import records
from tsunagi.core.config import ChainConfig
from tsunagi.core.keyfile import save_key
from tsunagi.core.keys import PrivateKey
from tsunagi.ledger import Ledger

KILLS = 22
ACCOUNTS = 8
BATCH = 40
CHILD = Path(__file__).parent / "helpers" / "crash_writer.py"


def _run_until_killed(directory: Path, key_file: Path, rng: random.Random,
                      in_flight: int, direct_min: int) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(key_file), str(ACCOUNTS), str(BATCH),
         str(in_flight), str(direct_min)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = child.stdout.readline().strip()
    assert first == "READY", child.stderr.read()
    return read_until_killed(child, rng.uniform(0.05, 0.6))


def _check_round(directory: Path, lines: list[str]) -> tuple[int, int]:
    acknowledged, in_flight = [], {}
    for line in lines:
        word, _, payload = line.partition(" ")
        fields = payload.split()
        if word == "PENDING" and len(fields) == 2:
            in_flight[int(fields[0])] = bytes.fromhex(fields[1])
        elif word == "ACK" and len(fields) == 3:
            acknowledged.append((in_flight.pop(int(fields[0])), bytes.fromhex(fields[2])))
    with Ledger.open(directory) as ledger:
        for txids, codes in acknowledged:
            for i, code in enumerate(codes):
                info = ledger.transaction(txids[32 * i: 32 * i + 32])
                assert info is not None and int(info.code) == code
        present = []
        for number in sorted(in_flight):
            txids = in_flight[number]
            found = [ledger.transaction(txids[i:i + 32]) is not None
                     for i in range(0, len(txids), 32)]
            assert all(found) or not any(found), "a batch was half committed"
            present.append(all(found))
        assert present == sorted(present, reverse=True), "a later batch outlived an earlier one"
        state = ledger.state
        assert state.balance_total() + state.open_hold_total() == state.supply
        report = ledger.verify()
        assert report.ok, str(report)
        return len(acknowledged), ledger.height


@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path):
    key = PrivateKey.generate()
    key_file = save_key(tmp_path / "key.json", key, "crash", scrypt_n=2**10)
    config = ChainConfig(name="crash", chain_id=5, asset_code="TSU",
                         allocations=((key.public_key, ACCOUNTS * 10**9),))
    directory = tmp_path / "chain"
    with Ledger.create(directory, config) as ledger:  # one key owns accounts 1..ACCOUNTS
        opens = [records.open_account(5, key.public_key, sequence=100 + n)
                 for n in range(1, ACCOUNTS)]
        funds = [records.transfer(5, n, 1, n + 1, 10**9) for n in range(1, ACCOUNTS)]
        batch = b"".join(opens + funds)
        answer = ledger.submit_batch(batch, b"".join(key.sign_record(r) for r in opens + funds))
        assert not answer.codes.any()
    rng = random.Random(20261121)
    acknowledged_total = 0
    for round_ in range(KILLS):
        # Rounds 2 and 3 of every 4: blocks over 2 KiB (all of them) by O_DIRECT, begun ahead.
        lines = _run_until_killed(directory, key_file, rng, in_flight=1 + round_ % 2,
                                  direct_min=2048 if round_ % 4 >= 2 else 0)
        acknowledged, height = _check_round(directory, lines)
        acknowledged_total += acknowledged
    assert acknowledged_total > KILLS  # the kills really landed between commits
    with Ledger.open(directory) as ledger:
        assert ledger.state.supply == ACCOUNTS * 10**9
        assert ledger.state.balance_total() == ACCOUNTS * 10**9
