"""The command-line tour proposed for the README runs as written and prints what it says.

Method: the tour is a shell script; it runs with bash -e in an empty folder, with `tsunagi` on
PATH, a real node started by the script itself on a free port (it waits for the node's ready
line, never for a time). The numbers its comments promise are checked in what it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TOUR = """\
export TSUNAGI_PASSPHRASE=correct-horse        # or leave it unset and be asked
ALICE=$(tsunagi keygen alice.key --print address)   # an encrypted key file; its address
BOB=$(tsunagi keygen bob.key --print address)
tsunagi init chain --name town --issuer $ALICE --alloc $ALICE=100.00
#   account 1: alice's as issuer (may mint and burn); account 2: alice's 100.00
tsunagi open-account chain --key bob.key --print account      # 3
tsunagi send chain --key alice.key --from 2 --to $BOB --amount 12.50
tsunagi mint chain --key alice.key --from 1 --to 3 --amount 5
tsunagi balance chain $BOB --print balance                    # 17.50
HOLD=$(tsunagi hold chain --key alice.key --from 2 --to 3 --amount 10 --expires-in 1h \\
       --print hold)                                          # PAYER:SEQUENCE
tsunagi balance chain 2                      # balance 77.50, held 10.00
tsunagi post chain --key bob.key --hold $HOLD --amount 4      # 4.00 to bob, 6.00 back
tsunagi verify chain                         # re-checks every block, with progress
tsunagi blocks chain --count 5

tsunagi node --data chain --listen 127.0.0.1:0 > node.out &   # prints a line once it serves
NODE_PID=$!
until [ -s node.out ]; do sleep 0.1; done
export TSUNAGI_NODE=$(python3 -c 'import json; print(json.load(open("node.out"))["node"])')
# The node owns chain/ now: commands name it (TSUNAGI_NODE, or --node HOST:PORT) instead.
tsunagi send --key bob.key --from 3 --to 2 --amount 1.50
tsunagi balance $BOB --print balance                          # 20.00
tsunagi verify                               # downloads every block and checks it here
kill $NODE_PID && wait $NODE_PID
"""


def test_the_tour_runs_as_written(tmp_path):
    script = tmp_path / "tour.sh"
    script.write_text(TOUR)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("TSUNAGI_NODE", None)
    done = subprocess.run(["bash", "-e", str(script)], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[lines.index("3") + 3] == "17.50"  # open-account, send, mint, balance
    shown = json.loads(next(line for line in lines if line.startswith('{"account": 2')))
    assert (shown["balance"], shown["held"]) == ("77.50", "10.00")
    verified = [line for line in lines if line.startswith("ok: ")]
    assert verified == ["ok: 6 blocks, 8 records verified", "ok: 7 blocks, 9 records verified"]
    assert lines[-2] == "20.00"
