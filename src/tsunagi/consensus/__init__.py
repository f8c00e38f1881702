"""Consensus: which chain is best and who may append to it (block tree, fork choice, reorgs, sealing)."""
