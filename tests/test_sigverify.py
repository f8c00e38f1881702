"""Batch BIP340 verification agrees with BIP340's own test vectors and with coincurve.

Method: the 15 verification vectors of BIP340 (bitcoin/bips, bip-0340/test-vectors.csv) as
known answers; then random keys and messages, with signatures, keys and messages corrupted at
random positions, checked one by one against coincurve's own verify on one and two threads,
both by the batch equation (groups split until the bad signatures are found) and each alone.
Two forged signatures whose errors cancel in an unweighted sum must still both fail: the batch
weights are random.
"""

from __future__ import annotations

import os
import random

import coincurve
import numpy as np
import pytest
from tsunagi._native.sigverify import check_keys, verify_batch

from tsunagi.errors import EncodingError

# (x-only public key, message, signature, valid) from BIP340's test-vectors.csv, rows 0..14.
BIP340_VECTORS = [
    ("F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9",
     "0000000000000000000000000000000000000000000000000000000000000000",
     ("E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA8215"
     "25F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0"), True),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE3341"
     "8906D11AC976ABCCB20B091292BFF4EA897EFCB639EA871CFA95F6DE339E4B0A"), True),
    ("DD308AFEC5777E13121FA72B9CC1B7CC0139715309B086C960E18FD969774EB8",
     "7E2D58D8B3BCDF1ABADEC7829054F90DDA9805AAB56C77333024B9D0A508B75C",
     ("5831AAEED7B44BB74E5EAB94BA9D4294C49BCF2A60728D8B4C200F50DD313C1B"
     "AB745879A5AD954A72C45A91C3A51D3C7ADEA98D82F8481E0E1E03674A6F3FB7"), True),
    ("25D1DFF95105F5253C4022F628A996AD3A0D95FBF21D468A1B33F8C160D8F517",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
     ("7EB0509757E246F19449885651611CB965ECC1A187DD51B64FDA1EDC9637D5EC"
     "97582B9CB13DB3933705B32BA982AF5AF25FD78881EBB32771FC5922EFC66EA3"), True),
    ("D69C3509BB99E412E68B0FE8544E72837DFA30746D8BE2AA65975F29D22DC7B9",
     "4DF3C3F68FCC83B27E9D42C90431A72499F17875C81A599B566C9889B9696703",
     ("00000000000000000000003B78CE563F89A0ED9414F5AA28AD0D96D6795F9C63"
     "76AFB1548AF603B3EB45C9F8207DEE1060CB71C04E80F593060B07D28308D7F4"), True),
    ("EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B"), False),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("FFF97BD5755EEEA420453A14355235D382F6472F8568A18B2F057A1460297556"
     "3CC27944640AC607CD107AE10923D9EF7A73C643E166BE5EBEAFA34B1AC553E2"), False),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("1FA62E331EDBC21C394792D2AB1100A7B432B013DF3F6FF4F99FCB33E0E1515F"
     "28890B3EDB6E7189B630448B515CE4F8622A954CFE545735AAEA5134FCCDB2BD"), False),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "961764B3AA9B2FFCB6EF947B6887A226E8D7C93E00C5ED0C1834FF0D0C2E6DA6"), False),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("0000000000000000000000000000000000000000000000000000000000000000"
     "123DDA8328AF9C23A94C1FEECFD123BA4FB73476F0D594DCB65C6425BD186051"), False),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("0000000000000000000000000000000000000000000000000000000000000001"
     "7615FBAF5AE28864013C099742DEADB4DBA87F11AC6754F93780D5A1837CF197"), False),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("4A298DACAE57395A15D0795DDBFD1DCB564DA82B0F269BC70A74F8220429BA1D"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B"), False),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B"), False),
    ("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"), False),
    ("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC30",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     ("6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B"), False),
]


def _vector_arrays():
    keys = b"".join(bytes.fromhex(v[0]) for v in BIP340_VECTORS)
    messages = b"".join(bytes.fromhex(v[1]) for v in BIP340_VECTORS)
    signatures = b"".join(bytes.fromhex(v[2]) for v in BIP340_VECTORS)
    return messages, keys, signatures, [v[3] for v in BIP340_VECTORS]


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("threads", [1, 2, 5])
def test_bip340_vectors(threads, batched):
    messages, keys, signatures, expected = _vector_arrays()
    assert verify_batch(messages, keys, signatures, threads, batched).tolist() == expected
    # each vector also inside a batch of valid signatures (the first four are valid)
    for row in range(len(expected)):
        picks = [0, 1, row, 2, 3] * 2
        rows = [b"".join(data[width * i:width * (i + 1)] for i in picks)
                for data, width in ((messages, 32), (keys, 32), (signatures, 64))]
        got = verify_batch(*rows, threads, batched)
        assert got.tolist() == [expected[i] for i in picks], row


def test_keys_off_the_curve_are_refused():
    _, keys, _, _ = _vector_arrays()
    valid = check_keys(keys).tolist()
    assert valid == [True] * 5 + [False] + [True] * 8 + [False]  # rows 5 and 14


