"""The one progress protocol of the library: ``progress(done, total, message)``.

Library functions take an optional callback; the CLI turns it into a tqdm bar, the dashboard
into a progress widget. ``None`` means "report nothing".
"""

from __future__ import annotations

from typing import Callable, Optional

Progress = Callable[[int, int, str], None]


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
