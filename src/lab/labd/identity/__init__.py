"""Identities: the CA, join tokens, enrollment, renewal and revocation of certificates."""
