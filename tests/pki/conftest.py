"""Shared PKI material for the tests: one CA and client keys, made once per session."""

from __future__ import annotations

import pytest

from lab import pki


@pytest.fixture(scope="session")
def ca() -> pki.CAMaterial:
    return pki.create_ca("labctl test CA")


@pytest.fixture(scope="session")
def other_ca() -> pki.CAMaterial:
    return pki.create_ca("some other CA")


@pytest.fixture(scope="session")
def client_key() -> bytes:
    return pki.generate_key()


@pytest.fixture(scope="session")
def csr(client_key: bytes) -> bytes:
    return pki.make_csr(client_key, "ignored-by-labd")
