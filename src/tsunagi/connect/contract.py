"""The connection contract: linked chains with a light client of each, transfer rules, and one
state machine per cross-chain transfer whose every step is proven, not reported.

Installed on the connection chain like any contract (``tsunagi.connect.contract:
ConnectionContract`` and the SHA-256 of this file in the chain config), so it passes the same
source check: it imports only the contract API and hashlib, and reads bytes by slicing. The
light client of a linked proof-of-work tsunagi chain lives here too, run from the contract's
own state, so every node of the connection chain reaches the same verdict on every step.
So does that of a linked Ethereum chain (kind "ethereum", codes 40..49): headers in RLP linked
by parent hash from the genesis header the operators gave, and steps proven by Merkle-Patricia
proofs of the transaction and its receipt under the header's roots, the receipt's log matched
to the step. Keccak-256 comes from the contract API (hashlib has only SHA3-256, padded
otherwise); RLP and the trie walk are written here, bounded, because eth_proof.py's rlp and
trie packages are modules the source check refuses (docs/CONNECT.md says what eth-tester's
headers cannot prove: they carry no seal).

A step of a transfer is recorded only with the linked chain's headers (each must link to the
newest known one and meet the chain's bits) and the Merkle proofs of the step's record and of
its block's codes, and only when the record is exactly the one the step needs (kind, accounts,
amount, hold sequence, transfer tag) with code ok and its block final. Anything else is refused
with one of the codes below and changes nothing. The codes are mirrored, with their comments,
by :class:`tsunagi.connect.codes.ConnectCode`.

Usage billing (its own section of the class) reuses the same proofs: a proven access on a
data chain opens a bill, and the proven charge on a token chain completes it, or, refused
there, leaves it unpaid.
"""

from __future__ import annotations

import hashlib

from tsunagi.contracts import Contract, Refuse, keccak256, method

# Refusal codes (Refuse(code, message)); 0 is never a refusal. Values are never reused.
NOT_OPERATOR = 1  # only an operator account may add operators, chains and rules
ALREADY_SET_UP = 2  # setup runs once
CHAIN_EXISTS = 3  # a linked chain with that id is there already
CHAIN_KIND_UNKNOWN = 4  # a kind of chain this contract has no light client for
CHAIN_UNKNOWN = 5  # no linked chain with that id
RULE_EXISTS = 6  # a rule with that id is there already
RULE_INVALID = 7  # a rule field out of range, or an escrow expiry not above the payout window
RULE_CHAIN_MISSING = 8  # the rule names a source or target chain that is not linked
RULE_UNKNOWN = 9  # no rule with that id
AMOUNT_INVALID = 10  # an amount not above the fee, or an account not a u64
AMOUNT_OVERFLOW = 11  # the payout after the rate passes a u64
TRANSFER_EXISTS = 12  # a transfer with that id was requested before (a replayed request)
TRANSFER_UNKNOWN = 13  # no transfer with that id
WRONG_STATE = 14  # the step does not follow from the transfer's state (replayed or early)
HEADER_MALFORMED = 15  # a header that is not 80 bytes
HEADER_UNLINKED = 16  # a header whose previous hash is not the newest known header's
HEADER_BITS = 17  # a header whose bits are not the linked chain's
HEADER_WORK = 18  # a header whose hash does not meet its bits
REORG_TOO_DEEP = 19  # a branch that would undo more of the best chain than a reorg may
BLOCK_UNKNOWN = 20  # the step's header is not the best chain's header at its height
NOT_FINAL = 21  # the step's block is not yet as deep as the chain's finality rule asks
PROOF_MALFORMED = 22  # a proof with a field missing or of the wrong type or size
NOT_IN_BLOCK = 23  # the record's Merkle path does not lead to the header's root
CODE_UNPROVEN = 24  # the block's codes do not lead to the header's root as its last leaf
RECORD_MISMATCH = 25  # a proven record, but not the one this step needs
TX_FAILED = 26  # the record is in the block with a code other than ok
TX_USED = 27  # this transaction proved a step already
PAYOUT_FINAL = 28  # the payout is final: only forward completion is allowed
PAYOUT_LATE = 29  # the payout's block is past the rule's payout window
NOT_EXPIRED = 30  # the escrow's expiry is not yet behind the chain's final header
BILLING_RULE_UNKNOWN = 31  # no billing rule with that id
ACCESS_MISMATCH = 32  # not an access under the billing rule (kind, data set, tag), or before it
CONSUMER_UNKNOWN = 33  # the accessing account has no token account under the billing rule
BILL_UNKNOWN = 34  # no bill for that access
# Codes of the batched step methods (35..39).
BATCH_MALFORMED = 35  # a batch that is not a non-empty list of items of the step's shape
BATCH_TOO_LARGE = 36  # more transfers than one batched call may carry
BATCH_DUPLICATE = 37  # a transfer named twice in one batch
BLOCK_MALFORMED = 38  # a batch's block proof with a field missing or of the wrong type or size
# The Ethereum leg (40..49).
ETH_CHAIN_INVALID = 40  # an Ethereum chain's genesis header or confirmations out of range
ETH_HEADER_MALFORMED = 41  # not an RLP list of an Ethereum header's fields, or too long
ETH_HEADER_UNLINKED = 42  # parent hash not the newest known header's, or number not its + 1
ETH_PROOF_MALFORMED = 43  # an Ethereum step proof with a field missing or of the wrong type
ETH_BLOCK_UNKNOWN = 44  # the proof's header is not a linked header of that chain (forged)
ETH_NOT_FINAL = 45  # the block has fewer confirmations on top than the chain asks
ETH_RECEIPT_NOT_IN_BLOCK = 46  # the receipt's Merkle-Patricia proof fails under receiptsRoot
ETH_RECEIPT_FAILED = 47  # the receipt is in the block but its transaction reverted
ETH_EVENT_MISMATCH = 48  # no log of the named contract with the step's event and values
ETH_TX_USED = 49  # this receipt proved a step already
# A linked consortium chain (55..59).
CERT_MALFORMED = 55  # a certificate whose bytes are not one (sizes, flags, its next set)
CERT_SIGNER_UNKNOWN = 56  # a signer index outside the validator set, or signers not ascending
CERT_WEIGHT = 57  # the signers hold two thirds of the set's weight or less
CERT_SIGNATURE = 58  # a signature that does not verify over the block's precommit digest
CERT_CONFLICT = 59  # a second block at a height the chain's certificates made final already

KIND_TSUNAGI_POW = "tsunagi-pow"
KIND_ETHEREUM = "ethereum"
KIND_TSUNAGI_BFT = "tsunagi-bft"
# A consortium chain (tsunagi.consensus.certificate, docs/FORMAT.md): what its validators sign
# and the bounds of what this contract follows. A certificate of n validators carries up to n
# signatures at limits.signature_steps each, so a set is bounded to what one call can check.
VOTE_TAG = b"tsunagi/vote/1"
VALIDATORS_TAG = b"tsunagi/validators/1"
PRECOMMIT = 2
CONSORTIUM_VERSION = 2
LINKED_VALIDATORS_MAX = 256
# Ethereum: positions in a header's RLP list (the yellow paper's order), and bounds on what a
# proof may carry. RLP and the Merkle-Patricia walk are written here (bounded loops, charged
# steps) rather than reusing eth_proof.py, which imports rlp and trie the source check refuses.
ETH_TRANSACTIONS_ROOT, ETH_RECEIPTS_ROOT, ETH_NUMBER, ETH_TIME = 4, 5, 8, 11
ETH_HEADER_FIELDS_LEAST = 15
ETH_HEADER_BYTES_MAX = 1024  # a header is about 600 bytes after the later forks
ETH_POSITION_END = 1 << 16  # transactions in a block: far above what a gas limit allows
ETH_PROOF_NODES_MAX = 16  # a trie of 2**16 keys is at most 8 levels of branches deep
ETH_RLP_DEPTH_MAX = 4  # a receipt: list > logs > log > topics
HEADER_BYTES = 80
RECORD_BYTES = 128
# Record fields are u64 and header fields u32: a value fits when it is below these. (The
# contract may import only the contract API, so tsunagi.limits' u64_max is not at hand.)
U64_END = 1 << 64
U32_END = 1 << 32
# Headers one call may add: each costs a hash and a state write, about 175 steps (512 took
# 89,676 of a call's 100,000 when measured), so 256 leave half the budget for the step itself
# and a reorg; 256 headers are 20 KiB of a call's 64 KiB of arguments.
HEADERS_PER_CALL_MAX = 256
# Blocks of the best chain a better branch may undo in one call: each costs a state read and
# a write (about 60 steps), so 256 stay within what a call of 256 headers leaves over.
REORG_DEPTH_MAX = 256
# Levels of a Merkle path: a block holds fewer than 2**32 records.
PATH_LEVELS_MAX = 32
# Blocks of confirmation a finality rule may ask for: 10,000 is about ten weeks of 10-minute
# blocks, far past any rule; the bound keeps a rule from asking for a depth no chain reaches.
CONFIRMATIONS_MAX = 10000
# Transfers one batched call may step: each reads and saves its transfer (its entry, one
# state write per trail step, an event), about 380 steps with its proof's path and TX_USED
# write (100 settled_many items took 38,055 steps and 200 complete_many items 33,213 when
# measured), so 200 stay within a call's 100,000 steps and under its 256 events. A call's
# 64 KiB of arguments bound a proven batch more tightly: about 100 proofs of one 100-record
# block (tsunagi.connect.limits).
BATCH_TRANSFERS_MAX = 200
# The kinds of records this contract checks (tsunagi.core.records.Kind).
KIND_TRANSFER, KIND_HOLD, KIND_POST, KIND_VOID = 2, 5, 6, 7

STATES_OPEN = ["request", "escrow", "payout", "settle", "refund"]


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 8], "little")


def u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 4], "little")


def target_of(bits: int) -> int:
    """The proof-of-work target of compact ``bits`` (Bitcoin's SetCompact)."""
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def transfer_tag(transfer_id: bytes) -> int:
    """The u64 a transfer's records carry in user_data, so a proof names its transfer."""
    return int.from_bytes(hashlib.sha256(transfer_id).digest()[:8], "little")


