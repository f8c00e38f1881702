"""A fragment sealed to a holder opens only for that holder, in its own chain, document, part
and index, and a holder's device file alone opens nothing.

Method: real keys and HPKE seal/open; every field of the context changed in turn, another
holder's key, one flipped byte; hypothesis for any fragment bytes and context; device files
written to disk, then opened with the right K, a wrong K and an edited field. A sealed fragment
is also opened by a second, hand-written HPKE base-mode receiver built only from the steps a
browser's WebCrypto has (X25519, HKDF-SHA256, AES-GCM), which first reproduces RFC 9180's
test vector A.1: so the format is plain RFC 9180 and the pages can open it the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hypothesis import given
from hypothesis import strategies as st

from tsunagi.core import keys
from tsunagi.errors import EncodingError, FragmentError, IdentityError, KeyFileError
from tsunagi.privacy.holders import (
    FRAGMENT_SUITE_NAME,
    DeviceFile,
    FragmentContext,
    HolderIdentity,
    HolderKeys,
    open_fragment,
    seal_fragment,
    wrapping_key,
)

HOLDER = HolderKeys.generate()
OTHER = HolderKeys.generate()
CONTEXT = FragmentContext(chain_id=7, document_id=b"d" * 32, part_id=2, holder_index=1)
SHARE = bytes(range(40))


def test_the_suite_is_one_webcrypto_has():
    assert FRAGMENT_SUITE_NAME == "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM"


# RFC 9180 A.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode, sequence 0.
A1 = {"skRm": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
      "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
      "enc": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
      "info": "4f6465206f6e2061204772656369616e2055726e",
      "shared_secret": "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
      "key": "4531685d41d65f03dc48f6b8302c05b0", "base_nonce": "56d890e5accaaf011cff4b7d",
      "aad": "436f756e742d30",
      "ct": "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea"
            "87e13c512a"}
KEM_SUITE = b"KEM" + bytes.fromhex("0020")
HPKE_SUITE = b"HPKE" + bytes.fromhex("0020" "0001" "0001")


def labeled_extract(salt: bytes, label: bytes, ikm: bytes, suite: bytes) -> bytes:
    return hmac.new(salt, b"HPKE-v1" + suite + label + ikm, hashlib.sha256).digest()


def labeled_expand(prk: bytes, label: bytes, info: bytes, length: int, suite: bytes) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled).derive(prk)


def webcrypto_open(private: bytes, enc: bytes, info: bytes, aad: bytes, ciphertext: bytes):
    """HPKE base-mode open of the first message, by the RFC's steps: (shared secret, key,
    nonce, plaintext)."""
    receiver = X25519PrivateKey.from_private_bytes(private)
    dh = receiver.exchange(X25519PublicKey.from_public_bytes(enc))
    recipient = receiver.public_key().public_bytes_raw()
    eae_prk = labeled_extract(b"", b"eae_prk", dh, KEM_SUITE)
    shared = labeled_expand(eae_prk, b"shared_secret", enc + recipient, 32, KEM_SUITE)
    context = b"\x00" + labeled_extract(b"", b"psk_id_hash", b"", HPKE_SUITE) \
        + labeled_extract(b"", b"info_hash", info, HPKE_SUITE)
    secret = labeled_extract(shared, b"secret", b"", HPKE_SUITE)
    key = labeled_expand(secret, b"key", context, 16, HPKE_SUITE)
    nonce = labeled_expand(secret, b"base_nonce", context, 12, HPKE_SUITE)
    return shared, key, nonce, AESGCM(key).decrypt(nonce, ciphertext, aad)


def test_the_webcrypto_steps_reproduce_rfc_9180_a1():
    shared, key, nonce, plaintext = webcrypto_open(
        *(bytes.fromhex(A1[name]) for name in ("skRm", "enc", "info", "aad", "ct")))
    assert X25519PrivateKey.from_private_bytes(bytes.fromhex(A1["skRm"])).public_key() \
        .public_bytes_raw().hex() == A1["pkRm"]
    assert (shared.hex(), key.hex(), nonce.hex()) == (A1["shared_secret"], A1["key"],
                                                        A1["base_nonce"])
    assert plaintext == b"Beauty is truth, truth beauty"


def test_a_sealed_fragment_is_plain_rfc_9180_that_the_webcrypto_steps_open():
    sealed = seal_fragment(SHARE, HOLDER.identity(), CONTEXT)
    info = b"tsunagi/fragment/1" + CONTEXT.to_bytes() + HOLDER.signing.public_key
    assert CONTEXT.to_bytes() == (7).to_bytes(4, "little") + b"d" * 32 \
        + (2).to_bytes(4, "little") + b"\x01"
    *_, plaintext = webcrypto_open(HOLDER.fragment.private_bytes_raw(), sealed[:32], info, b"",
                                   sealed[32:])
    assert plaintext == SHARE


def test_a_sealed_fragment_opens_for_its_holder_and_context():
    sealed = seal_fragment(SHARE, HOLDER.identity(), CONTEXT)
    assert SHARE not in sealed
    assert open_fragment(sealed, HOLDER, CONTEXT) == SHARE
    assert seal_fragment(SHARE, HOLDER.identity(), CONTEXT) != sealed  # a fresh key each time


@pytest.mark.parametrize("field, value", [("chain_id", 8), ("document_id", b"e" * 32),
                                          ("part_id", 3), ("holder_index", 2)])
def test_a_fragment_does_not_open_in_another_context(field, value):
    sealed = seal_fragment(SHARE, HOLDER.identity(), CONTEXT)
    other = FragmentContext(**{**CONTEXT.__dict__, field: value})
    with pytest.raises(FragmentError, match="another document's or holder's"):
        open_fragment(sealed, HOLDER, other)


def test_a_fragment_does_not_open_for_another_holder_or_when_changed():
    sealed = seal_fragment(SHARE, HOLDER.identity(), CONTEXT)
    with pytest.raises(FragmentError):
        open_fragment(sealed, OTHER, CONTEXT)
    for position in (0, 40, len(sealed) - 1):  # the encapsulated key, the body, the tag
        changed = bytearray(sealed)
        changed[position] ^= 1
        with pytest.raises(FragmentError):
            open_fragment(bytes(changed), HOLDER, CONTEXT)
    with pytest.raises(FragmentError, match="is not one"):
        open_fragment(sealed[:20], HOLDER, CONTEXT)


@given(st.binary(min_size=1, max_size=300), st.integers(0, 2**32 - 1),
       st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1), st.integers(1, 255))
def test_any_fragment_round_trips_and_binds_its_document(share, chain, document, part, index):
    context = FragmentContext(chain, document, part, index)
    sealed = seal_fragment(share, HOLDER.identity(), context)
    assert open_fragment(sealed, HOLDER, context) == share
    other = FragmentContext(chain, bytes([document[0] ^ 1]) + document[1:], part, index)
    with pytest.raises(FragmentError):
        open_fragment(sealed, HOLDER, other)


def test_an_identity_is_the_fragment_key_signed_by_the_signing_key():
    identity = HOLDER.identity()
    assert HolderIdentity.from_bytes(identity.to_bytes()) == identity
    assert identity.holder_id == HOLDER.signing.public_key.hex()
    # Another holder's fragment key under this holder's name: the signature does not hold.
    forged = HolderIdentity(identity.signing_key, OTHER.identity().fragment_key,
                            identity.signature)
    with pytest.raises(IdentityError, match="not signed by its own key"):
        forged.check()
    with pytest.raises(IdentityError):
        seal_fragment(SHARE, forged, CONTEXT)  # nothing is sealed to an unproven key
    with pytest.raises(EncodingError, match="128 bytes"):
        HolderIdentity.from_bytes(identity.to_bytes()[:100])


@pytest.mark.parametrize("kwargs, message", [
    ({"chain_id": -1}, "chain_id is a u32"), ({"part_id": 2**32}, "part_id is a u32"),
    ({"holder_index": 0}, "holder_index is 1 to 255"),
    ({"holder_index": 256}, "holder_index is 1 to 255"),
    ({"document_id": b"short"}, "document_id is 32 bytes")])
def test_a_bad_context_is_refused_with_what_to_fix(kwargs, message):
    with pytest.raises(EncodingError, match=message):
        FragmentContext(**{**CONTEXT.__dict__, **kwargs})


def test_an_empty_or_huge_fragment_is_refused():
    for share in (b"", b"x" * 5000):
        with pytest.raises(EncodingError, match="a fragment is 1 to"):
            seal_fragment(share, HOLDER.identity(), CONTEXT)


def _device_file(tmp_path, key: bytes):
    device = keys.PrivateKey.generate()
    made = DeviceFile.create(HOLDER, device, key, b"s" * 32)
    return made, made.save(tmp_path / "holder.json")


def test_a_device_file_opens_with_its_key_and_keeps_no_secret_in_the_clear(tmp_path):
    key = wrapping_key(os.urandom(32), os.urandom(32), HOLDER.signing.public_key)
    made, path = _device_file(tmp_path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    for secret in (HOLDER.signing.to_bytes(), HOLDER.fragment.private_bytes_raw()):
        assert secret.hex() not in text
    loaded = DeviceFile.load(path)
    assert loaded == made
    opened = loaded.unwrap(key)
    assert opened.to_bytes() == HOLDER.to_bytes()


def test_a_device_file_alone_opens_nothing(tmp_path):
    """Whoever copies the file knows the PIN's Argon2id output at best; without the service's
    secret for the holder, K is out of reach, and every other K fails."""
    pin_key, secret = os.urandom(32), os.urandom(32)
    _, path = _device_file(tmp_path, wrapping_key(pin_key, secret, HOLDER.signing.public_key))
    loaded = DeviceFile.load(path)
    for guess in (wrapping_key(pin_key, os.urandom(32), HOLDER.signing.public_key),
                  wrapping_key(pin_key, b"\0" * 32, HOLDER.signing.public_key), pin_key):
        with pytest.raises(KeyFileError, match="does not open with the key the service gave"):
            loaded.unwrap(guess)


def test_an_edited_or_damaged_device_file_is_refused(tmp_path):
    key = os.urandom(32)
    _, path = _device_file(tmp_path, key)
    document = json.loads(path.read_text())
    document["service_key"] = "00" * 32  # point the device at another service
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="does not open"):
        DeviceFile.load(path).unwrap(key)
    path.write_text("{not json")
    with pytest.raises(KeyFileError, match="cannot be read as a holder's device file"):
        DeviceFile.load(path)
    path.write_text(json.dumps({"format": "tsunagi-key", "version": 1}))
    with pytest.raises(KeyFileError, match="not a tsunagi-holder-device file"):
        DeviceFile.load(path)
