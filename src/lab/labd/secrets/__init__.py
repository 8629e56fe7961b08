"""labd's secrets store: values sealed under data keys wrapped by a key-encryption key."""

from lab.labd.secrets.keys import SECRETS_KEY_FILE_ENV, key_encryption_key, previous_keys
from lab.labd.secrets.store import Rotation, SecretsStore, check_name

__all__ = [
    "SECRETS_KEY_FILE_ENV",
    "Rotation",
    "SecretsStore",
    "check_name",
    "key_encryption_key",
    "previous_keys",
]