def parse_record(record: bytes) -> dict:
    """The fields of a 128-byte record (docs/FORMAT.md) this contract checks."""
    return {"kind": record[0], "chain_id": u32(record, 4), "sequence": u64(record, 8),
            "debit": u64(record, 16), "credit": u64(record, 24), "amount": u64(record, 32),
            "aux": u64(record, 40), "aux2": u64(record, 80), "user_data": u64(record, 120)}


def walk_path(leaf: bytes, path: list, index: int, leaves: int, root: bytes) -> bool:
    """True when ``leaf`` at ``index`` of a tree of ``leaves`` leaves hashes up ``path`` to
    ``root``, and the path has the shape of that tree: its length, a lone last node paired
    with itself and no other node with its copy. The shape pins the leaf count, so the body
    leaf proven at index ``leaves - 1`` is the real last leaf (CVE-2012-2459)."""
    if not 0 <= index < leaves or len(path) > PATH_LEVELS_MAX:
        return False
    node, size = leaf, leaves
    for sibling in path:
        if size == 1 or not isinstance(sibling, bytes) or len(sibling) != 32:
            return False
        lone = index % 2 == 0 and index == size - 1
        if lone != (sibling == node):
            return False
        node = sha256d(sibling + node) if index % 2 else sha256d(node + sibling)
        index, size = index // 2, (size + 1) // 2
    return size == 1 and node == root


def multiproof_root(known: list, size: int, hashes: list) -> bytes:
    """The root that the ``known`` leaves ([position, 32-byte hash] pairs, positions strictly
    ascending below ``size``) of a tree of ``size`` leaves and ``hashes`` lead to, every hash
    used; b"" when they do not fit (tsunagi.hashing.verify_merkle_multiproof's walk: bottom
    level first, left to right, a sibling from ``hashes`` only where it is not known). As in
    walk_path a node paired with its copy is refused unless it is the lone last node of its
    level, so with the tree's last leaf known the shape pins ``size`` (CVE-2012-2459)."""
    if size < 1 or not known or known[-1][0] >= size or len(hashes) > PATH_LEVELS_MAX * size:
        return b""
    level, used = known, 0
    while size > 1:
        parents, index, count = [], 0, len(level)
        while index < count:
            position, node = level[index]
            lone = position == size - 1 and position % 2 == 0
            if position % 2 == 0 and index + 1 < count and level[index + 1][0] == position + 1:
                sibling = level[index + 1][1]
                index += 2
            elif lone:
                sibling = node
                index += 1
            else:
                if used == len(hashes) or not isinstance(hashes[used], bytes) or \
                        len(hashes[used]) != 32:
                    return b""
                sibling = hashes[used]
                used += 1
                index += 1
            if (sibling == node) != lone:
                return b""
            parents.append([position // 2, sha256d(sibling + node) if position % 2
                            else sha256d(node + sibling)])
        level, size = parents, (size + 1) // 2
    return level[0][1] if used == len(hashes) else b""


def check_header(header: bytes, bits: int) -> int:
    """0 when the 80-byte ``header`` has the chain's ``bits`` and meets them; else the code."""
    if u32(header, 72) != bits:
        return HEADER_BITS
    if int.from_bytes(sha256d(header), "little") > target_of(bits):
        return HEADER_WORK
    return 0


def proof_fields(proof) -> dict:
    """The proof's fields, each of its type; Refuse(PROOF_MALFORMED) otherwise."""
    kinds = {"height": int, "header": bytes, "record": bytes, "position": int, "path": list,
             "body": bytes, "body_path": list, "record_count": int}
    if not isinstance(proof, dict):
        raise Refuse(PROOF_MALFORMED, "a step proof is a dict")
    for key in kinds:
        if not isinstance(proof.get(key), kinds[key]) or isinstance(proof.get(key), bool):
            raise Refuse(PROOF_MALFORMED, "a step proof needs " + key)
    if len(proof["header"]) != HEADER_BYTES or len(proof["record"]) != RECORD_BYTES:
        raise Refuse(PROOF_MALFORMED, "a header is 80 bytes and a record 128")
    if proof["record_count"] < 1 or len(proof["body"]) < proof["record_count"]:
        raise Refuse(PROOF_MALFORMED, "the body starts with one code per record")
    if len(proof["body"]) == 64:
        # 64 bytes would hash like an inner node of the tree; no real block body is 64 bytes
        # long (a block after genesis carries a signature or a batch besides its codes).
        raise Refuse(PROOF_MALFORMED, "a block body is not 64 bytes")
    return proof


def check_inclusion(proof: dict) -> dict:
    """The proven record's fields and code; Refuse when a path does not lead to the root."""
    header, record, count = proof["header"], proof["record"], proof["record_count"]
    root = header[36:68]
    txid = sha256d(record)
    if not walk_path(txid, proof["path"], proof["position"], count + 1, root):
        raise Refuse(NOT_IN_BLOCK, "the record's Merkle path does not lead to the root")
    if not walk_path(sha256d(proof["body"]), proof["body_path"], count, count + 1, root):
        raise Refuse(CODE_UNPROVEN, "the block's codes do not lead to the root")
    fields = parse_record(record)
    fields["txid"] = txid
    fields["code"] = proof["body"][proof["position"]]
    return fields


