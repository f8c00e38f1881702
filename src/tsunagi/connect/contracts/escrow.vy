# pragma version ~=0.4.3
"""
@title tsunagi escrow
@notice Holds a token in escrow for ConnectionChain. Only the escrow authority (the connection
        node's key, fixed at deployment) releases or voids a hold; after its expiry anyone may
        send it back to the payer, so the money returns even if the connection node is gone.
        A hold id is used once: a second hold with the same id is refused even after the first
        has ended, so a replayed instruction cannot move money twice.
"""

interface Token:
    def transfer(receiver: address, amount: uint256) -> bool: nonpayable
    def transferFrom(sender: address, receiver: address, amount: uint256) -> bool: nonpayable

# Life of a hold; NONE is every id never used.
flag State:
    HELD
    RELEASED
    VOIDED
    REFUNDED

struct Hold:
    payer: address
    amount: uint256
    expiry: uint256
    state: State

event Held:
    id: indexed(bytes32)
    payer: indexed(address)
    amount: uint256
    expiry: uint256

event Released:
    id: indexed(bytes32)
    receiver: indexed(address)
    amount: uint256
    rest: uint256

event Voided:
    id: indexed(bytes32)
    payer: indexed(address)
    amount: uint256

event Refunded:
    id: indexed(bytes32)
    payer: indexed(address)
    amount: uint256

token: public(immutable(address))
authority: public(immutable(address))
holds: public(HashMap[bytes32, Hold])


@deploy
def __init__(token_: address, authority_: address):
    assert token_ != empty(address) and authority_ != empty(address), "zero address"
    token = token_
    authority = authority_


@external
def hold(id: bytes32, payer: address, amount: uint256, expiry: uint256):
    # The payer approved this contract first; the payer or the authority moves the tokens in
    # (nobody else may lock a payer's approved tokens away).
    assert msg.sender == payer or msg.sender == authority, "only the payer or the authority"
    assert self.holds[id].state == empty(State), "hold id used"
    assert payer != empty(address), "hold from the zero address"
    assert amount > 0, "hold of nothing"
    assert expiry > block.timestamp, "expiry not in the future"
    self.holds[id] = Hold(payer=payer, amount=amount, expiry=expiry, state=State.HELD)
    assert extcall Token(token).transferFrom(payer, self, amount), "transferFrom failed"
    log Held(id=id, payer=payer, amount=amount, expiry=expiry)


@external
def release(id: bytes32, receiver: address, amount: uint256):
    # Pays `amount` to `receiver` and the rest back to the payer. Refused at or after expiry:
    # from then on the money belongs to the payer again (refund_expired), never to both.
    assert msg.sender == authority, "only the authority"
    entry: Hold = self.holds[id]
    assert entry.state == State.HELD, "not held"
    assert block.timestamp < entry.expiry, "hold expired"
    assert amount <= entry.amount, "more than the hold"
    assert receiver != empty(address), "release to the zero address"
    self.holds[id].state = State.RELEASED
    rest: uint256 = entry.amount - amount
    if amount > 0:
        assert extcall Token(token).transfer(receiver, amount), "transfer failed"
    if rest > 0:
        assert extcall Token(token).transfer(entry.payer, rest), "transfer failed"
    log Released(id=id, receiver=receiver, amount=amount, rest=rest)


@external
def void(id: bytes32):
    assert msg.sender == authority, "only the authority"
    entry: Hold = self.holds[id]
    assert entry.state == State.HELD, "not held"
    self.holds[id].state = State.VOIDED
    assert extcall Token(token).transfer(entry.payer, entry.amount), "transfer failed"
    log Voided(id=id, payer=entry.payer, amount=entry.amount)


@external
def refund_expired(id: bytes32):
    entry: Hold = self.holds[id]
    assert entry.state == State.HELD, "not held"
    assert block.timestamp >= entry.expiry, "not expired"
    self.holds[id].state = State.REFUNDED
    assert extcall Token(token).transfer(entry.payer, entry.amount), "transfer failed"
    log Refunded(id=id, payer=entry.payer, amount=entry.amount)
