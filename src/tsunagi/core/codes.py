"""Result codes: why a record was or was not applied. A rejection is a value, not an exception.

0 is ``ok``; values are never reused. The native kernel (``ext/commit``) uses the same numbers,
and a test checks that they agree.
"""

from __future__ import annotations

from enum import IntEnum


class Result(IntEnum):
    ok = 0  # applied
    malformed = 1  # unknown kind, bad flags, or a field that must be zero is not
    wrong_chain = 2  # chain_id is not this chain's
    bad_signature = 3  # the signature does not verify for the debit account's key in key_slot
    unknown_account = 4  # debit account does not exist
    unknown_credit_account = 5  # credit account does not exist
    amount_zero = 6  # a transfer, mint, burn or hold of nothing
    amount_overflow = 7  # the credit balance (or a total) would pass 2**64 - 1
    insufficient_funds = 8  # available balance below the amount
    sequence_used = 9  # sequence not above the account's last: a replay or a reordering
    already_committed = 10  # this very record was committed before; its original code stands
    linked_event_failed = 11  # another record of its linked group failed
    linked_group_open = 12  # the batch ends inside a linked group
    same_account = 13  # debit and credit are the same account
    not_issuer = 14  # mint or burn signed by an account that is not an issuer
    key_slot_empty = 15  # no policy key in that slot of the debit account
    policy_recipient = 16  # the policy key may not pay this recipient
    policy_amount = 17  # above the policy's largest amount per transfer
    policy_allowance = 18  # the policy's total allowance would be exceeded
    policy_expired = 19  # the policy key has expired
    policy_kind = 20  # a policy key may only sign transfers
    hold_not_found = 21  # no hold with that payer and sequence
    hold_expired = 22  # the hold expired and went back to the payer
    hold_already_posted = 23  # the hold was posted before
    hold_already_voided = 24  # the hold was voided before
    not_hold_authority = 25  # only the hold's authority account may post or void it
    hashlock_mismatch = 26  # the preimage does not hash to the hold's hashlock
    post_exceeds_hold = 27  # posting more than the hold holds
    hold_expiry_past = 28  # a hold whose expiry is not after the block time
    unknown_authority = 29  # the hold names an authority account that does not exist
    batch_signature_invalid = 30  # the batch signature does not verify over the batch root
    batch_signer_not_owner = 31  # the batch signer neither owns nor holds a policy for the debit
    batch_rejected = 32  # another record of the same authorized batch failed authorization
    bad_account_key = 33  # open_account with a key that is not a valid x-only public key
    key_slot_invalid = 34  # key_slot outside 0..7, or 0 on set_policy_key
    accounts_full = 35  # the ledger's account limit is reached
    holds_full = 36  # the ledger's hold limit is reached
    policy_key_replaced = 37  # signed by a policy key that an earlier record of its batch resets
    payload_missing = 38  # a call whose payload did not come with it or differs from its digest
    call_refused = 39  # the contract refused the call (its own reason); the sequence is used
    call_failed = 40  # no such contract or method, bad arguments, over budget, or a fault

    @property
    def applied(self) -> bool:
        return self is Result.ok


# Codes a record can get only before it is authenticated: such a record is never stored.
UNSTORED = frozenset({
    Result.malformed, Result.wrong_chain, Result.bad_signature, Result.unknown_account,
    Result.sequence_used, Result.already_committed, Result.batch_signature_invalid,
    Result.batch_signer_not_owner, Result.batch_rejected, Result.key_slot_empty,
    Result.key_slot_invalid, Result.linked_group_open, Result.bad_account_key,
    Result.policy_key_replaced, Result.payload_missing,
})