def _random_batch(count: int, seed: int):
    rng = random.Random(seed)
    secrets = [coincurve.PrivateKey() for _ in range(8)]
    messages, keys, signatures = [], [], []
    for _ in range(count):
        key = rng.choice(secrets)
        message = os.urandom(32)
        messages.append(message)
        keys.append(key.public_key_xonly.format())
        signatures.append(key.sign_schnorr(message, os.urandom(32)))
    return messages, keys, signatures, rng


def _corrupt(messages, keys, signatures, rng) -> None:
    """Flips one bit in the signature, key or message of about half of the items."""
    for i in range(len(messages)):
        part = rng.randrange(6)
        if part == 0:
            sig = bytearray(signatures[i])
            sig[rng.randrange(64)] ^= 1 << rng.randrange(8)
            signatures[i] = bytes(sig)
        elif part == 1:
            key = bytearray(keys[i])
            key[rng.randrange(32)] ^= 1 << rng.randrange(8)
            keys[i] = bytes(key)
        elif part == 2:
            message = bytearray(messages[i])
            message[rng.randrange(32)] ^= 1 << rng.randrange(8)
            messages[i] = bytes(message)


def _coincurve_verify(message: bytes, key: bytes, signature: bytes) -> bool:
    try:
        return coincurve.PublicKeyXOnly(key).verify(signature, message)
    except ValueError:  # not a curve point
        return False


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_agrees_with_coincurve_on_valid_and_corrupted_items(threads, batched):
    messages, keys, signatures, rng = _random_batch(400, seed=threads)
    _corrupt(messages, keys, signatures, rng)
    expected = [_coincurve_verify(m, k, s) for m, k, s in zip(messages, keys, signatures)]
    assert 100 < sum(expected) < 300  # both outcomes are well represented
    got = verify_batch(b"".join(messages), b"".join(keys), b"".join(signatures), threads,
                       batched)
    assert got.tolist() == expected


@pytest.mark.parametrize("threads", [1, 2])
def test_batched_finds_few_bad_signatures_among_many_groups(threads):
    """9,000 signatures span two groups of the batch path (at most 8,192 each); a few bad ones,
    at the edges and across the group boundary, are found and nothing else is refused."""
    messages, keys, signatures, _ = _random_batch(9000, seed=11)
    joined = [b"".join(messages), b"".join(keys)]
    assert verify_batch(*joined, b"".join(signatures), threads).all()
    bad = [0, 4499, 4500, 8191, 8192, 8999]
    for i in bad:
        signatures[i] = signatures[i][:40] + bytes([signatures[i][40] ^ 4]) + signatures[i][41:]
    got = verify_batch(*joined, b"".join(signatures), threads)
    assert np.flatnonzero(~got).tolist() == bad


def test_errors_that_cancel_without_weights_are_still_caught():
    """s1 + d and s2 - d: an unweighted sum of the two verification equations still holds when
    both signatures share a key, so only random weights tell these forgeries apart."""
    key = coincurve.PrivateKey()
    messages = [os.urandom(32) for _ in range(64)]
    signatures = [key.sign_schnorr(m, os.urandom(32)) for m in messages]
    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    for i, delta in ((10, 12345), (50, order - 12345)):
        s_value = (int.from_bytes(signatures[i][32:], "big") + delta) % order
        signatures[i] = signatures[i][:32] + s_value.to_bytes(32, "big")
    keys = key.public_key_xonly.format() * 64
    got = verify_batch(b"".join(messages), keys, b"".join(signatures), 1, True)
    assert np.flatnonzero(~got).tolist() == [10, 50]


def as_array(items, width):
    return np.frombuffer(b"".join(items), np.uint8).reshape(-1, width)


def test_accepts_arrays_and_empty_batches_and_refuses_bad_shapes():
    messages, keys, signatures, _ = _random_batch(3, seed=7)
    assert verify_batch(as_array(messages, 32), as_array(keys, 32),
                        as_array(signatures, 64), 2).tolist() == [True] * 3
    assert verify_batch(b"", b"", b"", 2).tolist() == []
    with pytest.raises(EncodingError, match="differ in count"):
        verify_batch(b"".join(messages), b"".join(keys[:2]), b"".join(signatures), 1)
    with pytest.raises(EncodingError, match="N x 64"):
        verify_batch(b"".join(messages), b"".join(keys), b"".join(signatures)[:-1], 1)


@pytest.mark.parametrize("distinct_keys", [1, 3, 500])
def test_batched_with_shared_and_distinct_keys(distinct_keys):
    """Signatures under one key share that key's point in the batch sum; with one key, a few
    keys, or a key each, a bad signature is still found alone, whoever else shares its key."""
    secrets = [coincurve.PrivateKey() for _ in range(distinct_keys)]
    messages = [os.urandom(32) for _ in range(500)]
    signers = [secrets[i % distinct_keys] for i in range(500)]
    signatures = [key.sign_schnorr(m, os.urandom(32)) for key, m in zip(signers, messages)]
    keys = b"".join(key.public_key_xonly.format() for key in signers)
    signatures[123] = signatures[124]  # another message's signature, often under the same key
    got = verify_batch(b"".join(messages), keys, b"".join(signatures), 2)
    assert np.flatnonzero(~got).tolist() == [123]
