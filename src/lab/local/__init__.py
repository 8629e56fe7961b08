"""This box: ``labctl init ... standalone`` and the daemons it runs in the background.

The one layer that starts the daemons and may import them (their config, data dirs and
enrollment); labctl's command modules in :mod:`lab.cli` call into it.
"""
