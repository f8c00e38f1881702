"""The service's PIN store lets a right PIN give K, counts every wrong one on disk before it
answers, locks a holder after pin_attempts_max wrong PINs in a row until an administrator or
enough fellow holders sign its unlock, and never holds a holder's private key.

Method: a real store in a temporary directory with cheap Argon2id costs (the default is
OWASP's, checked apart); the store is closed and opened again to stand for a restart, and a
crash in the middle of a check is simulated by making Argon2id raise once the attempt is
counted. Unlocks are signed with real BIP340 keys.
"""

from __future__ import annotations

import os

import pytest

from tsunagi.core import keys
from tsunagi.errors import (
    ConfigError,
    CorruptLogError,
    EncodingError,
    HolderLockedError,
    LockedError,
    NotFoundError,
    NotHolderError,
    PinError,
    UnlockError,
)
from tsunagi.privacy import limits
from tsunagi.privacy.holders import DeviceFile, HolderKeys
from tsunagi.privacy.pins import Argon2Params, PinStore, unlock_statement

CHEAP = Argon2Params(memory_kib=8, iterations=1, lanes=1)
SERVICE = keys.PrivateKey.generate()
ADMIN = keys.PrivateKey.generate()
PIN = "482916"


def open_store(directory) -> PinStore:
    return PinStore(directory, SERVICE.public_key, admins=[ADMIN.public_key], argon2=CHEAP)


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "pins") as opened:
        yield opened


def enrol(store: PinStore, pin: str = PIN) -> tuple[HolderKeys, bytes]:
    holder = HolderKeys.generate()
    key = store.enroll(holder.identity(), keys.PrivateKey.generate().public_key, pin)
    return holder, key


def lock_out(store: PinStore, holder: HolderKeys) -> None:
    for _ in range(limits.pin_attempts_max - 1):
        with pytest.raises(PinError):
            store.unlock(holder.signing.public_key, "000000")
    with pytest.raises(HolderLockedError):
        store.unlock(holder.signing.public_key, "000000")


def test_the_default_argon2id_costs_are_owasps():
    assert Argon2Params() == Argon2Params(memory_kib=19_456, iterations=2, lanes=1)
    for bad in (Argon2Params(memory_kib=4), Argon2Params(iterations=0), Argon2Params(lanes=9)):
        with pytest.raises(ConfigError, match="Argon2id"):
            bad.check()


def test_the_right_pin_gives_the_key_that_opens_the_device_file(store, tmp_path):
    holder, key = enrol(store)
    device = DeviceFile.create(holder, keys.PrivateKey.generate(), key, SERVICE.public_key)
    device.save(tmp_path / "device.json")
    again = store.unlock(holder.signing.public_key, PIN)
    assert again == key
    opened = DeviceFile.load(tmp_path / "device.json").unwrap(again)
    assert opened.to_bytes() == holder.to_bytes()


def test_a_wrong_pin_is_counted_and_names_the_tries_left(store):
    holder, _ = enrol(store)
    with pytest.raises(PinError, match=f"{limits.pin_attempts_max - 1} tries left") as wrong:
        store.unlock(holder.signing.public_key, "111111")
    assert wrong.value.tries_left == limits.pin_attempts_max - 1
    assert store.status(holder.signing.public_key).failures == 1
    store.unlock(holder.signing.public_key, PIN)  # a right PIN resets the count
    assert store.status(holder.signing.public_key).failures == 0


def test_n_wrong_pins_in_a_row_lock_and_then_even_the_right_pin_is_refused(store):
    holder, _ = enrol(store)
    lock_out(store, holder)
    status = store.status(holder.signing.public_key)
    assert status.locked and status.tries_left == 0 and status.lock_epoch == 1
    with pytest.raises(HolderLockedError, match="an administrator .* fellow holders"):
        store.unlock(holder.signing.public_key, PIN)


def test_the_count_survives_a_restart(tmp_path):
    store = open_store(tmp_path / "pins")
    holder, _ = enrol(store)
    for _ in range(limits.pin_attempts_max - 1):
        with pytest.raises(PinError):
            store.unlock(holder.signing.public_key, "999999")
        store.close()
        store = open_store(tmp_path / "pins")  # a restart between every guess
    with pytest.raises(HolderLockedError):
        store.unlock(holder.signing.public_key, "999999")
    store.close()
    with open_store(tmp_path / "pins") as reopened:
        assert reopened.status(holder.signing.public_key).locked
        with pytest.raises(HolderLockedError):
            reopened.unlock(holder.signing.public_key, PIN)


def test_an_attempt_is_on_disk_before_the_pin_is_checked(tmp_path, monkeypatch):
    """A crash (or a cut connection) while the PIN is checked still leaves the guess counted."""
    store = open_store(tmp_path / "pins")
    holder, _ = enrol(store)

    def crash(self, pin, salt):
        raise SystemExit("the service dies in the middle of the check")

    monkeypatch.setattr(Argon2Params, "derive", crash)
    with pytest.raises(SystemExit):
        store.unlock(holder.signing.public_key, PIN)
    store.close()
    monkeypatch.undo()
    with open_store(tmp_path / "pins") as reopened:
        assert reopened.status(holder.signing.public_key).failures == 1


