"""The refusal codes of the connection contract as an IntEnum: what a refused step means.

The contract itself (:mod:`tsunagi.connect.contract`) may import only the contract API, so it
keeps these as plain ints; a test checks that both lists agree. 0 is never a refusal; values
are never reused.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ConnectCode"]


class ConnectCode(IntEnum):
    not_operator = 1  # only an operator account may add operators, chains and rules
    already_set_up = 2  # setup runs once
    chain_exists = 3  # a linked chain with that id is there already
    chain_kind_unknown = 4  # a kind of chain this contract has no light client for
    chain_unknown = 5  # no linked chain with that id
    rule_exists = 6  # a rule with that id is there already
    rule_invalid = 7  # a rule field out of range, or an escrow expiry not above the payout window
    rule_chain_missing = 8  # the rule names a source or target chain that is not linked
    rule_unknown = 9  # no rule with that id
    amount_invalid = 10  # an amount not above the fee, or an account not a u64
    amount_overflow = 11  # the payout after the rate passes a u64
    transfer_exists = 12  # a transfer with that id was requested before (a replayed request)
    transfer_unknown = 13  # no transfer with that id
    wrong_state = 14  # the step does not follow from the transfer's state (replayed or early)
    header_malformed = 15  # a header that is not 80 bytes
    header_unlinked = 16  # a header whose previous hash is not the newest known header's
    header_bits = 17  # a header whose bits are not the linked chain's
    header_work = 18  # a header whose hash does not meet its bits
    reorg_too_deep = 19  # a branch that would undo more of the best chain than a reorg may
    block_unknown = 20  # the step's header is not the best chain's header at its height
    not_final = 21  # the step's block is not yet as deep as the chain's finality rule asks
    proof_malformed = 22  # a proof with a field missing or of the wrong type or size
    not_in_block = 23  # the record's Merkle path does not lead to the header's root
    code_unproven = 24  # the block's codes do not lead to the header's root as its last leaf
    record_mismatch = 25  # a proven record, but not the one this step needs
    tx_failed = 26  # the record is in the block with a code other than ok
    tx_used = 27  # this transaction proved a step already
    payout_final = 28  # the payout is final: only forward completion is allowed
    payout_late = 29  # the payout's block is past the rule's payout window
    not_expired = 30  # the escrow's expiry is not yet behind the chain's final header
    billing_rule_unknown = 31  # no billing rule with that id
    access_mismatch = 32  # not an access under the billing rule (kind, data set, tag), or before it
    consumer_unknown = 33  # the accessing account has no token account under the billing rule
    bill_unknown = 34  # no bill for that access
    # Codes of the batched step methods (35..39).
    batch_malformed = 35  # a batch that is not a non-empty list of items of the step's shape
    batch_too_large = 36  # more transfers than one batched call may carry
    batch_duplicate = 37  # a transfer named twice in one batch
    block_malformed = 38  # a batch's block proof with a field missing or of the wrong type or size
    # The Ethereum leg (40..49).
    eth_chain_invalid = 40  # an Ethereum chain's genesis header or confirmations out of range
    eth_header_malformed = 41  # not an RLP list of an Ethereum header's fields, or too long
    eth_header_unlinked = 42  # parent hash not the newest known header's, or number not its + 1
    eth_proof_malformed = 43  # an Ethereum step proof with a field missing or of the wrong type
    eth_block_unknown = 44  # the proof's header is not a linked header of that chain (forged)
    eth_not_final = 45  # the block has fewer confirmations on top than the chain asks
    eth_receipt_not_in_block = 46  # the receipt's Merkle-Patricia proof fails under receiptsRoot
    eth_receipt_failed = 47  # the receipt is in the block but its transaction reverted
    eth_event_mismatch = 48  # no log of the named contract with the step's event and values
    eth_tx_used = 49  # this receipt proved a step already
    # A linked consortium chain (55..59).
    cert_malformed = 55  # a certificate whose bytes are not one (sizes, flags, its next set)
    cert_signer_unknown = 56  # a signer index outside the validator set, or signers not ascending
    cert_weight = 57  # the signers hold two thirds of the set's weight or less
    cert_signature = 58  # a signature that does not verify over the block's precommit digest
    cert_conflict = 59  # a second block at a height the chain's certificates made final already
