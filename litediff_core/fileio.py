"""Atomic writes shared by every saver: a file or folder is written under a temporary name in
the same folder, then swapped into place with ``os.replace``, so a reader sees the old version or
the new one, never half of one, and a crash leaves at most a hidden temporary behind. Also:
:func:`zip_folder` (a folder as an in-memory zip, for downloads)."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path


def _tmp_name(path: Path) -> Path:
    # unique per process and thread (the dashboard runs jobs in threads), hidden, same folder
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


@contextmanager
def atomic_file(path):
    """``with atomic_file(p) as tmp: save(tmp)`` writes ``p`` atomically with any saver that
    takes a file name (PIL, pandas, safetensors); nothing is left behind if ``save`` raises."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str))


@contextmanager
def atomic_dir(folder):
    """``with atomic_dir(f) as tmp: <write files into tmp>`` puts the folder ``f`` in place
    whole (:func:`replace_dir`) when the block ends; if it raises, ``f`` is left as it was and
    the temporary folder is removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(staging, folder) -> Path:
    """Move the finished ``staging`` folder to ``folder``, replacing what was there. Another
    process may put its own ``folder`` in place meanwhile (the same run twice): we retry, and the
    last one to finish wins, whole."""
    staging, folder = Path(staging), Path(folder)
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    for attempt in range(20):
        shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(folder, old)
        except FileNotFoundError:
            pass
        try:
            os.replace(staging, folder)
            break
        except OSError as e:  # a non-empty folder appeared at ``folder`` since the line above
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 19:
                raise
    shutil.rmtree(old, ignore_errors=True)
    return folder


def zip_folder(folder) -> bytes:
    """A zip archive (in memory) of ``folder``, paths relative to its parent."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder.parent))
    return buf.getvalue()
