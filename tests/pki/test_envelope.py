"""The secrets store's envelope, pure: the stored format pinned (a value sealed by this labd
opens in the next), every binding of the associated data, each refusal, and where the
key-encryption key comes from."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from lab.errors import ConfigError
from lab.labd.secrets.keys import key_encryption_key, previous_keys
from lab.pki.envelope import (
    KeyEncryptionKey,
    WrongSecretsKey,
    derive_kek,
    new_data_key,
    open_value,
    seal_value,
    unwrap_data_key,
    wrap_data_key,
)

KEY = bytes(range(32))


def _blob(key: bytes, plain: bytes, aad: bytes, nonce: bytes = b"n" * 12) -> str:
    return "v1:" + base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plain, aad)).decode()


def test_the_stored_format_is_pinned() -> None:
    """v1: + base64(12-byte nonce || ciphertext || tag), the associated data as documented."""
    assert (
        open_value(KEY, "k1", "cluster/a/token", _blob(KEY, b"s", b"value\0k1\0cluster/a/token"))
        == b"s"
    )
    assert (
        unwrap_data_key(
            derive_kek(b"m"), "k1", _blob(derive_kek(b"m").secret, KEY, b"data key\0k1")
        )
        == KEY
    )
    sealed = seal_value(KEY, "k1", "n", b"plain")
    raw = base64.b64decode(sealed.removeprefix("v1:"), validate=True)
    assert sealed.startswith("v1:") and len(raw) == 12 + len(b"plain") + 16
    assert AESGCM(KEY).decrypt(raw[:12], raw[12:], b"value\0k1\0n") == b"plain"
    kek = derive_kek(b"m")
    wrapped = base64.b64decode(wrap_data_key(kek, "k1", KEY).removeprefix("v1:"))
    assert AESGCM(kek.secret).decrypt(wrapped[:12], wrapped[12:], b"data key\0k1") == KEY


def test_the_kek_derivation_and_its_id_are_pinned() -> None:
    expected = Scrypt(salt=b"labctl secrets key-encryption key v1", length=32, n=2**15, r=8, p=1)
    kek = derive_kek(b"material")
    assert kek.secret == expected.derive(b"material")
    label = b"labctl secrets kek id"
    assert kek.kek_id == hmac.new(kek.secret, label, hashlib.sha256).hexdigest()[:16]
    assert repr(kek) == f"KeyEncryptionKey(kek_id={kek.kek_id})"
    assert kek.secret.hex() not in repr(kek)
    assert derive_kek(b"other").kek_id != kek.kek_id
    with pytest.raises(ConfigError) as caught:
        derive_kek(b"")
    assert str(caught.value) == "the secrets key material must not be empty"


def test_each_seal_has_its_own_nonce_and_data_keys_are_random() -> None:
    assert seal_value(KEY, "k", "n", b"v") != seal_value(KEY, "k", "n", b"v")
    assert len(new_data_key()) == 32 and new_data_key() != new_data_key()


def test_a_value_opens_only_under_its_key_id_name_and_data_key() -> None:
    sealed = seal_value(KEY, "k1", "app/x/1/values", b"v")
    assert open_value(KEY, "k1", "app/x/1/values", sealed) == b"v"
    for key, key_id, name in [
        (os.urandom(32), "k1", "app/x/1/values"),
        (KEY, "k2", "app/x/1/values"),
        (KEY, "k1", "app/x/1/value"),
        (KEY, "k1\0app", "x/1/values"),
    ]:
        with pytest.raises(WrongSecretsKey) as caught:
            open_value(key, key_id, name, sealed)
        assert str(caught.value) == (
            f"secret {name!r} does not open:"
            " the stored value was altered or belongs to another name"
        )
        assert caught.value.code == "wrong_secrets_key"


def test_a_data_key_opens_only_under_its_kek_and_id() -> None:
    kek = derive_kek(b"m")
    wrapped = wrap_data_key(kek, "k1", KEY)
    assert unwrap_data_key(kek, "k1", wrapped) == KEY
    for other, key_id in [(derive_kek(b"n"), "k1"), (kek, "k2")]:
        with pytest.raises(WrongSecretsKey) as caught:
            unwrap_data_key(other, key_id, wrapped)
        assert str(caught.value) == (
            f"data key {key_id} does not open: wrong key-encryption key"
            " (LABD_SECRETS_KEY_FILE or the CA passphrase changed?)"
        )


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        ("v2:AAAA", "is in an unknown format"),
        ("AAAA", "is in an unknown format"),
        ("v1:@@@@", "is not valid base64"),
        ("v1:AAA", "is not valid base64"),
        ("v1:", "does not open"),
        ("v1:" + base64.b64encode(b"n" * 12).decode(), "does not open"),
        ("v1:" + base64.b64encode(b"n" * 27).decode(), "does not open"),
    ],
)
def test_a_damaged_blob_is_refused(blob: str, why: str) -> None:
    with pytest.raises(WrongSecretsKey, match=f"^secret 'n' {why}"):
        open_value(KEY, "k", "n", blob)


def test_a_bit_flipped_anywhere_is_refused() -> None:
    raw = bytearray(base64.b64decode(seal_value(KEY, "k", "n", b"value").removeprefix("v1:")))
    for index in (0, 11, 12, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[index] ^= 1
        with pytest.raises(WrongSecretsKey):
            open_value(KEY, "k", "n", "v1:" + base64.b64encode(bytes(flipped)).decode())


def _key_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_the_kek_comes_from_the_key_file_else_the_ca_passphrase(tmp_path: Path) -> None:
    data = b"k" * 32
    from_file = key_encryption_key(str(_key_file(tmp_path / "key", data)), b"passphrase")
    assert from_file == derive_kek(b"labctl-secrets-key-file\0" + data)
    from_passphrase = key_encryption_key("", b"passphrase")
    assert from_passphrase == derive_kek(b"labctl-secrets\0passphrase")
    assert from_file != from_passphrase
    with pytest.raises(ConfigError, match="expected at least 32"):
        key_encryption_key(str(_key_file(tmp_path / "short", b"k" * 31)), b"passphrase")


def test_previous_keys_try_the_file_as_a_key_file_and_as_a_passphrase(tmp_path: Path) -> None:
    typed = _key_file(tmp_path / "old", b"p" * 32 + b"\n")
    keys = previous_keys(typed)
    as_file = {derive_kek(b"labctl-secrets-key-file\0" + c) for c in (b"p" * 32 + b"\n", b"p" * 32)}
    as_passphrase = {derive_kek(b"labctl-secrets\0" + c) for c in (b"p" * 32 + b"\n", b"p" * 32)}
    assert len(keys) == 4 and set(keys) == as_file | as_passphrase
    # a short file is a passphrase only; a blank one is nothing
    short = previous_keys(_key_file(tmp_path / "short", b"p" * 29 + b"\r\n"))
    assert set(short) == {
        derive_kek(b"labctl-secrets\0" + c) for c in (b"p" * 29, b"p" * 29 + b"\r\n")
    }
    assert previous_keys(_key_file(tmp_path / "blank", b"\n")) == [
        derive_kek(b"labctl-secrets\0\n")
    ]
    exact = previous_keys(_key_file(tmp_path / "exact", b"q" * 32))
    assert derive_kek(b"labctl-secrets-key-file\0" + b"q" * 32) in exact and len(exact) == 2


def test_previous_keys_refuse_an_unreadable_or_shared_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"cannot read {tmp_path / 'gone'}: No such file"):
        previous_keys(tmp_path / "gone")
    for mode in (0o640, 0o604, 0o610):
        shared = _key_file(tmp_path / "shared", b"p" * 32, mode)
        with pytest.raises(ConfigError, match="is accessible by group or others; chmod 600 it"):
            previous_keys(shared)
    assert previous_keys(_key_file(tmp_path / "owner", b"p" * 32, 0o400))


def test_kek_equality_is_by_secret() -> None:
    assert KeyEncryptionKey(KEY) == KeyEncryptionKey(bytes(KEY))


def test_previous_keys_strip_only_the_line_ending(tmp_path: Path) -> None:
    for data, stripped in [
        (b"p" * 32 + b" \n", b"p" * 32 + b" "),
        (b"q" * 32 + b"X\r\n", b"q" * 32 + b"X"),
    ]:
        keys = previous_keys(_key_file(tmp_path / "k", data))
        assert derive_kek(b"labctl-secrets\0" + stripped) in keys
