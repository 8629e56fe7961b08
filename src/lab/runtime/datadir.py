"""A daemon's data directory: created 0700 and writable, or one line saying why not."""

from __future__ import annotations

import os
from pathlib import Path

from lab.errors import DataDirUnusable


def prepare_data_dir(path: Path, *, setting: str) -> None:
    """Create ``path`` (0700, parents too) and check it is writable.

    Raises :class:`DataDirUnusable` (the daemons exit 4) naming the path and, in the hint,
    ``setting``: how the user points the daemon elsewhere (``LABD_DATA_DIR`` ...).
    """
    hint = f"set {setting} to a directory this user may write"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DataDirUnusable(
            f"cannot create data dir {path}: {exc.strerror}", details={"hint": hint}
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirUnusable(f"data dir {path} is not writable", details={"hint": hint})
