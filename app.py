"""LiteDiff Lab dashboard — home: pick a base model and see its card and samples.

Thin by design: every number comes from a ``litediff_core`` call; nothing here computes.
"""

import streamlit as st

from pages._warm_up import drawing_a_page, imports_done, warm_up

st.set_page_config(page_title="LiteDiff Lab", page_icon="🧪", layout="wide")


def measure_latency(source: str, device: str) -> dict:
    """Timed now, on demand (never cached: the figure is labelled with when it was taken)."""
    import copy
    import time

    imports_done()
    from litediff_core.metrics import step_latency
    from pages._shared import load_model

    # the cached model is shared by every session: time a copy, so moving it to a GPU is local
    lat = step_latency(copy.deepcopy(load_model(source).unet), batch_size=16, device=device,
                       repeats=5)
    return {**lat, "taken_at": time.strftime("%H:%M:%S")}


@st.cache_data(show_spinner="Sampling…")
def grid_of(source: str, sampler: str, steps: int, seed: int, device: str):
    import copy

    imports_done()
    from litediff_core.samplers import generate, grid
    from pages._shared import load_model

    base = load_model(source)
    unet = copy.deepcopy(base.unet).to(device)
    images = generate(unet, dict(base.scheduler.config), sampler=sampler, steps=steps, n=16,
                      seed=seed, device=device)
    return grid(images, nrow=8)


def _meta_and_card(source: str, dataset: str):
    """The model's facts and its card's measured result, without loading the weights where the
    model has a card (so Home paints at once); raises LiteDiffError for bad input."""
    from litediff_core.errors import LiteDiffError
    from litediff_core.models import read_meta
    from litediff_core.results import RunResult

    meta = read_meta(source)
    if meta is None:  # a hub id (or a config without its shape): load it to know
        from pages._shared import load_model

        meta = load_model(source).meta  # (it waits for the warm-up's imports)
    if dataset:
        from pages._shared import dataset_shape

        shape = dataset_shape(dataset)
        if shape != (meta.channels, meta.resolution):
            raise LiteDiffError(
                f"{dataset} has {shape[0]}×{shape[1]}×{shape[1]} images but the "
                f"model makes {meta.channels}×{meta.resolution}×"
                f"{meta.resolution}: pick the dataset the model was trained on")
    card = meta.card.get("metrics")
    return meta, (RunResult.from_dict(card) if card else None)


def home():
    st.title("LiteDiff Lab")
    st.caption("How much of a diffusion model can you cut away, and what does it cost?")
    # Nothing here imports torch until the user asks for a measurement or samples: the model
    # card's figures and grid are read from its folder.
    from litediff_core.device import DEVICES, resolve_device
    from litediff_core.errors import LiteDiffError
    from litediff_core.model_card import card_grid

    state = st.session_state
    with st.sidebar:  # kept under _kept_* keys: Streamlit forgets widgets of pages not shown
        source = st.text_input("Base model", value=state.get("_kept_cp_base", "embedded"),
                               key="home_base", help="embedded, a local diffusers folder, or a hub id "
                                    "such as google/ddpm-cifar10-32")
        dataset = st.text_input("Dataset (blank: the model's own)",
                                value=state.get("_kept_cp_dataset", ""), key="home_dataset",
                                help="fashion-mnist, mnist, cifar10 or folder:<path>; what "
                                     "compression fine-tunes on and FIDs compare against")
        devices = list(DEVICES)
        device_choice = st.selectbox("Device", devices, key="home_device", index=devices.index(
            state.get("_kept_cp_device", devices[0])))
    # the Compress page starts from the same choices
    state["_kept_cp_base"], state["_kept_cp_dataset"] = source, dataset
    state["_kept_cp_device"] = device_choice
    try:
        meta, card = _meta_and_card(source, dataset.strip())
    except LiteDiffError as e:
        st.error(str(e))
        return
    if card is not None and card.size is not None:
        size, size_note = card.size, "from the model card"
    else:
        from litediff_core.results import Size
        from pages._shared import size_of

        imports_done()
        size, size_note = Size.from_dict(size_of(source)), "measured now"
    st.subheader(f"Base model: `{meta.source}`")
    cols = st.columns(4)
    cols[0].metric("Parameters", f"{size.params / 1e6:.2f} M", help=size_note)
    cols[1].metric("MACs / image / step", f"{size.macs_per_image / 1e6:.0f} M", help=size_note)
    cols[2].metric("Weights on disk", f"{size.bytes / 2**20:.2f} MiB", help=size_note)
    with cols[3]:
        _latency(source, device_choice, card)
    chosen = dataset.strip() or meta.dataset or "unknown"
    st.caption(f"{meta.channels}×{meta.resolution}×{meta.resolution} images · dataset: "
               f"{chosen}{' (the model’s own)' if not dataset.strip() else ''} · loaded from "
               f"{meta.path}")
    left, right = st.columns([3, 2])
    with left:
        shipped = card_grid(meta)
        if shipped:
            st.image(str(shipped[0]), caption=shipped[1], width="stretch")
        with st.form("home_sample"):
            st.markdown("**Sample here**: 16 images on this machine")
            steps = st.slider("DDIM steps", 5, 100, 25, 5)
            seed = st.number_input("Seed", 0, 2**31 - 1, 0)
            asked = st.form_submit_button("Sample", type="secondary" if shipped else "primary")
        if asked:
            try:
                device = resolve_device(device_choice)
            except LiteDiffError as e:
                st.error(str(e))
            else:
                st.image(grid_of(source, "ddim", steps, int(seed), device),
                         caption=f"16 samples, DDIM {steps} steps, seed {seed}, {device}",
                         width="stretch")
    with right:
        if card is None:
            st.info("This model has no card: its quality is not measured yet. "
                    f"`litediff eval {source} --card` measures it (a local folder keeps the card).")
        else:
            if card.fidelity:
                st.markdown(f"**Measured quality** — {card.fidelity.label}")
            gate = card.quality_gate
            if gate:
                st.markdown(f"Quality gate ({gate.rule}): "
                            f"{'passes' if gate.passes else 'does not pass'} — mean "
                            f"max-probability {gate.mean_max_probability:.3f}")
        training = meta.card.get("training")
        if training:
            st.markdown(f"**Training**: {training['steps']} steps, "
                        f"{training['seconds'] / 60:.0f} min on {training['hardware']['device']}"
                        f" — `{training['command']}`")
        gate = card.quality_gate if card is not None else None
        if gate:
            # drawn last: the first chart of a browser tab loads plotly.js (1-2.5 s of a
            # 2-core machine), here while the student reads the card, not on the next page
            st.plotly_chart(class_mix(gate.class_fractions, gate.n), key="home_mix",
                            config={"displayModeBar": False}, theme=None)  # as ui.CHART
    warm_up()