class ConnectionContract(Contract):
    """Linked chains, rules and transfers; see the module's docstring for the codes."""

    name = "connection"

    # ------------------------------------------------------------------ operators and setup

    def operator(self) -> None:
        if self.context.caller_account not in self.state.get("operators", []):
            raise Refuse(NOT_OPERATOR, "only an operator may do this")

    @method
    def setup(self, chain_id: int, operators: list) -> None:
        """Names this connection chain's id and its operator accounts; once."""
        if self.state.has("operators"):
            raise Refuse(ALREADY_SET_UP, "setup runs once: add operators instead")
        accounts = [account_of(account) for account in operators]
        self.state.set("operators", accounts)
        self.state.set("self", account_of(chain_id))

    @method
    def add_operator(self, account: int) -> None:
        self.operator()
        accounts = self.state.get("operators", [])
        if account_of(account) not in accounts:
            self.state.set("operators", accounts + [account])

    @method
    def add_chain(self, chain_id: int, kind: str, genesis_hash: bytes, bits: int,
                  confirmations: int) -> None:
        """Links a chain: a proof-of-work tsunagi chain by its genesis hash and bits, final
        ``confirmations`` blocks deep."""
        self.operator()
        key = "chain:" + str(account_of(chain_id))
        if self.state.has(key):
            raise Refuse(CHAIN_EXISTS, "that chain is linked already")
        if kind != KIND_TSUNAGI_POW:
            raise Refuse(CHAIN_KIND_UNKNOWN, "add_chain links " + KIND_TSUNAGI_POW + " chains; "
                         "add_consortium_chain and add_ethereum_chain link the others")
        if not isinstance(genesis_hash, bytes) or len(genesis_hash) != 32 or \
                not isinstance(bits, int) or not 0 < bits < U32_END or \
                not isinstance(confirmations, int) or not 0 <= confirmations <= CONFIRMATIONS_MAX:
            raise Refuse(RULE_INVALID, "a chain needs a 32-byte genesis hash, u32 bits and "
                         "0..10000 confirmations")
        self.link(chain_id, {"kind": kind, "genesis": genesis_hash, "bits": bits,
                             "confirmations": confirmations})

    def link(self, chain_id: int, chain: dict) -> None:
        """Stores a linked tsunagi chain and starts its light client at the genesis block."""
        genesis_hash = chain["genesis"]
        self.state.set("chain:" + str(chain_id), chain)
        self.state.set("tip:" + str(chain_id), [0, genesis_hash, 0])
        self.state.set("hdr:" + str(chain_id) + ":" + genesis_hash.hex(),
                       [0, 0, 0, bytes(32)])
        self.state.set("best:" + str(chain_id) + ":0", [genesis_hash, 0])

    @method
    def add_rule(self, rule: dict) -> None:
        """A transfer rule (see check_rule); only operators."""
        self.operator()
        checked = check_rule(rule)
        key = "rule:" + str(checked["rule_id"])
        if self.state.has(key):
            raise Refuse(RULE_EXISTS, "a rule with that id exists")
        for chain in [checked["source"], checked["target"]]:
            if not self.state.has("chain:" + str(chain)):
                raise Refuse(RULE_CHAIN_MISSING, "the rule names chain " + str(chain) +
                             ", which is not linked")
        self.state.set(key, checked)

    # ------------------------------------------------------------------------ light client

    @method
    def headers(self, chain_id: int, headers: list) -> int:
        """Adds headers of a linked chain; returns its newest known height."""
        return self.extend(chain_id, headers)[0]

    def linked(self, chain_id) -> dict:
        chain = self.state.get("chain:" + str(chain_id))
        if chain is None:
            raise Refuse(CHAIN_UNKNOWN, "no linked chain " + str(chain_id))
        return chain

    def extend(self, chain_id: int, headers: list) -> list:
        """The chain's best tip after ``headers``: each must link to a known header and meet
        the chain's bits; the branch with the most work is the best chain (ties keep the
        one seen first, as Bitcoin does)."""
        chain = self.linked(chain_id)
        if chain["kind"] == KIND_TSUNAGI_BFT:
            return self.certified_extend(chain_id, chain, headers)
        if not isinstance(headers, list) or len(headers) > HEADERS_PER_CALL_MAX:
            raise Refuse(HEADER_MALFORMED, "headers are a list of at most " +
                         str(HEADERS_PER_CALL_MAX))
        prefix = "hdr:" + str(chain_id) + ":"
        tip = self.state.get("tip:" + str(chain_id))
        work = 2 ** 256 // (target_of(chain["bits"]) + 1)
        for header in headers:
            if not isinstance(header, bytes) or len(header) != HEADER_BYTES:
                raise Refuse(HEADER_MALFORMED, "a header is 80 bytes")
            digest = sha256d(header)
            if self.state.has(prefix + digest.hex()):
                continue
            parent = self.state.get(prefix + header[4:36].hex())
            if parent is None:
                raise Refuse(HEADER_UNLINKED, "a header that links to no known header")
            code = check_header(header, chain["bits"])
            if code:
                raise Refuse(code, "header " + str(parent[0] + 1) + " of chain " +
                             str(chain_id) + " is refused")
            known = [parent[0] + 1, parent[1] + work, u32(header, 68), header[4:36]]
            self.state.set(prefix + digest.hex(), known)
            if known[1] > tip[2]:
                self.make_best(chain_id, digest, known)
                tip = [known[0], digest, known[1]]
        self.state.set("tip:" + str(chain_id), tip)
        return tip

    def make_best(self, chain_id: int, digest: bytes, known: list) -> None:
        """Makes the branch ending at ``digest`` the best chain, back to where it joins it."""
        prefix = "hdr:" + str(chain_id) + ":"
        tip = self.state.get("tip:" + str(chain_id))
        for height in range(tip[0], known[0], -1):  # a longer old branch loses its top
            self.state.delete("best:" + str(chain_id) + ":" + str(height))
        for depth in range(REORG_DEPTH_MAX):
            best = self.state.get("best:" + str(chain_id) + ":" + str(known[0]))
            if best is not None and best[0] == digest:
                return
            self.state.set("best:" + str(chain_id) + ":" + str(known[0]), [digest, known[2]])
            digest = known[3]
            known = self.state.get(prefix + digest.hex())
        raise Refuse(REORG_TOO_DEEP, "a branch that undoes more than " +
                     str(REORG_DEPTH_MAX) + " blocks")

    def proven(self, chain_id: int, proof, headers: list, failed_ok: bool = False) -> dict:
        """The record a step proof proves, in a final block of ``chain_id``, with where;
        ``failed_ok`` takes a record refused there too (its code is in the fields)."""
        chain = self.linked(chain_id)
        fields = check_inclusion(proof_fields(proof))
        tip = self.extend(chain_id, headers)
        height = proof["height"]
        known = self.state.get("best:" + str(chain_id) + ":" + str(height))
        if known is None or known[0] != sha256d(proof["header"]):
            raise Refuse(BLOCK_UNKNOWN, "the step's header is not the best chain's at its "
                         "height")
        final_height = height + chain["confirmations"]
        if tip[0] < final_height:
            raise Refuse(NOT_FINAL, "the step's block needs " + str(chain["confirmations"]) +
                         " blocks on top")
        if fields["code"] != 0 and not failed_ok:
            raise Refuse(TX_FAILED, "the record was refused there, code " + str(fields["code"]))
        used = "used:" + str(chain_id) + ":" + fields["txid"].hex()
        if self.state.has(used):
            raise Refuse(TX_USED, "this transaction proved a step already")
        self.state.set(used, 1)
        final = self.state.get("best:" + str(chain_id) + ":" + str(final_height))
        fields["where"] = [chain_id, fields["txid"], height, known[0], known[1]]
        fields["final"] = [chain_id, fields["txid"], final_height, final[0], final[1]]
        return fields

    # ----------------------------------------------------- the light client of a consortium

    @method
    def add_consortium_chain(self, chain_id: int, genesis_hash: bytes,
                             validators: list) -> None:
        """Links a consortium tsunagi chain (kind "tsunagi-bft") by its genesis hash and its
        genesis validator set, [[x-only key, weight], ...] in the chain config's order. Its
        blocks are final as soon as a certificate of more than two thirds of the weight signs
        them, so a step needs no confirmations; the set follows the changes certificates
        carry (each names the next height's set), from headers and certificates alone."""
        self.operator()
        key = "chain:" + str(account_of(chain_id))
        if self.state.has(key):
            raise Refuse(CHAIN_EXISTS, "that chain is linked already")
        if not isinstance(genesis_hash, bytes) or len(genesis_hash) != 32:
            raise Refuse(RULE_INVALID, "a consortium chain needs its 32-byte genesis hash")
        members = checked_validators(validators)
        if members is None:
            raise Refuse(RULE_INVALID, "validators are 1.." + str(LINKED_VALIDATORS_MAX) +
                         " distinct [32-byte key, weight >= 1] pairs")
        self.link(chain_id, {"kind": KIND_TSUNAGI_BFT, "genesis": genesis_hash, "bits": 0,
                             "confirmations": 0})
        self.state.set("vset:" + str(chain_id), members)

    def certified_extend(self, chain_id: int, chain: dict, items: list) -> list:
        """The consortium chain's tip after ``items``, [[header, certificate], ...]: each
        header must follow the tip (a final chain never forks), carry no work, and come with
        a certificate of its height's set; every signature of the call is checked in one
        batch. A header known already is skipped (headers may be given twice)."""
        if not isinstance(items, list) or len(items) > HEADERS_PER_CALL_MAX:
            raise Refuse(HEADER_MALFORMED, "headers are a list of at most " +
                         str(HEADERS_PER_CALL_MAX) + " [header, certificate] pairs")
        prefix = "hdr:" + str(chain_id) + ":"
        tip = self.state.get("tip:" + str(chain_id))
        members = self.state.get("vset:" + str(chain_id))
        messages, keys, signatures, heights = [], [], [], []
        for item in items:
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes) \
                    or len(item[0]) != HEADER_BYTES or not isinstance(item[1], bytes):
                raise Refuse(HEADER_MALFORMED, "a consortium header is [80 bytes, certificate]")
            header, certificate = item
            digest = sha256d(header)
            if header[4:36] != tip[1]:
                if self.state.has(prefix + digest.hex()):
                    continue
                if self.state.has(prefix + header[4:36].hex()):
                    raise Refuse(CERT_CONFLICT, "a second block after a final one of chain " +
                                 str(chain_id) + ": its validators equivocated, or it is forged")
                raise Refuse(HEADER_UNLINKED, "a header that links to no known header")
            height = tip[0] + 1
            if u32(header, 0) != CONSORTIUM_VERSION or u32(header, 72) or u32(header, 76):
                raise Refuse(HEADER_BITS, "a consortium header is version 2 with bits and nonce 0")
            parsed = parse_certificate(certificate, members)
            weight = 0
            for signer in parsed[1]:
                weight += members[signer][1]
            if 3 * weight <= 2 * total_weight(members):
                raise Refuse(CERT_WEIGHT, "header " + str(height) + "'s signers hold two thirds "
                             "of the weight or less")
            following = members if parsed[3] is None else parsed[3]
            message = hashlib.sha256(VOTE_TAG + chain["genesis"] + bytes([PRECOMMIT]) +
                                     height.to_bytes(8, "little") +
                                     parsed[0].to_bytes(4, "little") + b"\x01" + digest +
                                     validators_hash(following)).digest()
            for n, signer in enumerate(parsed[1]):
                messages.append(message)
                keys.append(members[signer][0])
                signatures.append(parsed[2][n])
                heights.append(height)
            self.state.set(prefix + digest.hex(), [height, height, u32(header, 68), tip[1]])
            self.state.set("best:" + str(chain_id) + ":" + str(height),
                           [digest, u32(header, 68)])
            tip, members = [height, digest, height], following
        bad = self.verify_signatures(messages, keys, signatures)
        if bad >= 0:
            raise Refuse(CERT_SIGNATURE, "a signature of header " + str(heights[bad]) +
                         "'s certificate does not verify")
        self.state.set("tip:" + str(chain_id), tip)
        self.state.set("vset:" + str(chain_id), members)
        return tip

    # --------------------------------------------------------------------------- transfers

    def transfer(self, transfer_id) -> dict:
        if not isinstance(transfer_id, bytes) or not 0 < len(transfer_id) <= 32:
            raise Refuse(TRANSFER_UNKNOWN, "a transfer id is 1 to 32 bytes")
        entry = self.state.get("xfer:" + transfer_id.hex())
        if entry is None:
            raise Refuse(TRANSFER_UNKNOWN, "no such transfer")
        return entry

    def expect(self, entry: dict, states: list) -> None:
        if entry["state"] not in states:
            raise Refuse(WRONG_STATE, "the transfer is in state " + entry["state"])

    def here(self) -> list:
        """Where this call is on the connection chain: its block's hash is not known while
        the block is being made, so it is left empty (the height and txid name the call)."""
        if self.self_id is None:
            self.self_id = self.state.get("self")
        return [self.self_id, self.context.txid, self.context.height, b"",
                self.context.block_time_s]

    def save(self, transfer_id: bytes, entry: dict, state: str, steps: list) -> None:
        """The transfer's entry in ``state``, and ``steps`` ([name, where] each) one key on
        its trail, named by the number of its first step (see the trail layout below)."""
        key, stored = transfer_id.hex(), []
        for name, where in steps:
            stored.append([name] + where)
        self.state.set("step:" + key + ":" + str(entry["steps"] + 1), stored)
        entry["steps"] += len(stored)
        entry["state"] = state
        self.state.set("xfer:" + key, entry)
        self.emit("step", transfer_id=transfer_id, state=state)

    @method
    def request(self, transfer_id: bytes, rule_id: int, payer: int, payee: int,
                amount: int) -> int:
        """Step 1: a payment of ``amount`` (source units) from ``payer`` on the source chain
        to ``payee`` on the target chain; returns the payout in target units."""
        if not isinstance(transfer_id, bytes) or not 0 < len(transfer_id) <= 32:
            raise Refuse(AMOUNT_INVALID, "a transfer id is 1 to 32 bytes")
        if self.state.has("xfer:" + transfer_id.hex()):
            raise Refuse(TRANSFER_EXISTS, "that transfer was requested before")
        rule = self.rule_of({"rule_id": account_of(rule_id)})
        if rule is None:
            raise Refuse(RULE_UNKNOWN, "no rule " + str(rule_id))
        for value in [payer, payee, amount]:
            account_of(value)
        if amount <= rule["fee"]:
            raise Refuse(AMOUNT_INVALID, "the amount does not exceed the fee")
        payout = (amount - rule["fee"]) * rule["rate_numerator"] // rule["rate_denominator"]
        if payout >= U64_END:
            raise Refuse(AMOUNT_OVERFLOW, "the payout after the rate passes a u64")
        if payout == 0:
            raise Refuse(AMOUNT_INVALID, "the payout after the rate and fee is zero")
        entry = {"rule_id": rule["rule_id"], "payer": payer, "payee": payee, "amount": amount,
                 "payout": payout, "tag": transfer_tag(transfer_id), "state": "request",
                 "requested_s": self.context.block_time_s, "hold": [], "steps": 0}
        self.save(transfer_id, entry, "request", [["request", self.here()]])
        return payout

    @method
    def escrowed(self, transfer_id: bytes, proof: dict, headers: list) -> None:
        """Steps 2-4: the payer's hold into escrow, final on the source chain; rate applied."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["request"])
        rule = self.rule_of(entry)
        self.escrow_proven(transfer_id, entry, rule, self.proven(rule["source"], proof, headers))

    def escrow_proven(self, transfer_id: bytes, entry: dict, rule: dict, fields: dict) -> None:
        """Steps 2-4 once the hold's record is proven (one at a time or in a batch)."""
        matches(fields, {"kind": KIND_HOLD, "chain_id": rule["source"],
                         "debit": entry["payer"], "credit": rule["settlement"],
                         "amount": entry["amount"], "aux2": rule["escrow_authority"],
                         "user_data": entry["tag"]})
        if fields["aux"] < entry["requested_s"] + rule["escrow_expiry_s"]:
            raise Refuse(RECORD_MISMATCH, "the hold expires before the rule's escrow expiry")
        self.escrow_recorded(transfer_id, entry,
                             [fields["debit"], fields["sequence"], fields["aux"]], fields)

    def escrow_recorded(self, transfer_id: bytes, entry: dict, hold: list, fields: dict) -> None:
        """What follows a proven hold on any kind of chain: the hold kept, steps 2-4 saved."""
        entry["hold"] = hold
        entry["escrowed_s"] = fields["where"][4]
        self.save(transfer_id, entry, "escrow", self.proven_steps("escrow", fields, "rate"))

    def proven_steps(self, name: str, fields: dict, seen: str = "") -> list:
        """A proven step's three trail entries: where it stands, where it is final, and the
        connection chain's call that saw it (``seen``, by default ``<name>_seen``)."""
        return [[name, fields["where"]], [name + "_final", fields["final"]],
                [seen or name + "_seen", self.here()]]

    @method
    def confirm(self, transfer_id: bytes, accepted: bool) -> None:
        """Step 5: the payee's answer, relayed by an operator (the node that asked it); yes
        orders the payout, no the refund. Proven steps need no operator: their proofs speak."""
        self.operator()
        entry = self.transfer(transfer_id)
        self.expect(entry, ["escrow"])
        state = "payout" if accepted is True else "refund"
        self.save(transfer_id, entry, state,
                  [["confirm" if accepted is True else "declined", self.here()]])

    @method
    def paid(self, transfer_id: bytes, proof: dict, headers: list) -> None:
        """Steps 7-8: the pool's payment to the payee, final on the target chain. From here
        the transfer only goes forward."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["payout"])
        rule = self.rule_of(entry)
        self.payout_proven(transfer_id, entry, rule, self.proven(rule["target"], proof, headers))

    def payout_proven(self, transfer_id: bytes, entry: dict, rule: dict, fields: dict) -> None:
        """Steps 7-8 once the payout's record is proven (one at a time or in a batch)."""
        matches(fields, {"kind": KIND_TRANSFER, "chain_id": rule["target"],
                         "debit": rule["pool"], "credit": entry["payee"],
                         "amount": entry["payout"], "user_data": entry["tag"]})
        self.payout_recorded(transfer_id, entry, rule, fields)

    def payout_recorded(self, transfer_id: bytes, entry: dict, rule: dict, fields: dict) -> None:
        """What follows a proven payout on any kind of chain: within the payout window, steps
        7-8 saved."""
        if fields["where"][4] > entry["escrowed_s"] + rule["payout_window_s"]:
            raise Refuse(PAYOUT_LATE, "the payout's block is past the payout window")
        self.save(transfer_id, entry, "settle", self.proven_steps("payout", fields))

    @method
    def settled(self, transfer_id: bytes, proof: dict, headers: list) -> None:
        """Steps 9-11: the escrow posted to the settlement account, final on the source."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["settle"])
        if entry.get("settled"):
            raise Refuse(WRONG_STATE, "the escrow is settled already")
        rule = self.rule_of(entry)
        self.settle_proven(transfer_id, entry, rule, self.proven(rule["source"], proof, headers))

    def settle_proven(self, transfer_id: bytes, entry: dict, rule: dict, fields: dict) -> None:
        """Steps 9-11 once the post's record is proven (one at a time or in a batch)."""
        matches(fields, {"kind": KIND_POST, "chain_id": rule["source"],
                         "debit": rule["escrow_authority"], "credit": entry["payer"],
                         "aux": entry["hold"][1], "amount": entry["amount"],
                         "user_data": entry["tag"]})
        self.settle_recorded(transfer_id, entry, fields)

    def settle_recorded(self, transfer_id: bytes, entry: dict, fields: dict) -> None:
        """What follows a proven settlement on any kind of chain: steps 9-11 saved."""
        entry["settled"] = True
        self.save(transfer_id, entry, "settle", self.proven_steps("settle", fields))

    @method
    def complete(self, transfer_id: bytes) -> None:
        """Step 12: paid out and settled, both final: the transfer is complete."""
        self.operator()
        entry = self.transfer(transfer_id)
        self.expect(entry, ["settle"])
        if not entry.get("settled"):
            raise Refuse(WRONG_STATE, "the escrow is not settled yet")
        self.save(transfer_id, entry, "complete", [["complete", self.here()]])

    @method
    def abort(self, transfer_id: bytes) -> None:
        """Before the payout is final, an abort orders the refund (or ends a transfer
        whose escrow never came); only an operator may abort."""
        self.operator()
        entry = self.transfer(transfer_id)
        if entry["state"] in ["settle", "complete"]:
            raise Refuse(PAYOUT_FINAL, "the payout is final: only completion is allowed")
        self.expect(entry, ["request", "escrow", "payout"])
        state = "refund" if entry["hold"] else "refunded"
        self.save(transfer_id, entry, state, [["abort", self.here()]])

    @method
    def refunded(self, transfer_id: bytes, proof: dict, headers: list) -> None:
        """The escrow voided back to the payer, final on the source chain."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["refund"])
        rule = self.rule_of(entry)
        fields = self.proven(rule["source"], proof, headers)
        matches(fields, {"kind": KIND_VOID, "chain_id": rule["source"],
                         "debit": rule["escrow_authority"], "credit": entry["payer"],
                         "aux": entry["hold"][1], "user_data": entry["tag"]})
        self.save(transfer_id, entry, "refunded", self.proven_steps("refund", fields))

    @method
    def expired(self, transfer_id: bytes, headers: list) -> None:
        """The escrow's hold expired back to the payer by itself: a final header of the source
        chain with a time at its expiry proves it (the ledger returns it at that time)."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["escrow", "payout", "refund", "settle"])
        if entry.get("settled"):
            raise Refuse(WRONG_STATE, "the escrow is settled already")
        rule = self.rule_of(entry)
        chain = self.linked(rule["source"])
        tip = self.extend(rule["source"], headers)
        final = tip[0] - chain["confirmations"]
        known = self.state.get("best:" + str(rule["source"]) + ":" + str(max(0, final)))
        if final < 0 or known[1] < entry["hold"][2]:
            raise Refuse(NOT_EXPIRED, "no final header is at the escrow's expiry yet")
        self.save(transfer_id, entry, "expired",
                  [["expired", [rule["source"], b"", final, known[0], known[1]]]])

    # --------------------------------------------------- transfer state layout (trail keys)
    # A transfer's entry ("xfer:<id hex>") holds its fields, its rule's id and its count of
    # steps; the steps one call adds to its trail (one, or a proven step's three) are a key of
    # their own ("step:<id hex>:<n>", n the number of the first of them, from 1), written once
    # and never read by the state machine; the rule is read by its id, since a rule never
    # changes once added (add_rule refuses an id in use and nothing else writes "rule:"). A
    # call so decodes and encodes about 160 bytes a step, not the whole trail and a copy of
    # the rule (about 1,900 bytes at twelve steps), and a transfer of twelve steps writes six
    # trail keys, not twelve. A step is stored as a list, [step name, chain, txid, height,
    # block hash, time] (STEP_FIELDS), which encodes and decodes in half the time of the dict
    # readers see (trail_step). ``trail`` and ConnectionNode.state_of assemble the transfer as
    # it was: its fields with "rule" and "trail".

    rules_read = None  # rule id -> rule, each read once a call
    self_id = None  # this connection chain's id ("self"), read once a call

    def rule_of(self, entry: dict) -> dict:
        """The rule of a transfer's entry, read once a call."""
        if self.rules_read is None:
            self.rules_read = {}
        rule = self.rules_read.get(entry["rule_id"])
        if rule is None:
            rule = self.state.get("rule:" + str(entry["rule_id"]))
            self.rules_read[entry["rule_id"]] = rule
        return rule

    def assembled(self, transfer_id) -> dict:
        """The transfer with its rule and its whole trail, as readers see it."""
        entry = self.transfer(transfer_id)
        shown = {key: entry[key] for key in entry if key not in ["rule_id", "steps"]}
        shown["rule"] = self.rule_of(entry)
        shown["trail"] = []
        prefix = "step:" + transfer_id.hex() + ":"
        while len(shown["trail"]) < entry["steps"]:
            for stored in self.state.get(prefix + str(len(shown["trail"]) + 1)):
                shown["trail"].append(trail_step(len(shown["trail"]) + 1, stored))
        return shown

    # ------------------------------------------------------------- batched steps (fast path)
    # One call steps many transfers. A proven step's call proves many records of ONE block of
    # the linked chain: its header and finality once, and the records with the body leaf (the
    # codes) by one Merkle multiproof, so a node that the paths of many records share is
    # hashed once (a group of 100 records is its whole block, and the multiproof is then
    # empty: 100 hashes rebuild the root where 100 paths took about 700). Per transfer only
    # its record and position travel. Every check of the one-transfer methods holds per
    # transfer (state, record match, TX_USED, expiry and window); a batch is all or nothing:
    # the first transfer refused refuses the call with its own code (the detail names its
    # index; a multiproof that fails names no one record), and nothing of the call stays.

    def batch(self, items, size: int) -> list:
        if not isinstance(items, list) or not items:
            raise Refuse(BATCH_MALFORMED, "a batch is a non-empty list")
        if len(items) > BATCH_TRANSFERS_MAX:
            raise Refuse(BATCH_TOO_LARGE, "a batch is at most " + str(BATCH_TRANSFERS_MAX) +
                         " transfers")
        seen = {}
        for item in items:
            if not isinstance(item, list) or len(item) != size:
                raise Refuse(BATCH_MALFORMED, "each item is a list of " + str(size))
            if not isinstance(item[0], bytes):
                raise Refuse(BATCH_MALFORMED, "each item starts with its transfer id")
            if item[0] in seen:
                raise Refuse(BATCH_DUPLICATE, "a transfer twice in one batch")
            seen[item[0]] = 1
        return items

    def proven_block(self, chain_id: int, block, items: list, headers: list) -> dict:
        """A linked block's header proven once (the best chain's at its height, final) and
        the batch's records with its body in it: one multiproof of every item's record
        ([transfer_id, record, position], positions ascending) and of the body leaf (the
        codes, the block's last leaf) under the header's root. The part of ``proven`` shared
        by a batch; per record ``txid`` and ``code`` are then known."""
        chain = self.linked(chain_id)
        kinds = {"height": int, "header": bytes, "body": bytes, "hashes": list,
                 "record_count": int}
        if not isinstance(block, dict):
            raise Refuse(BLOCK_MALFORMED, "a block proof is a dict")
        for key in kinds:
            if not isinstance(block.get(key), kinds[key]) or isinstance(block.get(key), bool):
                raise Refuse(BLOCK_MALFORMED, "a block proof needs " + key)
        header, count, body = block["header"], block["record_count"], block["body"]
        if len(header) != HEADER_BYTES or count < 1 or len(body) < count or len(body) == 64:
            raise Refuse(BLOCK_MALFORMED, "an 80-byte header and a body of one code a record")
        known, txids, last = [], [], -1
        for item in items:
            record, position = item[1], item[2]
            if not isinstance(record, bytes) or len(record) != RECORD_BYTES or \
                    not isinstance(position, int) or isinstance(position, bool) or \
                    not last < position < count:
                raise Refuse(PROOF_MALFORMED, "transfer " + str(len(txids)) + " of the batch: "
                             "a record is 128 bytes at a position after the one before, "
                             "below the block's count")
            last = position
            txid = sha256d(record)
            txids.append(txid)
            known.append([position, txid])
        known.append([count, sha256d(body)])
        root = header[36:68]
        if multiproof_root(known, count + 1, block["hashes"]) != root:
            raise Refuse(NOT_IN_BLOCK, "the records and the block's codes do not lead to the "
                         "header's root")
        tip = self.extend(chain_id, headers)
        height = block["height"]
        known = self.state.get("best:" + str(chain_id) + ":" + str(height))
        if known is None or known[0] != sha256d(header):
            raise Refuse(BLOCK_UNKNOWN, "the block's header is not the best chain's at its "
                         "height")
        final_height = height + chain["confirmations"]
        if tip[0] < final_height:
            raise Refuse(NOT_FINAL, "the block needs " + str(chain["confirmations"]) +
                         " blocks on top")
        final = self.state.get("best:" + str(chain_id) + ":" + str(final_height))
        return {"chain": chain_id, "body": body, "txids": txids,
                "where": [chain_id, b"", height, known[0], known[1]],
                "final": [chain_id, b"", final_height, final[0], final[1]]}

    def proven_item(self, block: dict, index: int, record: bytes, position: int) -> dict:
        """Record ``index`` of a proven block's batch: its code ok, its txid not used before."""
        txid = block["txids"][index]
        fields = parse_record(record)
        if block["body"][position] != 0:
            raise Refuse(TX_FAILED, "the record was refused there, code " +
                         str(block["body"][position]))
        used = "used:" + str(block["chain"]) + ":" + txid.hex()
        if self.state.has(used):
            raise Refuse(TX_USED, "this transaction proved a step already")
        self.state.set(used, 1)
        fields["txid"] = txid
        fields["where"] = [block["chain"], txid] + block["where"][2:]
        fields["final"] = [block["chain"], txid] + block["final"][2:]
        return fields

    def each(self, items: list, step) -> None:
        """``step(item)`` for every item; a refusal names the item's index."""
        index = 0
        for item in items:
            try:
                step(item)
            except Refuse as refusal:
                raise Refuse(refusal.code, "transfer " + str(index) + " of the batch: " +
                             refusal.message) from None
            index += 1

    def entries_on(self, items: list, side: str) -> list:
        """The batch's transfers, each read once, and the one linked chain they all step on
        (``side`` of their rules): ``[chain, [[item, entry], ...]]``."""
        pairs = []
        self.each(items, lambda item: pairs.append([item, self.transfer(item[0])]))
        chain = self.rule_of(pairs[0][1])[side]
        for pair in pairs:
            if self.rule_of(pair[1])[side] != chain:
                raise Refuse(BATCH_MALFORMED, "a proven batch's transfers step on one chain")
        return [chain, pairs]

    @method
    def request_many(self, items: list) -> list:
        """Step 1 for many: items [transfer_id, rule_id, payer, payee, amount]; the payouts."""
        self.batch(items, 5)
        payouts = []
        self.each(items, lambda item: payouts.append(self.request(*item)))
        return payouts

    def proven_many(self, block: dict, items: list, headers: list, side: str, state: str,
                    applied, unsettled: bool = False) -> None:
        """A batched proven step: items [transfer_id, record, position] of one block of each
        transfer's ``side`` chain, proven together by the block's multiproof, each transfer
        in ``state`` (and, with ``unsettled``, its escrow not settled yet);
        ``applied(transfer_id, entry, rule, fields)`` is what the single method does once its
        record is proven."""
        self.batch(items, 3)
        chain, pairs = self.entries_on(items, side)
        proven = self.proven_block(chain, block, items, headers)
        index = 0
        for item, entry in pairs:
            try:
                if entry["state"] != state:
                    raise Refuse(WRONG_STATE, "the transfer is in state " + entry["state"])
                if unsettled and entry.get("settled"):
                    raise Refuse(WRONG_STATE, "the escrow is settled already")
                applied(item[0], entry, self.rule_of(entry),
                        self.proven_item(proven, index, item[1], item[2]))
            except Refuse as refusal:
                raise Refuse(refusal.code, "transfer " + str(index) + " of the batch: " +
                             refusal.message) from None
            index += 1

    @method
    def escrowed_many(self, block: dict, items: list, headers: list) -> None:
        """Steps 2-4 for many: items [transfer_id, record, position] of one block."""
        self.proven_many(block, items, headers, "source", "request", self.escrow_proven)

    @method
    def confirm_many(self, items: list) -> None:
        """Step 5 for many: items [transfer_id, accepted], relayed by an operator."""
        self.batch(items, 2)
        self.each(items, lambda item: self.confirm(item[0], item[1]))

    @method
    def paid_many(self, block: dict, items: list, headers: list) -> None:
        """Steps 7-8 for many: items [transfer_id, record, position] of one block."""
        self.proven_many(block, items, headers, "target", "payout", self.payout_proven)

    @method
    def settled_many(self, block: dict, items: list, headers: list) -> None:
        """Steps 9-11 for many: items [transfer_id, record, position] of one block."""
        self.proven_many(block, items, headers, "source", "settle", self.settle_proven,
                         unsettled=True)

    @method
    def complete_many(self, items: list) -> None:
        """Step 12 for many: items [transfer_id]."""
        self.batch(items, 1)
        self.each(items, lambda item: self.complete(item[0]))

    @method
    def trail(self, transfer_id: bytes) -> dict:
        """The transfer: its state, amounts, rule and every step recorded."""
        return self.assembled(transfer_id)

    # ----------------------------------------------------------------------- usage billing
    #
    # Demo 2: every data access on a data-rights chain is charged on a token chain, per a
    # billing rule an operator attaches to chains already linked. An access is a transfer on
    # the data chain crediting the rule's data-set account with the rule's access tag in
    # user_data, code ok, in a final block above the data chain's height when the rule was
    # attached (earlier accesses are not billed). Proven with its headers, it opens a bill
    # keyed by its txid, in state "charge". The charge is a transfer on the token chain from
    # the consumer's token account (registered by an operator per data-chain account) to the
    # payee, of the rule's price, tagged with transfer_tag(access txid): proven with code ok
    # the bill is "complete"; proven refused there (the consumer cannot pay) it is "unpaid",
    # the refusal's code kept. Both are final.

    def billing_rule(self, rule_id) -> dict:
        rule = self.state.get("brule:" + str(account_of(rule_id)))
        if rule is None:
            raise Refuse(BILLING_RULE_UNKNOWN, "no billing rule " + str(rule_id))
        return rule

    def bill_entry(self, access_txid) -> dict:
        if not isinstance(access_txid, bytes) or len(access_txid) != 32:
            raise Refuse(BILL_UNKNOWN, "a bill is named by its access's 32-byte txid")
        bill = self.state.get("bill:" + access_txid.hex())
        if bill is None:
            raise Refuse(BILL_UNKNOWN, "no bill for that access")
        return bill

    def save_bill(self, access_txid: bytes, bill: dict, state: str, steps: list) -> None:
        """The bill's new steps, each a key of its own ("bstep:<access hex>:<n>", as a
        transfer's are), and the bill with its count of steps."""
        key = access_txid.hex()
        for name, where in steps:
            bill["steps"] += 1
            self.state.set("bstep:" + key + ":" + str(bill["steps"]), [name] + where)
        bill["state"] = state
        self.state.set("bill:" + key, bill)
        self.emit("bill", access=access_txid, state=state)

    @method
    def add_billing_rule(self, rule: dict, headers: list) -> int:
        """A billing rule (see check_billing_rule); only operators. ``headers`` bring the
        data chain's light client up to date first: accesses in blocks above its tip then are
        billed, those at or below it are not. Returns the first height billed."""
        self.operator()
        checked = check_billing_rule(rule)
        key = "brule:" + str(checked["rule_id"])
        if self.state.has(key):
            raise Refuse(RULE_EXISTS, "a billing rule with that id exists")
        for chain in [checked["data_chain"], checked["token_chain"]]:
            if not self.state.has("chain:" + str(chain)):
                raise Refuse(RULE_CHAIN_MISSING, "the billing rule names chain " +
                             str(chain) + ", which is not linked")
        tip = self.extend(checked["data_chain"], headers)
        checked["first_height"] = tip[0] + 1
        checked["attached_s"] = self.context.block_time_s
        self.state.set(key, checked)
        self.state.set("brules", self.state.get("brules", []) + [checked["rule_id"]])
        return checked["first_height"]

    @method
    def add_billing_consumer(self, rule_id: int, data_account: int,
                             token_account: int) -> None:
        """Registers the token account charged for accesses by ``data_account`` under the
        rule (replacing an earlier one for accesses recorded from now on); only operators."""
        self.operator()
        self.billing_rule(rule_id)
        self.state.set("bcons:" + str(rule_id) + ":" + str(account_of(data_account)),
                       account_of(token_account))

    @method
    def record_access(self, rule_id: int, proof: dict, headers: list) -> bytes:
        """A proven access on the rule's data chain opens its bill; returns the access txid
        that names the bill. A replayed access proof is refused (TX_USED)."""
        rule = self.billing_rule(rule_id)
        fields = self.proven(rule["data_chain"], proof, headers)
        if fields["kind"] != KIND_TRANSFER or fields["chain_id"] != rule["data_chain"] or \
                fields["credit"] != rule["data_set"] or fields["user_data"] != rule["access_tag"]:
            raise Refuse(ACCESS_MISMATCH, "the proven record is not an access to the rule's "
                         "data set with its tag")
        if fields["where"][2] < rule["first_height"]:
            raise Refuse(ACCESS_MISMATCH, "the access is in a block the rule was attached "
                         "after: it is not billed")
        account = self.state.get("bcons:" + str(rule_id) + ":" + str(fields["debit"]))
        if account is None:
            raise Refuse(CONSUMER_UNKNOWN, "account " + str(fields["debit"]) + " has no token "
                         "account under billing rule " + str(rule_id))
        txid = fields["txid"]
        bill = {"rule_id": rule["rule_id"], "access": txid, "consumer": fields["debit"],
                "data_chain": rule["data_chain"], "token_chain": rule["token_chain"],
                "account": account, "payee": rule["payee"], "price": rule["price"],
                "tag": transfer_tag(txid), "refusal": 0, "state": "charge", "steps": 0}
        self.save_bill(txid, bill, "charge", self.proven_steps("access", fields, "bill"))
        return txid

    @method
    def charged(self, access_txid: bytes, proof: dict, headers: list) -> str:
        """The bill's charge, final on the token chain: applied, the bill is complete;
        refused there (the consumer cannot pay), it is unpaid. Returns the new state."""
        bill = self.bill_entry(access_txid)
        if bill["state"] != "charge":
            raise Refuse(WRONG_STATE, "the bill is in state " + bill["state"])
        fields = self.proven(bill["token_chain"], proof, headers, failed_ok=True)
        matches(fields, {"kind": KIND_TRANSFER, "chain_id": bill["token_chain"],
                         "debit": bill["account"], "credit": bill["payee"],
                         "amount": bill["price"], "user_data": bill["tag"]})
        if fields["code"] == 0:
            self.save_bill(access_txid, bill, "complete",
                           self.proven_steps("charge", fields, "complete"))
            return "complete"
        bill["refusal"] = fields["code"]
        self.save_bill(access_txid, bill, "unpaid",
                       self.proven_steps("charge_refused", fields, "unpaid"))
        return "unpaid"

    @method
    def bill_trail(self, access_txid: bytes) -> dict:
        """The bill: its state, price, accounts and every step recorded."""
        bill = self.bill_entry(access_txid)
        steps = bill.pop("steps")
        bill["trail"] = [trail_step(n, self.state.get("bstep:" + access_txid.hex() + ":" +
                                                      str(n)))
                         for n in range(1, steps + 1)]
        return bill

    # ------------------------------------------------------------------- the Ethereum leg

    @method
    def add_ethereum_chain(self, chain_id: int, genesis_header: bytes,
                           confirmations: int) -> None:
        """Links an Ethereum chain (kind "ethereum") by its genesis header in RLP; a block is
        final ``confirmations`` blocks deep (eth-tester: 0, it has no forks). Headers are
        trusted by linkage alone: eth-tester's carry no seal to check (see docs/CONNECT.md)."""
        self.operator()
        key = "chain:" + str(account_of(chain_id))
        if self.state.has(key):
            raise Refuse(CHAIN_EXISTS, "that chain is linked already")
        fields = eth_header_fields(genesis_header)
        if fields is None or not isinstance(confirmations, int) or \
                isinstance(confirmations, bool) or not 0 <= confirmations <= CONFIRMATIONS_MAX:
            raise Refuse(ETH_CHAIN_INVALID, "an Ethereum chain needs its genesis header in "
                         "RLP and 0..10000 confirmations")
        genesis = keccak256(genesis_header)
        self.state.set(key, {"kind": KIND_ETHEREUM, "genesis": genesis,
                             "confirmations": confirmations})
        self.state.set("ethtip:" + str(chain_id), [eth_number(fields), genesis])
        self.state.set("ethhdr:" + str(chain_id) + ":" + genesis.hex(),
                       [eth_number(fields), eth_time(fields), fields[ETH_RECEIPTS_ROOT],
                        fields[ETH_TRANSACTIONS_ROOT]])
        self.state.set("ethbest:" + str(chain_id) + ":" + str(eth_number(fields)),
                       [genesis, eth_time(fields)])

    @method
    def eth_headers(self, chain_id: int, headers: list) -> int:
        """Adds headers of a linked Ethereum chain; returns its newest known height."""
        return self.eth_extend(chain_id, headers)[0]

    def eth_extend(self, chain_id: int, headers: list) -> list:
        """The chain's tip after ``headers``, each the child of the newest known header."""
        chain = self.linked(chain_id)
        if chain["kind"] != KIND_ETHEREUM:
            raise Refuse(CHAIN_KIND_UNKNOWN, "chain " + str(chain_id) + " is not Ethereum")
        if not isinstance(headers, list) or len(headers) > HEADERS_PER_CALL_MAX:
            raise Refuse(ETH_HEADER_MALFORMED, "headers are a list of at most " +
                         str(HEADERS_PER_CALL_MAX))
        tip = self.state.get("ethtip:" + str(chain_id))
        prefix = "ethhdr:" + str(chain_id) + ":"
        for header in headers:
            fields = eth_header_fields(header)
            if fields is None:
                raise Refuse(ETH_HEADER_MALFORMED, "not an Ethereum header in RLP")
            digest = keccak256(header)
            if self.state.has(prefix + digest.hex()):
                continue
            if fields[0] != tip[1] or eth_number(fields) != tip[0] + 1:
                raise Refuse(ETH_HEADER_UNLINKED, "a header that is not the child of the "
                             "newest known one")
            self.state.set(prefix + digest.hex(),
                           [tip[0] + 1, eth_time(fields), fields[ETH_RECEIPTS_ROOT],
                            fields[ETH_TRANSACTIONS_ROOT]])
            self.state.set("ethbest:" + str(chain_id) + ":" + str(tip[0] + 1),
                           [digest, eth_time(fields)])
            tip = [tip[0] + 1, digest]
        self.state.set("ethtip:" + str(chain_id), tip)
        return tip

    def eth_proven(self, chain_id: int, proof, headers: list) -> dict:
        """The receipt a step proof proves in a final block of an Ethereum chain: its logs
        and where it is. The proof is a dict: header (RLP), position (the transaction's index
        in the block), transaction_proof and receipt_proof (trie nodes in RLP, root first).
        The transaction's keccak is the txid the trail names."""
        chain = self.linked(chain_id)
        tip = self.eth_extend(chain_id, headers)
        if not isinstance(proof, dict) or not isinstance(proof.get("header"), bytes) or \
                not isinstance(proof.get("position"), int) or \
                isinstance(proof.get("position"), bool) or \
                not 0 <= proof["position"] < ETH_POSITION_END or \
                not isinstance(proof.get("receipt_proof"), list) or \
                len(proof["receipt_proof"]) > ETH_PROOF_NODES_MAX or \
                not isinstance(proof.get("transaction_proof"), list) or \
                len(proof["transaction_proof"]) > ETH_PROOF_NODES_MAX:
            raise Refuse(ETH_PROOF_MALFORMED, "an Ethereum step proof needs header, position "
                         "and receipt_proof")
        digest = keccak256(proof["header"])
        known = self.state.get("ethhdr:" + str(chain_id) + ":" + digest.hex())
        if known is None:
            raise Refuse(ETH_BLOCK_UNKNOWN, "the proof's header is not a linked header")
        if tip[0] < known[0] + chain["confirmations"]:
            raise Refuse(ETH_NOT_FINAL, "the step's block needs " +
                         str(chain["confirmations"]) + " blocks on top")
        key = rlp_encode_int(proof["position"])
        transaction = mpt_value(known[3], key, proof["transaction_proof"])
        if transaction is None:
            raise Refuse(ETH_RECEIPT_NOT_IN_BLOCK, "the transaction's proof fails under "
                         "transactionsRoot")
        receipt = mpt_value(known[2], key, proof["receipt_proof"])
        if receipt is None:
            raise Refuse(ETH_RECEIPT_NOT_IN_BLOCK, "the receipt's proof fails under "
                         "receiptsRoot")
        decoded = eth_receipt(receipt)
        if decoded is None:
            raise Refuse(ETH_RECEIPT_NOT_IN_BLOCK, "the proven value is not a receipt")
        if not decoded[0]:
            raise Refuse(ETH_RECEIPT_FAILED, "the transaction reverted")
        txid = keccak256(transaction)
        used = "ethused:" + str(chain_id) + ":" + txid.hex()
        if self.state.has(used):
            raise Refuse(ETH_TX_USED, "this transaction proved a step already")
        self.state.set(used, 1)
        final_height = known[0] + chain["confirmations"]
        final = self.state.get("ethbest:" + str(chain_id) + ":" + str(final_height))
        return {"logs": decoded[1], "where": [chain_id, txid, known[0], digest, known[1]],
                "final": [chain_id, txid, final_height, final[0], final[1]]}

    @method
    def eth_event(self, chain_id: int, proof: dict, headers: list, address: bytes,
                  topics: list, data: bytes) -> list:
        """Records that a final block of an Ethereum chain has a successful receipt with a
        log of contract ``address`` whose topics start with ``topics`` and whose data is
        ``data`` (an escrow's Held, Released, Voided or Refunded; a token's Transfer from the
        pool); returns where: [chain, block hash, height, block hash, time]."""
        if not isinstance(address, bytes) or not isinstance(topics, list) or \
                not isinstance(data, bytes):
            raise Refuse(ETH_PROOF_MALFORMED, "an event is an address, topics and data")
        fields = self.eth_proven(chain_id, proof, headers)
        for log in fields["logs"]:
            if log[0] == address and log[1][:len(topics)] == topics and log[2] == data:
                self.state.set("ethevent:" + fields["where"][1].hex() + ":" +
                               str(proof["position"]), fields["where"])
                return fields["where"]
        raise Refuse(ETH_EVENT_MISMATCH, "no log of that contract with that event")

    # ----------------------------------------------------- transfers with an Ethereum leg

    @method
    def eth_accounts(self, chain_id: int, token: bytes, escrow: bytes, pool: bytes,
                     settlement: bytes) -> None:
        """The 20-byte addresses an Ethereum chain's steps are matched against: its token and
        escrow contracts, the pool that pays out and the settlement account that escrow
        releases to. They stand in for a rule's u64 pool and settlement on that chain."""
        self.operator()
        if self.linked(chain_id)["kind"] != KIND_ETHEREUM:
            raise Refuse(CHAIN_KIND_UNKNOWN, "chain " + str(chain_id) + " is not Ethereum")
        for address in [token, escrow, pool, settlement]:
            if not isinstance(address, bytes) or len(address) != 20:
                raise Refuse(ETH_CHAIN_INVALID, "an Ethereum address is 20 bytes")
        self.state.set("ethacct:" + str(chain_id), {"token": token, "escrow": escrow,
                                                    "pool": pool, "settlement": settlement})

    @method
    def eth_request(self, transfer_id: bytes, rule_id: int, payer, payee, amount: int) -> int:
        """Step 1 when a side is Ethereum: the payer or payee there is a 20-byte address
        (the transfer id is then 32 bytes, the escrow's hold id); returns the payout."""
        rule = self.state.get("rule:" + str(account_of(rule_id)))
        if rule is None:
            raise Refuse(RULE_UNKNOWN, "no rule " + str(rule_id))
        ends = []
        for chain, account in [[rule["source"], payer], [rule["target"], payee]]:
            ethereum = self.linked(chain)["kind"] == KIND_ETHEREUM
            if ethereum and (not isinstance(account, bytes) or len(account) != 20 or
                             not isinstance(transfer_id, bytes) or len(transfer_id) != 32):
                raise Refuse(AMOUNT_INVALID, "on Ethereum an account is a 20-byte address and "
                             "a transfer id 32 bytes")
            ends.append(account if ethereum else None)
        payout = self.request(transfer_id, rule_id, 0 if ends[0] else payer,
                              0 if ends[1] else payee, amount)
        entry = self.transfer(transfer_id)
        entry["payer_eth"], entry["payee_eth"] = ends[0], ends[1]
        self.state.set("xfer:" + transfer_id.hex(), entry)
        return payout

    def eth_step(self, chain_id: int, proof, headers: list, contract: str, topics: list
                 ) -> list:
        """[data of the first matching log, the proven fields] for a step on Ethereum."""
        accounts = self.state.get("ethacct:" + str(chain_id))
        if accounts is None:
            raise Refuse(ETH_CHAIN_INVALID, "chain " + str(chain_id) + " has no accounts set")
        fields = self.eth_proven(chain_id, proof, headers)
        for log in fields["logs"]:
            if log[0] == accounts[contract] and log[1] == topics:
                return [log[2], fields]
        raise Refuse(ETH_EVENT_MISMATCH, "no " + contract + " log with the step's topics")

    @method
    def eth_escrowed(self, transfer_id: bytes, proof: dict, headers: list) -> None:
        """Steps 2-4 from an Ethereum source: the escrow contract's Held for this transfer."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["request"])
        rule = self.rule_of(entry)
        found = self.eth_step(rule["source"], proof, headers, "escrow",
                              [keccak256(b"Held(bytes32,address,uint256,uint256)"),
                               transfer_id, word_of(entry["payer_eth"])])
        data, fields = found
        if len(data) != 64 or int.from_bytes(data[:32], "big") != entry["amount"]:
            raise Refuse(ETH_EVENT_MISMATCH, "the hold's amount is not the transfer's")
        expiry_s = int.from_bytes(data[32:], "big")
        if expiry_s < entry["requested_s"] + rule["escrow_expiry_s"]:
            raise Refuse(ETH_EVENT_MISMATCH, "the hold expires before the rule's escrow expiry")
        self.escrow_recorded(transfer_id, entry, [0, 0, expiry_s], fields)

    @method
    def eth_paid(self, transfer_id: bytes, proof: dict, headers: list) -> None:
        """Steps 7-8 on an Ethereum target: the token's Transfer from the pool to the payee."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["payout"])
        rule = self.rule_of(entry)
        accounts = self.state.get("ethacct:" + str(rule["target"])) or {"pool": b""}
        data, fields = self.eth_step(rule["target"], proof, headers, "token",
                                     [keccak256(b"Transfer(address,address,uint256)"),
                                      word_of(accounts["pool"]), word_of(entry["payee_eth"])])
        if data != entry["payout"].to_bytes(32, "big"):
            raise Refuse(ETH_EVENT_MISMATCH, "the payment is not the transfer's payout")
        self.payout_recorded(transfer_id, entry, rule, fields)

    @method
    def eth_settled(self, transfer_id: bytes, proof: dict, headers: list) -> None:
        """Steps 9-11 from an Ethereum source: the escrow's Released to the settlement."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["settle"])
        if entry.get("settled"):
            raise Refuse(WRONG_STATE, "the escrow is settled already")
        rule = self.rule_of(entry)
        accounts = self.state.get("ethacct:" + str(rule["source"])) or {"settlement": b""}
        data, fields = self.eth_step(
            rule["source"], proof, headers, "escrow",
            [keccak256(b"Released(bytes32,address,uint256,uint256)"), transfer_id,
             word_of(accounts["settlement"])])
        if data != entry["amount"].to_bytes(32, "big") + bytes(32):
            raise Refuse(ETH_EVENT_MISMATCH, "the release is not the whole escrow")
        self.settle_recorded(transfer_id, entry, fields)

    @method
    def eth_refunded(self, transfer_id: bytes, proof: dict, headers: list) -> None:
        """The escrow voided back to the payer on an Ethereum source (its Voided event)."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["refund"])
        rule = self.rule_of(entry)
        data, fields = self.eth_step(rule["source"], proof, headers, "escrow",
                                     [keccak256(b"Voided(bytes32,address,uint256)"),
                                      transfer_id, word_of(entry["payer_eth"])])
        if data != entry["amount"].to_bytes(32, "big"):
            raise Refuse(ETH_EVENT_MISMATCH, "the refund is not the whole escrow")
        self.save(transfer_id, entry, "refunded", self.proven_steps("refund", fields))

    # ---------------------------------------------- an Ethereum escrow's expiry (the node)
    # An Ethereum escrow does not return an expired hold by itself, as a tsunagi ledger does:
    # someone sends refund_expired (the node, or the payer without it), which the escrow
    # refuses before the expiry. Its Refunded event, proven, ends the transfer "expired" from
    # any state the hold is still in escrow in; release is refused from then on, so the money
    # went back to the payer and nowhere else.

    @method
    def eth_expired(self, transfer_id: bytes, proof: dict, headers: list) -> None:
        """The escrow's hold returned to the payer after its expiry, on an Ethereum source
        (the escrow's Refunded event of the whole amount, in a block at the expiry or later)."""
        entry = self.transfer(transfer_id)
        self.expect(entry, ["escrow", "payout", "refund", "settle"])
        if entry.get("settled"):
            raise Refuse(WRONG_STATE, "the escrow is settled already")
        rule = self.rule_of(entry)
        data, fields = self.eth_step(rule["source"], proof, headers, "escrow",
                                     [keccak256(b"Refunded(bytes32,address,uint256)"),
                                      transfer_id, word_of(entry["payer_eth"])])
        if data != entry["amount"].to_bytes(32, "big"):
            raise Refuse(ETH_EVENT_MISMATCH, "the refund is not the whole escrow")
        if fields["where"][4] < entry["hold"][2]:
            raise Refuse(NOT_EXPIRED, "the refund's block is before the escrow's expiry")
        self.save(transfer_id, entry, "expired", self.proven_steps("expired", fields))