def test_an_administrator_unlocks_for_this_lockout_only(store):
    holder, _ = enrol(store)
    lock_out(store, holder)
    statement = unlock_statement(SERVICE.public_key, holder.signing.public_key, 1)
    stranger = keys.PrivateKey.generate()
    with pytest.raises(UnlockError, match="is not an administrator"):
        store.admin_unlock(holder.signing.public_key, stranger.public_key,
                           stranger.sign(statement))
    with pytest.raises(UnlockError, match="does not verify"):
        store.admin_unlock(holder.signing.public_key, ADMIN.public_key,
                           ADMIN.sign(unlock_statement(SERVICE.public_key,
                                                       holder.signing.public_key, 0)))
    first_unlock = ADMIN.sign(statement)
    store.admin_unlock(holder.signing.public_key, ADMIN.public_key, first_unlock)
    assert not store.status(holder.signing.public_key).locked
    assert store.unlock(holder.signing.public_key, PIN)
    lock_out(store, holder)  # a second lockout: the first unlock does not replay
    with pytest.raises(UnlockError, match="at lockout 2"):
        store.admin_unlock(holder.signing.public_key, ADMIN.public_key, first_unlock)


def test_k_fellow_holders_unlock_and_fewer_or_strangers_do_not(store):
    holder, _ = enrol(store)
    fellows = [keys.PrivateKey.generate() for _ in range(3)]
    fellow_keys = [holder.signing.public_key] + [fellow.public_key for fellow in fellows]
    lock_out(store, holder)
    statement = unlock_statement(SERVICE.public_key, holder.signing.public_key, 1)
    signed = {fellow.public_key: fellow.sign(statement) for fellow in fellows[:2]}
    with pytest.raises(UnlockError, match="1 fellow holders signed .* 2 must"):
        store.holders_unlock(holder.signing.public_key, fellow_keys, 2,
                             dict(list(signed.items())[:1]))
    own = {holder.signing.public_key: holder.signing.sign(statement)}  # no self-rescue
    with pytest.raises(NotHolderError, match="not a fellow holder"):
        store.holders_unlock(holder.signing.public_key, fellow_keys, 1, own)
    stranger = keys.PrivateKey.generate()
    with pytest.raises(NotHolderError):
        store.holders_unlock(holder.signing.public_key, fellow_keys, 2,
                             signed | {stranger.public_key: stranger.sign(statement)})
    forged = {fellows[0].public_key: signed[fellows[0].public_key],
              fellows[1].public_key: fellows[2].sign(statement)}  # fellow 1's name, 2's key
    with pytest.raises(UnlockError, match="does not verify"):
        store.holders_unlock(holder.signing.public_key, fellow_keys, 2, forged)
    assert store.status(holder.signing.public_key).locked
    store.holders_unlock(holder.signing.public_key, fellow_keys, 2, signed)
    assert not store.status(holder.signing.public_key).locked
    assert store.unlock(holder.signing.public_key, PIN)


def test_an_unlocked_holder_has_nothing_to_unlock(store):
    holder, _ = enrol(store)
    with pytest.raises(UnlockError, match="is not locked"):
        store.admin_unlock(holder.signing.public_key, ADMIN.public_key, b"\0" * 64)


def test_a_pin_change_needs_the_old_pin_and_gives_a_new_key(store):
    holder, key = enrol(store)
    with pytest.raises(PinError):
        store.change_pin(holder.signing.public_key, "000000", "135790")
    old, new = store.change_pin(holder.signing.public_key, PIN, "135790")
    assert old == key and new != key
    assert store.unlock(holder.signing.public_key, "135790") == new
    with pytest.raises(PinError):
        store.unlock(holder.signing.public_key, PIN)


def test_the_store_holds_no_private_key_and_no_pin(store, tmp_path):
    holder, key = enrol(store)
    files = b"".join(path.read_bytes() for path in (tmp_path / "pins").rglob("*.json"))
    for secret in (holder.signing.to_bytes(), holder.fragment.private_bytes_raw(), key):
        assert secret.hex().encode() not in files
    assert PIN.encode() not in files


def test_bad_input_is_refused_with_what_to_do(store):
    holder, _ = enrol(store)
    with pytest.raises(EncodingError, match="4 to 64 characters"):
        store.unlock(holder.signing.public_key, "12")
    assert store.status(holder.signing.public_key).failures == 0  # never a valid PIN: uncounted
    with pytest.raises(NotFoundError, match="not enrolled"):
        store.unlock(os.urandom(32), PIN)
    with pytest.raises(ConfigError, match="enrolled already"):
        store.enroll(holder.identity(), keys.PrivateKey.generate().public_key, PIN)


def test_one_process_at_a_time_and_a_damaged_record_stops_the_start(store, tmp_path):
    with pytest.raises(LockedError, match="another process has the PIN store"):
        open_store(tmp_path / "pins")
    holder, _ = enrol(store)
    store.close()
    path = tmp_path / "pins" / "holders" / f"{holder.signing.public_key.hex()}.json"
    path.write_text(path.read_text()[:40])
    with pytest.raises(CorruptLogError, match="is damaged"):
        open_store(tmp_path / "pins")
