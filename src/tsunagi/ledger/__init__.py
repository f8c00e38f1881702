"""One chain on one machine: state, durable store, submit and submit_batch, queries, proofs."""

from tsunagi.ledger.ledger import AccountInfo, BatchAnswer, Ledger, TxInfo, VerifyReport

__all__ = ["AccountInfo", "BatchAnswer", "Ledger", "TxInfo", "VerifyReport"]