def class_mix(fractions: dict, n=None):
    """The samples' class shares (the shipped classifier's verdicts), one bar per class."""
    import plotly.graph_objects as go

    names, shares = list(fractions), [100 * f for f in fractions.values()]
    fig = go.Figure(go.Bar(x=shares, y=names, orientation="h", marker_color="#1f77b4",
                           text=[f"{v:.1f}%" for v in shares], textposition="outside",
                           hovertemplate="%{y}: %{x:.1f}% of the samples<extra></extra>"))
    fig.update_layout(template="plotly_white", height=60 + 24 * len(names),
                      margin={"l": 10, "r": 40, "t": 30, "b": 30},
                      title={"text": (f"Class of each of the {n} samples" if n else
                                      "Class of each sample") + " (shipped classifier)",
                             "font": {"size": 13}},
                      xaxis={"title": "% of the samples", "range": [0, max(shares + [10]) * 1.2]},
                      yaxis={"autorange": "reversed"})
    return fig


def _latency(source: str, device_choice: str, card) -> None:
    """The card's step latency (labelled with the machine it was taken on) until the user
    measures it here; a measurement is labelled with its time."""
    from litediff_core.device import resolve_device
    from litediff_core.errors import LiteDiffError

    key = f"_home_latency::{source}::{device_choice}"
    if st.button("Measure here", key="home_measure", help="time one denoising step of a batch "
                 "of 16 on this machine now (a few seconds)"):
        try:
            st.session_state[key] = measure_latency(source, resolve_device(device_choice))
        except LiteDiffError as e:
            st.error(str(e))
    here = st.session_state.get(key)
    if here:
        st.metric(f"Step latency ({here['device']}, batch {here['batch_size']})",
                  f"{here['median_s'] * 1000:.0f} ms",
                  help=f"measured on this machine at {here['taken_at']}, "
                       f"{here.get('threads')} threads")
        st.caption(f"measured here at {here['taken_at']}")
    elif card is not None and card.latency and card.latency.median_s:
        lat = card.latency
        st.metric(f"Step latency ({lat.device}, batch {lat.batch_size})",
                  f"{lat.median_ms:.0f} ms")
        st.caption(f"from the model card: {lat.cpu or lat.gpu or lat.device}, "
                   f"{lat.threads} threads, torch {lat.torch_version}")
    else:
        st.metric("Step latency", "not measured")


# pages that import torch and diffusers as they open (to sample, or to preview a recipe's size):
# the warm-up runs on at full speed while they draw, and they wait for it after their title
# (pages._warm_up.imports_done_shown); the others read stored runs and load a model only on
# request (pages._shared.load_model)
NEEDS_TORCH = ("Compress", "Samples & samplers")


def run_page(page) -> None:
    """Run the chosen page. With ``LITEDIFF_PAGE_TIMES`` set to a file, append one JSON line
    per script run (page title, seconds the server spent on it): benchmarks/page_timings.py
    splits a page switch into server time and the browser's share with it."""
    import os
    import time

    start = time.perf_counter()
    try:
        if page.title in NEEDS_TORCH:  # they wait for the warm-up after their title
            page.run()
        else:
            with drawing_a_page():
                page.run()
    finally:  # also when Streamlit stops a run early (a rerun, a page switch)
        log = os.environ.get("LITEDIFF_PAGE_TIMES")
        if log:
            import json

            with open(log, "a") as f:
                f.write(json.dumps({"page": page.title, "at": time.time(),
                                    "seconds": round(time.perf_counter() - start, 4)}) + "\n")


pg = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True),
                    st.Page("pages/explore.py", title="Explore", icon=":material/tune:"),
                    st.Page("pages/compress.py", title="Compress", icon=":material/content_cut:"),
                    st.Page("pages/samples.py", title="Samples & samplers", icon=":material/photo_library:"),
                    st.Page("pages/layers.py", title="Layers", icon=":material/view_module:"),
                    st.Page("pages/pareto.py", title="Pareto", icon=":material/scatter_plot:"),
                    st.Page("pages/recovery.py", title="Recovery", icon=":material/trending_down:"),
                    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:")])
run_page(pg)
