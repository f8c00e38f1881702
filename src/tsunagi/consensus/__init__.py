"""Consensus: which chain is best and who may append to it.

``pow``: proof-of-work rules (work, difficulty retarget, time, the sealer); ``tree``: the block
tree (best header chain, side branches, side block bodies); ``chain``: fork choice and reorgs,
driving the ledger's connect_block and disconnect_blocks. Consortium chains:
``certificate`` (validator sets, vote digests, commit certificates), ``validators`` (on-chain
validator updates and evidence, the set of every height), ``light`` (a light client that checks
finality from headers and certificates alone).
"""
