"""The audit key stores under test are opened with.

labd derives its own, see lab.labd.audit.keys.
"""

from lab.store.auditchain import AuditKey

TEST_AUDIT_KEY = AuditKey(b"labctl test audit key, 32 bytes!")