# The fields of a stored trail step, in order; its n is its key's.
STEP_FIELDS = ["step", "chain", "txid", "height", "block_hash", "time_s"]


def u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 2], "little")


def checked_validators(validators) -> list | None:
    """The set as [[key, weight], ...] when it is 1..LINKED_VALIDATORS_MAX distinct pairs of
    a 32-byte key and a u64 weight >= 1; None otherwise."""
    if not isinstance(validators, list) or not 1 <= len(validators) <= LINKED_VALIDATORS_MAX:
        return None
    members, seen = [], []
    for member in validators:
        if not isinstance(member, list) or len(member) != 2:
            return None
        key, weight = member
        if not isinstance(key, bytes) or len(key) != 32 or key in seen or \
                not isinstance(weight, int) or isinstance(weight, bool) or \
                not 0 < weight < U64_END:
            return None
        seen.append(key)
        members.append([key, weight])
    return members


def total_weight(members: list) -> int:
    total = 0
    for member in members:
        total += member[1]
    return total


def validators_hash(members: list) -> bytes:
    """SHA-256(VALIDATORS_TAG || count u16 || (key, weight u64) each): what votes sign as the
    next height's set (tsunagi.consensus.certificate.ValidatorSet.hash)."""
    parts = [VALIDATORS_TAG, len(members).to_bytes(2, "little")]
    for member in members:
        parts.append(member[0] + member[1].to_bytes(8, "little"))
    return hashlib.sha256(b"".join(parts)).digest()


