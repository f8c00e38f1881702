"""Consensus: which chain is best and who may append to it.

``pow``: proof-of-work rules (work, difficulty retarget, time, the sealer); ``tree``: the block
tree (best header chain, side branches, side block bodies); ``chain``: fork choice and reorgs,
driving the ledger's connect_block and disconnect_blocks.
"""
