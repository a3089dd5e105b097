"""Background jobs: run a long library call (e.g. ``run_recipe``) in a worker thread and watch it.

Streamlit-free by design. The dashboard keeps one :class:`JobRegistry` per server process (in
``st.cache_resource``) and polls it from a fragment; the worker thread never touches the UI::

    jobs = JobRegistry()
    job_id = jobs.start(run_recipe, recipe, store, device="cpu", label=recipe.name,
                        key=recipe.key())
    jobs.snapshot(job_id)   # {"state", "fraction", "message", "eta_s", "losses", ...}
                            # state: queued → running → done | failed | cancelled
    jobs.cancel(job_id)     # the next progress report raises Cancelled inside the worker;
                            # until it ends, the snapshot says "cancelling": True at once

The job function is called as ``fn(*args, progress=callback, **kwargs)`` with the library's one
progress protocol ``callback(done, total, message)``. Each report updates the job's fraction and
ETA (remaining work at the rate of the current stage: the text before ``:`` in the message,
e.g. ``run_recipe``'s ``"finetune: ..."``, ``"evaluating: ..."``). Messages carry data
(:class:`~litediff_core.progress.Event`): a ``loss`` (each training step) adds a point to the
loss curve, a ``curve_point`` (a recovery-curve evaluation) one to the recovery curve.

Cancelling sets a :class:`threading.Event`; the next progress report raises :class:`Cancelled`
inside the worker, so the library unwinds as for any error. ``run_recipe`` then stores the run
with status ``failed`` and error ``"Cancelled: cancelled by user"`` (nothing half-written is
left behind) and re-raises; the job ends in state ``cancelled``. The request is recorded at
once: from :meth:`Job.cancel` on, a snapshot of the still running (or queued) job has
``cancelling`` True and ``cancel_wait_s`` (seconds since the request), so a page can say
"Cancelling…" while the worker reaches its next report.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .errors import LiteDiffError
from .progress import data_of

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE, FINISHED = (QUEUED, RUNNING), (DONE, FAILED, CANCELLED)



class Cancelled(Exception):
    """Raised inside a job's progress callback once the job has been asked to stop."""

    def __init__(self, message: str = "cancelled by user"):
        super().__init__(message)


