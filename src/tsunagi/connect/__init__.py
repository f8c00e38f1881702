"""ConnectionChain: linked chains, their light clients, and the connectors that act on them.

A connector per linked chain holds money in escrow there, pays it out or refunds it on the
connection chain's instruction, and proves what happened: every step it reports comes with the
linked chain's block header and an inclusion proof that a light client of that chain checks.

``connector``: the interface every connector shares (:class:`~tsunagi.connect.connector.TxRef`,
the ``Connector`` protocol); ``limits``: the bounds of this layer. Between tsunagi chains:
``contract`` (the connection contract, installed on the connection chain: linked chains with
a proof-of-work light client kept in its state, transfer rules, one state machine per transfer
with its proven trail), ``codes`` (its refusal codes as an IntEnum), ``tsunagi_chain`` (the
connector of a tsunagi chain over a Ledger, its step proof and ``check_step``), ``journal``
(the node's fsynced step journal) and ``node`` (the ConnectionNode that drives transfers).
The Ethereum leg, a chain of another architecture (``pip install 'tsunagi[ethereum]'``):
``ethereum`` (an in-process eth-tester chain, its Vyper token and escrow, the connector),
``eth_proof`` (the step proof of an Ethereum transaction and its checker, ``check_step``),
``eth_keystore`` (the connection node's Ethereum key, encrypted on disk), ``eth_contracts``
(compiling the Vyper sources, with a cache keyed by their hash).
"""
