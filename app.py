"""LiteDiff Lab dashboard — home: pick a base model and see its card and samples.

Thin by design: every number comes from a ``litediff_core`` call; nothing here computes.
"""

import streamlit as st

st.set_page_config(page_title="LiteDiff Lab", page_icon="🧪", layout="wide")


@st.cache_data(show_spinner="Measuring latency on this device…")
def latency_of(source: str, device: str) -> dict:
    import copy

    from litediff_core.metrics import step_latency
    from pages._shared import load_model

    # the cached model is shared by every session: time a copy, so moving it to a GPU is local
    return step_latency(copy.deepcopy(load_model(source).unet), batch_size=16, device=device,
                        repeats=5)


@st.cache_data(show_spinner="Sampling…")
def grid_of(source: str, sampler: str, steps: int, seed: int, device: str):
    import copy

    from litediff_core.samplers import generate, grid
    from pages._shared import load_model

    base = load_model(source)
    unet = copy.deepcopy(base.unet).to(device)
    images = generate(unet, dict(base.scheduler.config), sampler=sampler, steps=steps, n=16,
                      seed=seed, device=device)
    return grid(images, nrow=8)


def home():
    st.title("LiteDiff Lab")
    st.caption("How much of a diffusion model can you cut away, and what does it cost?")
    # torch, diffusers… load after the title is on screen (the first visit imports them)
    from litediff_core.device import DEVICES, resolve_device
    from litediff_core.errors import LiteDiffError
    from pages._shared import dataset_shape, load_model, size_of  # cached per process

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
        device = resolve_device(device_choice)
        base = load_model(source)
        if dataset.strip():
            shape = dataset_shape(dataset.strip())
            if shape != (base.meta.channels, base.meta.resolution):
                raise LiteDiffError(
                    f"{dataset.strip()} has {shape[0]}×{shape[1]}×{shape[1]} images but the "
                    f"model makes {base.meta.channels}×{base.meta.resolution}×"
                    f"{base.meta.resolution}: pick the dataset the model was trained on")
    except LiteDiffError as e:
        st.error(str(e))
        return
    meta = base.meta
    size = size_of(source)
    lat = latency_of(source, device)
    st.subheader(f"Base model: `{meta.source}`")
    cols = st.columns(4)
    cols[0].metric("Parameters", f"{size['params'] / 1e6:.2f} M")
    cols[1].metric("MACs / image / step", f"{size['macs_per_image'] / 1e6:.0f} M")
    cols[2].metric("Weights on disk", f"{size['bytes'] / 2**20:.2f} MiB")
    cols[3].metric(f"Step latency ({device}, batch {lat['batch_size']})",
                   f"{lat['median_s'] * 1000:.0f} ms")
    chosen = dataset.strip() or meta.dataset or "unknown"
    st.caption(f"{meta.channels}×{meta.resolution}×{meta.resolution} images · dataset: "
               f"{chosen}{' (the model’s own)' if not dataset.strip() else ''} · loaded from "
               f"{meta.path}")
    left, right = st.columns([3, 2])
    with left:
        steps = st.slider("DDIM steps", 5, 100, 25, 5)
        seed = st.number_input("Seed", 0, 2**31 - 1, 0)
        st.image(grid_of(source, "ddim", steps, int(seed), device),
                 caption=f"16 samples, DDIM {steps} steps, seed {seed}, {device}",
                 width="stretch")
    with right:
        measured = meta.card.get("metrics")   # an evaluation, stored in the model card
        if measured:
            from litediff_core.results import RunResult

            measured = RunResult.from_dict(measured)
            if measured.fidelity:
                st.markdown(f"**Measured quality** — {measured.fidelity.label}")
            gate = measured.quality_gate
            if gate:
                st.markdown(f"Quality gate ({gate.rule}): "
                            f"{'passes' if gate.passes else 'does not pass'} — mean "
                            f"max-probability {gate.mean_max_probability:.3f}")
                st.bar_chart(gate.class_fractions, horizontal=True)
        training = meta.card.get("training")
        if training:
            st.markdown(f"**Training**: {training['steps']} steps, "
                        f"{training['seconds'] / 60:.0f} min on {training['hardware']['device']}"
                        f" — `{training['command']}`")


pg = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True),
                    st.Page("pages/explore.py", title="Explore", icon=":material/tune:"),
                    st.Page("pages/compress.py", title="Compress", icon=":material/content_cut:"),
                    st.Page("pages/samples.py", title="Samples & samplers", icon=":material/photo_library:"),
                    st.Page("pages/layers.py", title="Layers", icon=":material/view_module:"),
                    st.Page("pages/pareto.py", title="Pareto", icon=":material/scatter_plot:"),
                    st.Page("pages/recovery.py", title="Recovery", icon=":material/trending_down:"),
                    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:")])
pg.run()
