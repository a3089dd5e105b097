"""The one progress protocol of the library: ``progress(done, total, message)``.

Library functions take an optional callback; the CLI turns it into a tqdm bar, the dashboard
into a progress widget. ``None`` means "report nothing".

A message may carry data: an :class:`Event` is a ``str`` (what a bar shows) with a ``data``
dict, e.g. ``Event("loss 0.0412", loss=0.0412, step=17)`` from a training step or
``Event("step 250: curve FID 93.1", curve_point={...})`` from a recovery-curve evaluation.
Callbacks that only show text need not know; readers take ``data_of(message)`` instead of
parsing the text. :func:`prefixed` adds a prefix (a stage name) and keeps the data.
"""

from __future__ import annotations

from typing import Callable, Optional

Progress = Callable[[int, int, str], None]


class Event(str):
    """A progress message (the text) that carries data (``.data``, JSON-able values)."""

    data: dict

    def __new__(cls, text: str, **data):
        obj = super().__new__(cls, text)
        obj.data = data
        return obj


def data_of(message) -> dict:
    """The data a progress message carries ({} for a plain string)."""
    return dict(getattr(message, "data", None) or {})


def prefixed(prefix: str, message) -> str:
    """``"<prefix>: <message>"``, still carrying the message's data."""
    return Event(f"{prefix}: {message}", **data_of(message))


def report(progress: Optional[Progress], done: int, total: int, message: str = "") -> None:
    if progress is not None:
        progress(done, total, message)


class TqdmProgress:
    """A ``Progress`` callback drawing a tqdm bar on stderr (used by the CLI)."""

    def __init__(self, desc: str = ""):
        self.desc = desc
        self._bar = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self._bar is None or self._bar.total != total:
            self.close()
            self._bar = tqdm(total=total, desc=self.desc, leave=False, dynamic_ncols=True)
        self._bar.n = done
        if message:
            self._bar.set_postfix_str(message, refresh=False)
        self._bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
