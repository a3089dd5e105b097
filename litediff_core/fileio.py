"""Atomic writes shared by every saver: a folder is built under a temporary name, then swapped
into place, so a reader sees the old folder or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_dir(staging, folder) -> Path:
    """Move the finished ``staging`` folder to ``folder``, replacing what was there."""
    staging, folder = Path(staging), Path(folder)
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
