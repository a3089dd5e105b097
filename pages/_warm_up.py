"""The server's warm-up: torch, diffusers and the compression stages imported in a background
thread after Home's first paint, and the wait for it before anything else imports them."""

import streamlit as st


@st.cache_resource(show_spinner=False)
def warm_up():
    """Once per server, after the first Home paint: import torch, diffusers and the compression
    stages in a background thread (about 8 s on 2 cores), so the first switch to another page
    finds them loaded instead of waiting for them. ``LITEDIFF_WARM_UP_S``: the delay, or "off"
    (tests that import in their own thread). The thread, or None when off."""
    import os
    import threading

    delay = os.environ.get("LITEDIFF_WARM_UP_S", "1.5")
    if delay == "off":
        return None
    go = threading.Event()  # set by imports_done(): start at once, someone is waiting

    def work():
        go.wait(float(delay))  # let the first paint reach the browser first
        import litediff_core.compress  # noqa: F401  (torch, diffusers, torch-pruning, stages)
        import litediff_core.runs  # noqa: F401  (pandas)
        import plotly.graph_objects  # noqa: F401

    thread = threading.Thread(target=work, name="litediff-warm-up", daemon=True)
    thread.go = go
    thread.start()
    return thread


def imports_done() -> None:
    """Wait for the warm-up's imports before importing anything heavy in this thread: diffusers
    imports its classes lazily and not thread-safely, so a page importing it while the warm-up
    does can fail ("cannot import name 'DDIMScheduler' from 'diffusers'")."""
    thread = warm_up()
    if thread is not None:
        thread.go.set()
        thread.join()
