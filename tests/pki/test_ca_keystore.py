"""The CA itself and its key at rest."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lab import pki
from lab.errors import ConfigError


def test_create_ca_profile(ca: pki.CAMaterial) -> None:
    cert = ca.cert
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert ca.ca_cert.common_name == "labctl test CA"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    life = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=3649) < life <= timedelta(days=3650)
    cert.verify_directly_issued_by(cert)  # self-signed


def test_fingerprint_format(ca: pki.CAMaterial) -> None:
    fp = ca.fingerprint()
    assert re.fullmatch(r"SHA256:[0-9a-f]{64}", fp)
    der = ca.cert.public_bytes(serialization.Encoding.DER)
    assert fp == pki.fingerprint_der(der) == ca.ca_cert.fingerprint()
    assert fp != pki.create_ca("x").fingerprint()


def test_pem_round_trip(ca: pki.CAMaterial) -> None:
    loaded = pki.CAMaterial.from_pem(ca.cert_pem(), ca.key_pem())
    assert loaded.fingerprint() == ca.fingerprint()
    assert loaded.key_pem() == ca.key_pem()


def test_encrypted_round_trip(ca: pki.CAMaterial) -> None:
    blob = ca.encrypted_key_blob(b"pw")
    assert pki.CAMaterial.from_encrypted(ca.cert_pem(), blob, b"pw").key_pem() == ca.key_pem()
    with pytest.raises(pki.WrongPassphrase):
        pki.CAMaterial.from_encrypted(ca.cert_pem(), blob, b"nope")


def test_from_pem_rejects_foreign_key(ca: pki.CAMaterial, other_ca: pki.CAMaterial) -> None:
    with pytest.raises(ConfigError, match="does not match"):
        pki.CAMaterial.from_pem(ca.cert_pem(), other_ca.key_pem())


def test_from_pem_rejects_leaf(ca: pki.CAMaterial, csr: bytes) -> None:
    leaf_pem, _ = pki.issue_user_cert(ca, csr, "ann")
    with pytest.raises(ConfigError, match="not a CA"):
        pki.CACert.from_pem(leaf_pem)


def test_bundle_dedupes_and_loads(ca: pki.CAMaterial, other_ca: pki.CAMaterial) -> None:
    bundle = pki.ca_bundle_pem([ca, other_ca, ca.ca_cert])
    loaded = pki.load_ca_bundle(bundle)
    assert [c.fingerprint() for c in loaded] == [ca.fingerprint(), other_ca.fingerprint()]


def test_key_encryption_round_trip(ca: pki.CAMaterial) -> None:
    blob = pki.encrypt_private_key(ca.key_pem(), b"correct horse")
    assert pki.decrypt_private_key(blob, b"correct horse") == ca.key_pem()
    # Fresh salt and nonce per blob.
    assert pki.encrypt_private_key(ca.key_pem(), b"correct horse") != blob


def test_encrypted_blob_is_not_a_usable_pem(ca: pki.CAMaterial) -> None:
    blob = pki.encrypt_private_key(ca.key_pem(), b"pw")
    assert b"PRIVATE KEY" not in blob
    assert ca.key_pem()[30:60] not in blob
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(blob, password=None)
    with pytest.raises(ValueError):
        serialization.load_der_private_key(blob, password=None)


def test_wrong_passphrase(ca: pki.CAMaterial) -> None:
    blob = pki.encrypt_private_key(ca.key_pem(), b"right")
    with pytest.raises(pki.WrongPassphrase) as info:
        pki.decrypt_private_key(blob, b"wrong")
    assert isinstance(info.value, ConfigError)
    assert info.value.message.startswith("wrong CA passphrase")
    assert "\n" not in info.value.message


def test_tampered_blob_is_refused(ca: pki.CAMaterial) -> None:
    blob = bytearray(pki.encrypt_private_key(ca.key_pem(), b"pw"))
    blob[-1] ^= 1
    with pytest.raises(pki.WrongPassphrase):
        pki.decrypt_private_key(bytes(blob), b"pw")
    header_flip = bytearray(pki.encrypt_private_key(ca.key_pem(), b"pw"))
    header_flip[20] ^= 1  # inside the salt: authenticated as AAD
    with pytest.raises(pki.WrongPassphrase):
        pki.decrypt_private_key(bytes(header_flip), b"pw")


def test_blob_format_errors(ca: pki.CAMaterial) -> None:
    with pytest.raises(ConfigError, match="bad header"):
        pki.decrypt_private_key(ca.key_pem(), b"pw")
    blob = bytearray(pki.encrypt_private_key(ca.key_pem(), b"pw"))
    blob[6] = 99
    with pytest.raises(ConfigError, match="version 99"):
        pki.decrypt_private_key(bytes(blob), b"pw")
    blob = bytearray(pki.encrypt_private_key(ca.key_pem(), b"pw"))
    blob[7] = 40  # scrypt N = 2**40 would exhaust memory
    with pytest.raises(ConfigError, match="out-of-range"):
        pki.decrypt_private_key(bytes(blob), b"pw")


def test_keyfile_created_once_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    first = pki.load_or_create_keyfile(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pki.load_or_create_keyfile(path) == first


def test_keyfile_refuses_loose_permissions(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    pki.load_or_create_keyfile(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        pki.load_or_create_keyfile(path)


def test_keyfile_refuses_short_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short")
    os.close(fd)
    with pytest.raises(ConfigError, match="5 bytes"):
        pki.load_or_create_keyfile(path)


def test_passphrase_env_wins_over_keyfile(tmp_path: Path) -> None:
    assert pki.resolve_ca_passphrase(tmp_path, {"LABD_CA_PASSPHRASE": "hunter2"}) == b"hunter2"
    assert not (tmp_path / pki.PASSPHRASE_FILE).exists()
    from_file = pki.resolve_ca_passphrase(tmp_path, {"LABD_CA_PASSPHRASE": ""})
    assert from_file == (tmp_path / pki.PASSPHRASE_FILE).read_bytes()
    assert pki.resolve_ca_passphrase(tmp_path, {}) == from_file