class Job:
    """One background call. Read it through :meth:`snapshot` (a consistent, plain-data copy)."""

    def __init__(self, job_id: str, label: str = "", key: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.id, self.label, self.key = job_id, label, key
        self._clock = clock
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._cancel_t: Optional[float] = None  # clock() of the first cancel request
        self._thread: Optional[threading.Thread] = None
        self.state = QUEUED
        self.started_wall = time.time()
        self._t0 = clock()
        self._t_end: Optional[float] = None
        self.done, self.total, self.message = 0, 0, ""
        # ETA: rate measured since the current phase began; a new phase starts when the total
        # changes, progress goes back, or the message's stage prefix ("finetune: ...") changes
        self._phase_t, self._phase_done, self._phase_name = self._t0, 0, None
        self.losses: List[dict] = []      # {"step", "loss", "stage", "elapsed_s"}
        self.curve: List[dict] = []       # recovery-curve points: {"step", "fid", ..., "stage"}
        self.result: Any = None
        self.error: str = ""

    # ------------------------------------------------------------------ worker side

    def progress(self, done: int, total: int, message: str = "") -> None:
        """The ``progress(done, total, message)`` callback handed to the job function."""
        if self._cancel.is_set():
            raise Cancelled()
        now = self._clock()
        data = data_of(message)
        loss, point = data.get("loss"), data.get("curve_point")
        stage = message.split(":", 1)[0].strip() if ":" in (message or "") else ""
        with self._lock:
            if total != self.total or done < self.done or stage != self._phase_name:
                self._phase_t, self._phase_done, self._phase_name = now, done, stage
            self.done, self.total, self.message = int(done), int(total), str(message)
            if loss is not None:
                self.losses.append({"step": len(self.losses) + 1, "loss": float(loss),
                                    "stage": stage, "elapsed_s": round(now - self._t0, 3)})
            if point is not None:
                self.curve.append({**point, "stage": stage})

    def _begin(self) -> None:
        """Leave the queue: elapsed time and the ETA count from here."""
        with self._lock:
            self.state = RUNNING
            self._t0 = self._phase_t = self._clock()
            self.started_wall = time.time()

    def _finish(self, state: str, result=None, error: str = "") -> None:
        with self._lock:
            self.state, self.result, self.error = state, result, error
            self._t_end = self._clock()

    # ------------------------------------------------------------------ reader side

    def cancel(self) -> bool:
        """Ask the job to stop (at its next progress report). False if it already ended."""
        with self._lock:
            if self.state in FINISHED:
                return False
            if self._cancel_t is None:
                self._cancel_t = self._clock()
            self._cancel.set()
        return True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def eta_s(self) -> Optional[float]:
        """Seconds left, from the progress rate of the current phase; None when unknown."""
        with self._lock:
            return self._eta(self._clock())

    def _eta(self, now: float) -> Optional[float]:
        if self.state in FINISHED or self.total <= 0:
            return None
        if self.done >= self.total:
            return 0.0
        advanced, spent = self.done - self._phase_done, now - self._phase_t
        if advanced <= 0 or spent <= 0:
            return None
        return (self.total - self.done) * spent / advanced

    def snapshot(self) -> dict:
        with self._lock:
            now = self._clock()
            end = self._t_end if self._t_end is not None else now
            return {
                "id": self.id, "label": self.label, "key": self.key, "state": self.state,
                "done": self.done, "total": self.total,
                "fraction": min(1.0, self.done / self.total) if self.total > 0 else 0.0,
                "message": self.message, "started": self.started_wall,
                "elapsed_s": end - self._t0, "eta_s": self._eta(now),
                "losses": list(self.losses), "curve": list(self.curve),
                "last_loss": self.losses[-1]["loss"] if self.losses else None,
                "result": self.result, "error": self.error,
                "cancel_requested": self._cancel.is_set(),
                # asked to stop, not stopped yet: what a page shows as "Cancelling…"
                "cancelling": self._cancel.is_set() and self.state in ACTIVE,
                "cancel_wait_s": (now - self._cancel_t
                                  if self._cancel_t is not None and self.state in ACTIVE
                                  else None),
            }

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the job ends (or ``timeout`` seconds pass); True if it ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state in FINISHED


class _NoLimit:
    """A semaphore that never blocks."""

    def acquire(self, timeout=None) -> bool:
        return True

    def release(self) -> None:
        pass


class JobRegistry:
    """Jobs of one process, keyed by id; safe to share between threads (dashboard sessions).

    ``max_running`` jobs run at once (None: no limit); later ones wait in state ``queued``
    (the dashboard uses 1, so that runs measuring latency do not compete for the CPU).
    ``keep`` finished jobs are remembered (the oldest finished are forgotten first); running
    and queued jobs are never forgotten. ``clock`` (monotonic seconds) is replaceable for
    tests.
    """

    def __init__(self, keep: int = 20, max_running: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.keep, self._clock = keep, clock
        self.max_running = max_running
        self._slots = threading.BoundedSemaphore(max_running) if max_running else _NoLimit()
        self._jobs: Dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def start(self, fn: Callable, *args, label: str = "", key: Optional[str] = None,
              **kwargs) -> str:
        """Run ``fn(*args, progress=<callback>, **kwargs)`` in a worker thread; returns the job
        id. With a ``key`` (e.g. a recipe key), a job with that key still running or queued is
        reused: its id is returned and nothing new starts."""
        with self._lock:
            if key is not None:
                for job in self._jobs.values():
                    if job.key == key and job.state in ACTIVE:
                        return job.id
            job = Job(f"job-{next(self._ids)}-{int(time.time() * 1000) % 100000:05d}",
                      label=label or getattr(fn, "__name__", "job"), key=key,
                      clock=self._clock)
            self._jobs[job.id] = job
            self._forget_old()
        thread = threading.Thread(target=self._work, name=f"litediff-{job.id}", daemon=True,
                                  args=(job, fn, args, kwargs, self._slots))
        job._thread = thread
        thread.start()
        return job.id

    @staticmethod
    def _work(job: Job, fn: Callable, args: tuple, kwargs: dict, slots) -> None:
        while not slots.acquire(timeout=0.1):  # queued: wait for a free slot (or a cancel)
            if job.cancel_requested:
                job._finish(CANCELLED, error="cancelled by user (before it started)")
                return
        try:
            if job.cancel_requested:
                raise Cancelled("cancelled by user (before it started)")
            job._begin()
            result = fn(*args, progress=job.progress, **kwargs)
        except Cancelled as e:
            job._finish(CANCELLED, error=str(e))
        except LiteDiffError as e:
            job._finish(FAILED, error=str(e))
        except Exception as e:  # noqa: BLE001 — kept as the job's error, logged with its trace
            log.exception("background job %s failed", job.id)
            first = (str(e).strip().splitlines() or [""])[0][:300]
            job._finish(FAILED, error=f"{type(e).__name__}: {first}" if first
                        else type(e).__name__)
        except BaseException as e:  # SystemExit / KeyboardInterrupt inside the worker
            job._finish(FAILED, error=f"{type(e).__name__}")
            raise
        else:
            job._finish(DONE, result=result)
        finally:
            slots.release()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINISHED]
        for job in finished[:max(0, len(finished) - self.keep)]:
            del self._jobs[job.id]

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            return self._jobs.get(job_id)

    def snapshot(self, job_id: str) -> Optional[dict]:
        job = self.get(job_id)
        return job.snapshot() if job else None

    def cancel(self, job_id: str) -> bool:
        job = self.get(job_id)
        return job.cancel() if job else False

    def wait(self, job_id: str, timeout: Optional[float] = None) -> Optional[dict]:
        job = self.get(job_id)
        if job is None:
            return None
        job.wait(timeout)
        return job.snapshot()

    def jobs(self) -> List[dict]:
        """Snapshots of every remembered job, newest first."""
        with self._lock:
            self._forget_old()
            jobs = list(self._jobs.values())
        return [j.snapshot() for j in reversed(jobs)]

    def running(self) -> List[dict]:
        """Snapshots of the jobs running or waiting in the queue, newest first."""
        return [s for s in self.jobs() if s["state"] in ACTIVE]