def parse_certificate(data: bytes, members: list) -> list:
    """[round, signers, signatures, next set or None] of a certificate (round u32, count u16,
    signers u16 each ascending, 64-byte signatures, has_next u8, the next set when 1);
    Refuse(CERT_MALFORMED or CERT_SIGNER_UNKNOWN) otherwise."""
    if len(data) < 7:
        raise Refuse(CERT_MALFORMED, "a certificate is at least 7 bytes")
    count = u16(data, 4)
    signatures_at = 6 + 2 * count
    flag_at = signatures_at + 64 * count
    if count > len(members) or flag_at >= len(data):
        raise Refuse(CERT_MALFORMED, "a certificate of " + str(count) + " signers does not "
                     "fit its bytes or its set")
    signers = []
    for n in range(count):
        signer = u16(data, 6 + 2 * n)
        if signer >= len(members) or (signers and signer <= signers[-1]):
            raise Refuse(CERT_SIGNER_UNKNOWN, "signer " + str(signer) + " is not in the set "
                         "or not in ascending order")
        signers.append(signer)
    signatures = []
    for n in range(count):
        signatures.append(data[signatures_at + 64 * n:signatures_at + 64 * (n + 1)])
    flag, following, end = data[flag_at], None, flag_at + 1
    if flag == 1:
        size = u16(data, end) if end + 2 <= len(data) else 0
        pairs = []
        for n in range(min(size, LINKED_VALIDATORS_MAX + 1)):
            at = end + 2 + 40 * n
            pairs.append([data[at:at + 32], u64(data, at + 32)])
        end += 2 + 40 * size
        following = checked_validators(pairs) if end <= len(data) else None
        if following is None or following == members:
            raise Refuse(CERT_MALFORMED, "a certificate's next set is not a valid new set")
    elif flag:
        raise Refuse(CERT_MALFORMED, "has_next is 0 or 1")
    if end != len(data):
        raise Refuse(CERT_MALFORMED, "bytes follow the certificate")
    return [u32(data, 0), signers, signatures, following]


