"""The server's warm-up: torch, diffusers and what loads, samples and compresses a model,
imported in a background thread after Home's first paint, and the wait for it before anything
else imports them. Pages that only read stored runs (Explore on a stored recipe, Layers, Pareto,
Recovery, Runs) need none of it: the stage registry and recipes load without torch."""

from contextlib import contextmanager

import streamlit as st

# what the warm-up imports, in order: the stage registry (no torch), pandas, plotly, then what
# loading, sampling and compressing a model use (torch, Torch-Pruning, diffusers, fvcore)
MODULES = ("litediff_core.compress", "litediff_core.runs", "plotly.graph_objects", "torch",
           "torch_pruning", "diffusers.models.unets.unet_2d",
           "diffusers.schedulers.scheduling_ddpm", "litediff_core.metrics.size",
           "litediff_core.models.loader", "litediff_core.samplers")


@st.cache_resource(show_spinner=False)
def warm_up():
    """Once per server, after the first Home paint: import torch, diffusers, Torch-Pruning and
    fvcore in a background thread (3–8 s on 2 cores), so the first page or button that loads a
    model finds them loaded instead of waiting for them. ``LITEDIFF_WARM_UP_S``: the delay, or "off"
    (tests that import in their own thread). The thread, or None when off."""
    import os
    import threading

    delay = os.environ.get("LITEDIFF_WARM_UP_S", "1.5")
    if delay == "off":
        return None
    go = threading.Event()  # set by imports_done(): start at once, someone is waiting
    quiet = threading.Event()  # set while no page that reads stored runs is being drawn
    quiet.set()

    def work():
        import importlib

        go.wait(float(delay))  # let the first paint reach the browser first
        for name in MODULES:
            if not go.is_set():  # nobody waits: let a page being drawn have the CPU first
                quiet.wait()
            importlib.import_module(name)

    thread = threading.Thread(target=work, name="litediff-warm-up", daemon=True)
    thread.go, thread.quiet, thread.drawing = go, quiet, 0
    thread.lock = threading.Lock()
    thread.start()
    return thread


@contextmanager
def drawing_a_page():
    """Around the run of a page that needs no torch: the warm-up pauses between its imports
    until the page is drawn (on 2 cores an import beside it doubled a cold first switch)."""
    thread = warm_up()
    if thread is None or not thread.is_alive():
        yield
        return
    with thread.lock:
        thread.drawing += 1
        thread.quiet.clear()
    try:
        yield
    finally:
        with thread.lock:
            thread.drawing -= 1
            if not thread.drawing:
                thread.quiet.set()


def imports_done_shown() -> None:
    """:func:`imports_done` with a spinner that says what is loading while the warm-up still
    runs. Pages that need torch as they open call it after their title, so a cold server's first
    switch shows the page at once instead of a blank wait."""
    thread = warm_up()
    if thread is not None and thread.is_alive():
        with st.spinner("Loading torch, diffusers and the compression stages (once after the "
                        "server starts, a few seconds)…"):
            imports_done()


def imports_done() -> None:
    """Wait for the warm-up's imports before importing anything heavy in this thread (loading a
    model, sampling, compressing): diffusers imports its classes lazily and not thread-safely,
    so a page importing it while the warm-up does can fail ("cannot import name
    'DDIMScheduler' from 'diffusers'")."""
    thread = warm_up()
    if thread is not None:
        thread.go.set()
        thread.join()
