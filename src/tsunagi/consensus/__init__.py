"""Consensus: which chain is best and who may append to it.

``pow``: proof-of-work rules (work, difficulty retarget, time, the sealer); ``tree``: the block
tree (best header chain, side branches, side block bodies); ``chain``: fork choice and reorgs,
driving the ledger's connect_block and disconnect_blocks. Consortium chains: ``tendermint``
(the BFT consensus, Algorithm 1 of Buchman, Kwon and Milosevic, 2018, as a pure state machine
of one height), ``wal`` (a validator's write-ahead log of what it signs), ``certificate``
(validator sets, vote digests, commit certificates), ``validators`` (on-chain validator
updates and evidence, the set of every height), ``light`` (a light client that checks
finality from headers and certificates alone), ``consortium`` (a node's chain of final
blocks); ``sim``: a seeded deterministic simulation of a network of validators that checks
their safety, validity and liveness.
"""
