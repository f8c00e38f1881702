"""Consensus rules of a network of nodes on one chain: what a block must prove, how hard that is
at each height, and the sealing step that makes a block meet it (:mod:`.pow`).

These rules judge a block in its place on a branch (its height, its ancestors' times), where
:func:`tsunagi.core.block.check_block` judges it alone; the chain engine applies both.
"""
