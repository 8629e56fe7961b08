"""labctl, the operator CLI: cyclopts command modules that reach labd through lab.client and
this box's daemons through lab.local.

Modules here keep their imports of lab.client, lab.local, trio, httpx and cryptography inside
the commands on purpose: that is start-up speed (``labctl --help`` and small commands do not
pay ~0.3 s for them, DESIGN §10), not a hidden circle (tests/test_import_rules.py).
"""