def trail_step(n: int, stored: list) -> dict:
    """A trail step as readers see it: ``{"n": n, "step": ..., ..., "time_s": ...}``."""
    step = {"n": n}
    for index in range(len(STEP_FIELDS)):
        step[STEP_FIELDS[index]] = stored[index]
    return step


def account_of(value) -> int:
    """``value`` when it is a u64 (an account, a chain id, an amount); Refuse otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < U64_END:
        raise Refuse(AMOUNT_INVALID, "accounts, ids and amounts are u64 integers")
    return value


def matches(fields: dict, expected: dict) -> None:
    for key in expected:
        if fields[key] != expected[key]:
            raise Refuse(RECORD_MISMATCH, "the proven record's " + key + " is not the step's")


def check_rule(rule) -> dict:
    """A rule's fields checked: rule_id, source, target, rate_numerator, rate_denominator,
    fee (source units), settlement (source account), pool (target account),
    escrow_authority (source account), escrow_expiry_s above payout_window_s."""
    names = ["rule_id", "source", "target", "rate_numerator", "rate_denominator", "fee",
             "settlement", "pool", "escrow_authority", "escrow_expiry_s", "payout_window_s"]
    if not isinstance(rule, dict):
        raise Refuse(RULE_INVALID, "a rule is a dict")
    checked = {}
    for name in names:
        value = rule.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < U64_END:
            raise Refuse(RULE_INVALID, "a rule's " + name + " is a u64")
        checked[name] = value
    if checked["rate_numerator"] == 0 or checked["rate_denominator"] == 0:
        raise Refuse(RULE_INVALID, "a rate is a ratio of two positive integers")
    if checked["source"] == checked["target"]:
        raise Refuse(RULE_INVALID, "a rule links two different chains")
    if checked["escrow_expiry_s"] <= checked["payout_window_s"]:
        raise Refuse(RULE_INVALID, "the escrow expiry must exceed the payout window")
    return checked


def check_billing_rule(rule) -> dict:
    """A billing rule's fields checked: rule_id, data_chain, token_chain, data_set (the data
    chain's account an access credits), access_tag (the user_data an access carries), price
    (token units per access, above 0), payee (the data owner's token account)."""
    names = ["rule_id", "data_chain", "token_chain", "data_set", "access_tag", "price",
             "payee"]
    if not isinstance(rule, dict):
        raise Refuse(RULE_INVALID, "a billing rule is a dict")
    checked = {}
    for name in names:
        value = rule.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < U64_END:
            raise Refuse(RULE_INVALID, "a billing rule's " + name + " is a u64")
        checked[name] = value
    if checked["price"] == 0:
        raise Refuse(RULE_INVALID, "a billing rule's price is above 0")
    return checked


def rlp_item(data: bytes, offset: int, depth: int) -> list:
    """[item, end] of the RLP item at ``offset``: bytes or a list; None for bad input or a
    non-canonical encoding (so an item has one encoding, and a header one hash)."""
    if offset >= len(data) or depth > ETH_RLP_DEPTH_MAX:
        return None
    first = data[offset]
    if first < 0x80:
        return [data[offset:offset + 1], offset + 1]
    if first < 0xB8 or 0xC0 <= first < 0xF8:
        size, start = first - (0x80 if first < 0xC0 else 0xC0), offset + 1
    else:
        width = first - (0xB7 if first < 0xC0 else 0xF7)
        start = offset + 1 + width
        size = int.from_bytes(data[offset + 1:start], "big")
        if size < 56 or data[offset + 1] == 0:
            return None  # not canonical: a short size in the long form, or a leading zero
    end = start + size
    if end > len(data) or first == 0x81 and data[start] < 0x80:
        return None  # a byte below 0x80 is its own encoding: one canonical form per item
    if first < 0xC0:
        return [data[start:end], end]
    items, position = [], start
    while position < end:
        found = rlp_item(data, position, depth + 1)
        if found is None:
            return None
        items.append(found[0])
        position = found[1]
    return [items, end] if position == end else None


def rlp_decode(data):
    """The item ``data`` holds, whole; None when it is not exactly one RLP item."""
    if not isinstance(data, bytes):
        return None
    found = rlp_item(data, 0, 0)
    return found[0] if found is not None and found[1] == len(data) else None


def rlp_encode_int(value: int) -> bytes:
    """The RLP of a non-negative integer below 2**16 (a trie key: a position in a block)."""
    if value == 0:
        return bytes([0x80])
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return raw if len(raw) == 1 and raw[0] < 0x80 else bytes([0x80 + len(raw)]) + raw


def eth_header_fields(header) -> list:
    """The fields of an Ethereum header in RLP, or None."""
    if not isinstance(header, bytes) or not 0 < len(header) <= ETH_HEADER_BYTES_MAX:
        return None
    fields = rlp_decode(header)
    if not isinstance(fields, list) or len(fields) < ETH_HEADER_FIELDS_LEAST:
        return None
    for field in fields:
        if not isinstance(field, bytes):
            return None
    if len(fields[0]) != 32 or len(fields[ETH_RECEIPTS_ROOT]) != 32 or \
            len(fields[ETH_TRANSACTIONS_ROOT]) != 32:
        return None
    return fields


def eth_number(fields: list) -> int:
    return int.from_bytes(fields[ETH_NUMBER], "big")


def eth_time(fields: list) -> int:
    return int.from_bytes(fields[ETH_TIME], "big")


def nibbles(key: bytes) -> list:
    out = []
    for byte in key:
        out.append(byte >> 4)
        out.append(byte & 15)
    return out


def mpt_value(root: bytes, key: bytes, nodes: list) -> bytes:
    """The value at ``key`` under ``root`` that the trie ``nodes`` (RLP) prove, or None."""
    by_hash = {}
    for node in nodes:
        if not isinstance(node, bytes):
            return None
        by_hash[keccak256(node).hex()] = node
    path, reference = nibbles(key), root
    for level in range(ETH_PROOF_NODES_MAX + len(path)):
        if isinstance(reference, list):
            node = reference  # a node under 32 bytes lies inside its parent
        elif isinstance(reference, bytes) and reference.hex() in by_hash:
            node = rlp_decode(by_hash[reference.hex()])
        else:
            return None
        if not isinstance(node, list):
            return None
        if len(node) == 17:
            if not path:
                return node[16] or None
            reference, path = node[path[0]], path[1:]
        elif len(node) == 2 and isinstance(node[0], bytes) and node[0]:
            flag = node[0][0] >> 4
            shared = nibbles(node[0])[2 - flag % 2:]
            if path[:len(shared)] != shared:
                return None
            path = path[len(shared):]
            if flag >= 2:
                return node[1] if not path and isinstance(node[1], bytes) else None
            reference = node[1]
        else:
            return None
        if reference == b"":
            return None
    return None


def eth_receipt(receipt: bytes) -> list:
    """[succeeded, logs] of an EIP-2718 receipt, each log [address, topics, data]; or None."""
    if not receipt:
        return None
    fields = rlp_decode(receipt[1:] if receipt[0] <= 0x7F else receipt)
    if not isinstance(fields, list) or len(fields) != 4 or not isinstance(fields[3], list):
        return None
    for log in fields[3]:
        if not isinstance(log, list) or len(log) != 3 or not isinstance(log[1], list):
            return None
    return [fields[0] == b"\x01", fields[3]]


def word_of(address) -> bytes:
    """An address as an event topic: 12 zero bytes, then its 20."""
    if not isinstance(address, bytes) or len(address) != 20:
        raise Refuse(ETH_EVENT_MISMATCH, "the transfer names no Ethereum address there")
    return bytes(12) + address
