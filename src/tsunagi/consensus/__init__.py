"""Consensus: which chain is best and who may append to it.

``pow``: proof-of-work rules (work, difficulty retarget, time, the sealer); ``tree``: the block
tree (best header chain, side branches, side block bodies); ``chain``: fork choice and reorgs,
driving the ledger's connect_block and disconnect_blocks; ``tendermint``: the BFT consensus
of a consortium chain (Algorithm 1 of Buchman, Kwon and Milosevic, 2018) as a pure state
machine of one height; ``sim``: a seeded deterministic simulation of a network of validators
that checks its safety, validity and liveness.
"""
