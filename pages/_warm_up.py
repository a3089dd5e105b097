"""The server's warm-up: torch, diffusers and what loads, samples and compresses a model,
imported in a background thread after Home's first paint, and the wait for it before anything
else imports them. Pages that only read stored runs (Explore on a stored recipe, Layers, Pareto,
Recovery, Runs) need none of it: the stage registry and recipes load without torch."""

import streamlit as st


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

    def work():
        go.wait(float(delay))  # let the first paint reach the browser first
        import litediff_core.compress  # noqa: F401  (the stage registry: no torch)
        import litediff_core.runs  # noqa: F401  (pandas)
        import plotly.graph_objects  # noqa: F401
        import torch  # noqa: F401  (then what loading, sampling and compressing use)
        import torch_pruning  # noqa: F401
        from diffusers import DDPMScheduler, UNet2DModel  # noqa: F401
        import litediff_core.metrics.size  # noqa: F401  (fvcore)
        import litediff_core.models.loader  # noqa: F401
        import litediff_core.samplers  # noqa: F401  (diffusers' schedulers)

    thread = threading.Thread(target=work, name="litediff-warm-up", daemon=True)
    thread.go = go
    thread.start()
    return thread


def imports_done() -> None:
    """Wait for the warm-up's imports before importing anything heavy in this thread (loading a
    model, sampling, compressing): diffusers imports its classes lazily and not thread-safely,
    so a page importing it while the warm-up does can fail ("cannot import name
    'DDIMScheduler' from 'diffusers'")."""
    thread = warm_up()
    if thread is not None:
        thread.go.set()
        thread.join()
