"""Keys, signatures, addresses and key files give the bytes their standards require and refuse
what they must.

Method: known answers from outside (BIP340's test-vectors.csv for signing and verification,
BIP350's bech32m vectors, hashlib for txids), every one-character typo and swapped pair of an
address, hypothesis for "verify never raises", and key files on disk that are tampered with
field by field.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsunagi.core import address, keyfile, records
from tsunagi.core.keys import PrivateKey, is_public_key, txid, verify
from tsunagi.errors import EncodingError, KeyFileError

# BIP340 test vectors from bitcoin/bips bip-0340/test-vectors.csv at commit
# 7e8b5dfc304c0e3cd646b54bc49e23fad692d11e (the final BIP340, "has_even_y"), one row per
# vector with the columns (index, secret key, public key, aux_rand, message, signature,
# verification result, comment); long fields are split over lines only to fit 100
# columns. Vectors 0-3 carry a secret key and aux_rand, so they are signing vectors too.
BIP340_VECTORS = [
    (0, "0000000000000000000000000000000000000000000000000000000000000003",
     "F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA8215"
     "25F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0",
     True, ""),
    (1, "B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFEF",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "0000000000000000000000000000000000000000000000000000000000000001",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE3341"
     "8906D11AC976ABCCB20B091292BFF4EA897EFCB639EA871CFA95F6DE339E4B0A",
     True, ""),
    (2, "C90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B14E5C9",
     "DD308AFEC5777E13121FA72B9CC1B7CC0139715309B086C960E18FD969774EB8",
     "C87AA53824B4D7AE2EB035A2B5BBBCCC080E76CDC6D1692C4B0B62D798E6D906",
     "7E2D58D8B3BCDF1ABADEC7829054F90DDA9805AAB56C77333024B9D0A508B75C",
     "5831AAEED7B44BB74E5EAB94BA9D4294C49BCF2A60728D8B4C200F50DD313C1B"
     "AB745879A5AD954A72C45A91C3A51D3C7ADEA98D82F8481E0E1E03674A6F3FB7",
     True, ""),
    (3, "0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710",
     "25D1DFF95105F5253C4022F628A996AD3A0D95FBF21D468A1B33F8C160D8F517",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
     "7EB0509757E246F19449885651611CB965ECC1A187DD51B64FDA1EDC9637D5EC"
     "97582B9CB13DB3933705B32BA982AF5AF25FD78881EBB32771FC5922EFC66EA3",
     True,
     'test fails if msg is reduced modulo p or n'),
    (4, "",
     "D69C3509BB99E412E68B0FE8544E72837DFA30746D8BE2AA65975F29D22DC7B9",
     "",
     "4DF3C3F68FCC83B27E9D42C90431A72499F17875C81A599B566C9889B9696703",
     "00000000000000000000003B78CE563F89A0ED9414F5AA28AD0D96D6795F9C63"
     "76AFB1548AF603B3EB45C9F8207DEE1060CB71C04E80F593060B07D28308D7F4",
     True, ""),
    (5, "",
     "EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B",
     False,
     'public key not on the curve'),
    (6, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "FFF97BD5755EEEA420453A14355235D382F6472F8568A18B2F057A1460297556"
     "3CC27944640AC607CD107AE10923D9EF7A73C643E166BE5EBEAFA34B1AC553E2",
     False,
     'has_even_y(R) is false'),
    (7, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "1FA62E331EDBC21C394792D2AB1100A7B432B013DF3F6FF4F99FCB33E0E1515F"
     "28890B3EDB6E7189B630448B515CE4F8622A954CFE545735AAEA5134FCCDB2BD",
     False,
     'negated message'),
    (8, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "961764B3AA9B2FFCB6EF947B6887A226E8D7C93E00C5ED0C1834FF0D0C2E6DA6",
     False,
     'negated s value'),
    (9, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "0000000000000000000000000000000000000000000000000000000000000000"
     "123DDA8328AF9C23A94C1FEECFD123BA4FB73476F0D594DCB65C6425BD186051",
     False,
     'sG - eP is infinite. Test fails in single verification if has_even_y(inf) is '
     'defined as true and x(inf) as 0'),
    (10, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "0000000000000000000000000000000000000000000000000000000000000001"
     "7615FBAF5AE28864013C099742DEADB4DBA87F11AC6754F93780D5A1837CF197",
     False,
     'sG - eP is infinite. Test fails in single verification if has_even_y(inf) is '
     'defined as true and x(inf) as 1'),
    (11, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "4A298DACAE57395A15D0795DDBFD1DCB564DA82B0F269BC70A74F8220429BA1D"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B",
     False,
     'sig[0:32] is not an X coordinate on the curve'),
    (12, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B",
     False,
     'sig[0:32] is equal to field size'),
    (13, "",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
     False,
     'sig[32:64] is equal to curve order'),
    (14, "",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC30",
     "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769"
     "69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B",
     False,
     'public key is not a valid X coordinate because it exceeds the field size'),
]

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.mark.parametrize("vector", BIP340_VECTORS, ids=lambda vector: f"bip340-{vector[0]}")
def test_bip340_verification_vectors(vector):
    _, _, public_key, _, message, signature, expected, _ = vector
    assert verify(bytes.fromhex(public_key), bytes.fromhex(message),
                  bytes.fromhex(signature)) is expected


@pytest.mark.parametrize("vector", [vector for vector in BIP340_VECTORS if vector[1]],
                         ids=lambda vector: f"bip340-{vector[0]}")
def test_bip340_signing_vectors(vector):
    _, secret, public_key, aux_rand, message, signature, _, _ = vector
    key = PrivateKey.from_bytes(bytes.fromhex(secret))
    assert key.public_key == bytes.fromhex(public_key)
    assert key.sign(bytes.fromhex(message), aux_rand=bytes.fromhex(aux_rand)) == \
        bytes.fromhex(signature)


def test_generated_key_round_trips_and_signs():
    key = PrivateKey.generate()
    again = PrivateKey.from_bytes(key.to_bytes())
    assert again.public_key == key.public_key and len(key.public_key) == 32
    message = hashlib.sha256(b"pay 5").digest()
    signature = key.sign(message)
    assert verify(key.public_key, message, signature)
    assert not verify(key.public_key, hashlib.sha256(b"pay 6").digest(), signature)
    assert not verify(PrivateKey.generate().public_key, message, signature)
    assert key.to_bytes().hex() not in repr(key)  # a repr in a log never leaks the secret


@pytest.mark.parametrize("secret", [bytes(32), SECP256K1_ORDER.to_bytes(32, "big"),
                                    b"\xff" * 32, b"\x01" * 31, 5])
def test_invalid_secrets_are_refused(secret):
    with pytest.raises(EncodingError):
        PrivateKey.from_bytes(secret)


def test_sign_refuses_a_message_that_is_not_a_32_byte_hash():
    key = PrivateKey.generate()
    with pytest.raises(EncodingError, match="32-byte hash"):
        key.sign(b"short")
    with pytest.raises(EncodingError, match="aux_rand"):
        key.sign(bytes(32), aux_rand=b"\0" * 31)


def test_sign_many_gives_a_valid_fresh_signature_of_each_message():
    key = PrivateKey.generate()
    messages = [hashlib.sha256(b"pay %d" % n).digest() for n in range(40)] + \
        [hashlib.sha256(b"pay 0").digest()]
    signatures = key.sign_many(messages)
    assert len(signatures) == len(messages)
    assert all(verify(key.public_key, message, signature)
               for message, signature in zip(messages, signatures))
    assert signatures[0] != signatures[-1]  # the same message, fresh randomness each time
    assert not verify(key.public_key, messages[1], signatures[0])
    assert key.sign_many([]) == []
    with pytest.raises(EncodingError, match="message 1 is 5 bytes"):
        key.sign_many([bytes(32), b"short"])


def test_record_signature_is_over_the_txid():
    key = PrivateKey.generate()
    record = records.transfer(7, 1, 1, 2, 500)
    expected_txid = hashlib.sha256(hashlib.sha256(record).digest()).digest()
    assert txid(record) == expected_txid
    signature = key.sign_record(record)
    assert verify(key.public_key, expected_txid, signature)
    with pytest.raises(EncodingError, match="128 bytes"):
        txid(record[:-1])


junk = st.one_of(st.binary(max_size=80), st.integers(), st.none(), st.text(max_size=40),
                 st.lists(st.integers(0, 255), max_size=64))


@given(public_key=junk, message=junk, signature=junk)
def test_verify_answers_false_and_never_raises_on_junk(public_key, message, signature):
    assert verify(public_key, message, signature) is False


@given(st.binary(min_size=32, max_size=32))
def test_is_public_key_agrees_with_verification(candidate):
    # A key that parses can verify something; one that does not parse verifies nothing.
    if not is_public_key(candidate):
        assert not verify(candidate, bytes(32), bytes(64))


# BIP350's bech32m vectors, from bitcoin/bips bip-0350.mediawiki ("Test vectors for Bech32m").
BECH32M_VALID = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]
BECH32M_INVALID = [
    ("\x201xj0phk", "outside"),  # HRP character out of range
    ("\x7f1g6xzxy", "outside"),
    ("\x801vctc34", "outside"),
    ("an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber1"
     "1d6pts4", "at most 90"),  # overall max length exceeded
    ("qyrz8wqd2c9m", "missing"),  # no separator character
    ("1qyrz8wqd2c9m", "missing"),  # empty HRP
    ("y1b0jsk6g", "cannot appear"),  # invalid data character
    ("lt1igcx5c0", "cannot appear"),
    ("in1muywd", "too short"),  # too short checksum
    ("mm1crxm3i", "cannot appear"),  # invalid character in checksum
    ("au1s5cgom", "cannot appear"),
    ("M1VUXWEZ", "does not match"),  # checksum calculated with uppercase form of HRP
    ("16plkw9", "missing"),  # empty HRP
    ("1p2gdwpf", "missing"),
]


@pytest.mark.parametrize("text", BECH32M_VALID)
def test_bip350_valid_bech32m_strings(text):
    hrp, values = address.bech32m_decode(text)
    assert address.bech32m_encode(hrp, values) == text.lower()


@pytest.mark.parametrize(("text", "reason"), BECH32M_INVALID)
def test_bip350_invalid_bech32m_strings(text, reason):
    with pytest.raises(EncodingError, match=reason):
        address.bech32m_decode(text)


def test_bip350_segwit_vectors_bech32_is_refused_and_bech32m_program_decodes():
    # A valid bech32 (BIP173) address: the checksum constant differs, and the error says so.
    with pytest.raises(EncodingError, match="bech32 \\(BIP173\\)"):
        address.bech32m_decode("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4")
    with pytest.raises(EncodingError, match="bech32 \\(BIP173\\)"):  # "Bech32 instead of m"
        address.bech32m_decode(
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd")
    # A v1 program: the 32 bytes after the version are secp256k1's generator x coordinate.
    hrp, values = address.bech32m_decode(
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0")
    assert (hrp, values[0]) == ("bc", 1)
    assert bytes(address._convert_bits(values[1:], 5, 8, pad=False)).hex() == \
        "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"


def test_address_round_trip_and_prefixes():
    key = PrivateKey.generate().public_key
    text = address.encode_address(key)
    assert text.startswith("tsu1") and len(text) == 62
    assert address.decode_address(text) == key
    assert address.decode_address(text.upper()) == key
    other = address.encode_address(key, "tsutest")
    assert address.decode_address(other, "tsutest") == key
    with pytest.raises(EncodingError, match="prefix is 'tsutest', this chain uses 'tsu'"):
        address.decode_address(other)
    with pytest.raises(EncodingError, match="32-byte key"):
        address.encode_address(key[:31])


def test_every_single_typo_and_swapped_pair_is_refused():
    key = bytes.fromhex("a3" * 16 + "5c" * 16)
    text = address.encode_address(key)
    data_start = text.rfind("1") + 1
    for position in range(data_start, len(text)):
        for character in address.CHARSET:
            if character != text[position]:
                typo = text[:position] + character + text[position + 1:]
                with pytest.raises(EncodingError, match="checksum does not match"):
                    address.decode_address(typo)
    for position in range(len(text) - 1):
        if text[position] != text[position + 1]:
            swapped = (text[:position] + text[position + 1] + text[position]
                       + text[position + 2:])
            with pytest.raises(EncodingError):
                address.decode_address(swapped)


def test_an_address_that_does_not_hold_32_bytes_is_refused():
    short = address.bech32m_encode("tsu", address._convert_bits(bytes(20), 8, 5, pad=True))
    with pytest.raises(EncodingError, match="holds 20 bytes"):
        address.decode_address(short)


FAST_SCRYPT = 2**10  # tests only: keeps a save and a load to a few milliseconds


def test_key_file_round_trip_is_private_and_keeps_the_secret_out(tmp_path):
    key = PrivateKey.generate()
    path = keyfile.save_key(tmp_path / "alice.key", key, "correct horse",
                            scrypt_n=FAST_SCRYPT)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    document = json.loads(text)
    assert document["public_key"] == key.public_key.hex()
    assert address.decode_address(document["address"]) == key.public_key
    assert document["kdf"]["n"] == FAST_SCRYPT and document["version"] == 1
    assert key.to_bytes().hex() not in text
    assert keyfile.load_key(path, "correct horse").to_bytes() == key.to_bytes()
    assert os.listdir(tmp_path) == ["alice.key"]  # no temporary file left behind


def test_key_file_passphrase_is_unicode_normalised(tmp_path):
    key = PrivateKey.generate()
    path = keyfile.save_key(tmp_path / "k", key, "caf\u00e9", scrypt_n=FAST_SCRYPT)
    assert keyfile.load_key(path, "cafe\u0301").public_key == key.public_key  # NFD form


def test_wrong_passphrase_says_what_to_do(tmp_path):
    path = keyfile.save_key(tmp_path / "k", PrivateKey.generate(), "right",
                            scrypt_n=FAST_SCRYPT)
    with pytest.raises(KeyFileError, match="passphrase is wrong.*check the passphrase"):
        keyfile.load_key(path, "wrong")


def test_existing_file_is_not_overwritten_unless_asked(tmp_path):
    first, second = PrivateKey.generate(), PrivateKey.generate()
    path = keyfile.save_key(tmp_path / "k", first, "pw", scrypt_n=FAST_SCRYPT)
    with pytest.raises(KeyFileError, match="exists"):
        keyfile.save_key(path, second, "pw", scrypt_n=FAST_SCRYPT)
    assert keyfile.load_key(path, "pw").public_key == first.public_key
    keyfile.save_key(path, second, "pw", scrypt_n=FAST_SCRYPT, overwrite=True)
    assert keyfile.load_key(path, "pw").public_key == second.public_key
    assert sorted(os.listdir(tmp_path)) == ["k"]


def _tamper(path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _flip_hex(text: str) -> str:
    return ("1" if text[0] == "0" else "0") + text[1:]


TAMPERINGS = {
    "ciphertext": lambda d: d.update(ciphertext=_flip_hex(d["ciphertext"])),
    "salt": lambda d: d["kdf"].update(salt=_flip_hex(d["kdf"]["salt"])),
    "nonce": lambda d: d["cipher"].update(nonce=_flip_hex(d["cipher"]["nonce"])),
    "scrypt n": lambda d: d["kdf"].update(n=2 * d["kdf"]["n"]),
    "extra field": lambda d: d.update(note="hello"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampered_sealed_fields_fail_to_open(tmp_path, name):
    path = keyfile.save_key(tmp_path / "k", PrivateKey.generate(), "pw", scrypt_n=FAST_SCRYPT)
    _tamper(path, TAMPERINGS[name])
    with pytest.raises(KeyFileError, match="restore the file from a backup"):
        keyfile.load_key(path, "pw")


def test_swapped_public_key_or_address_is_caught(tmp_path):
    path = keyfile.save_key(tmp_path / "k", PrivateKey.generate(), "pw", scrypt_n=FAST_SCRYPT)
    stranger = PrivateKey.generate().public_key
    _tamper(path, lambda d: d.update(public_key=stranger.hex()))
    with pytest.raises(KeyFileError, match="address does not belong"):
        keyfile.load_key(path, "pw")
    _tamper(path, lambda d: d.update(address=address.encode_address(stranger)))
    with pytest.raises(KeyFileError, match="passphrase is wrong, or the file was altered"):
        keyfile.load_key(path, "pw")


@pytest.mark.parametrize(("content", "reason"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a tsunagi key file"),
    (b'{"format": "tsunagi-key", "version": 9}', "version 9"),
    (b'{"format": "tsunagi-key", "version": 1}', "not a valid tsunagi key file"),
    (b"\xff\xfe\x00", "not JSON"),
])
def test_files_that_are_not_key_files_are_refused(tmp_path, content, reason):
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=reason):
        keyfile.load_key(path, "pw")


def test_hostile_scrypt_cost_is_refused_before_any_work(tmp_path):
    path = keyfile.save_key(tmp_path / "k", PrivateKey.generate(), "pw", scrypt_n=FAST_SCRYPT)
    _tamper(path, lambda d: d["kdf"].update(n=2**30))
    with pytest.raises(KeyFileError, match="power of two"):
        keyfile.load_key(path, "pw")


def test_missing_file_and_empty_passphrase(tmp_path):
    with pytest.raises(KeyFileError, match="no key file"):
        keyfile.load_key(tmp_path / "absent", "pw")
    with pytest.raises(KeyFileError, match="non-empty passphrase"):
        keyfile.save_key(tmp_path / "k", PrivateKey.generate(), "", scrypt_n=FAST_SCRYPT)
