"""Samples & samplers: stored runs' sample grids side by side, and a live sampler × step-count
comparison of one model from the same seed (same starting noise in every cell)."""

import io
from pathlib import Path

import streamlit as st

from litediff_core.device import DEVICES, resolve_device
from litediff_core.errors import LiteDiffError
from litediff_core.pareto import showcase
from pages import _shared as ui
from pages._warm_up import imports_done_shown


@st.cache_data(show_spinner=False, max_entries=128)
def sampler_cell(source: str, stamp: float, sampler: str, steps: int, n: int, seed: int,
                 device: str):
    """``n`` images of a model with one sampler and step count (same seed → same starting noise
    for every cell) and the measured wall time of ``generate`` in seconds. Cached by every
    input; the model is a deep copy of the cached one."""
    import copy
    import time

    from litediff_core.samplers import generate

    base = ui.load_model(source, stamp)
    unet = copy.deepcopy(base.unet).to(device)
    t0 = time.perf_counter()
    images = generate(unet, dict(base.scheduler.config), sampler=sampler, steps=steps, n=n,
                      seed=seed, device=device)
    return images, time.perf_counter() - t0


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def stamp_of(folder) -> float:
    """A run folder's modification stamp (its status file), for cache keys."""
    p = Path(folder) / "status.json"
    return p.stat().st_mtime if p.exists() else 0.0


def stored_samples(table) -> None:
    st.subheader("Stored runs")
    done = table[table["status"] == "done"]
    choices = ui.run_choices(done, need="samples.png")
    if not choices:
        st.info("No finished run with samples yet: run a recipe on the Compress page.")
        return
    refs = list(choices)
    first = list(done.loc[showcase(done[done["ref"].isin(refs)]), "ref"]) or refs[:3]
    picked = st.multiselect("Runs", refs, default=first, format_func=choices.get,
                            key="sm_runs", help="First shown: the dense base, the compressed "
                            "run with the lowest FID and the fastest one, evaluated the same "
                            "way.")
    if not picked:
        return
    rows = done.set_index("ref")
    cols = st.columns(min(len(picked), 4))
    for i, ref in enumerate(picked):
        row = rows.loc[ref]
        store, run_id = ui.resolve(ref)
        recipe = store.load(run_id)["recipe"]
        ev = recipe.get("eval", {})
        with cols[i % len(cols)]:
            st.image(str(Path(row["path"]) / "samples.png"), width="stretch",
                     caption=f"{row['name']} ({row['store']} `{row['id']}`) — "
                             f"{min(int(ev.get('n', 64)), 64)} samples, "
                             f"{ev.get('sampler', 'ddim')} {ev.get('steps')} steps, seed "
                             f"{recipe.get('seed')}, {row['device'] or 'device ?'}")
            st.caption(f"FID {ui.fmt(row['fid'], '')} ({row['eval']}, {row['extractor']} "
                       f"features) · {ui.fmt(row['params'], 'params')} params")


def _parse_steps(text: str):
    try:
        steps = sorted({int(s) for s in text.replace(";", ",").split(",") if s.strip()})
    except ValueError:
        raise LiteDiffError(f"step counts must be whole numbers separated by commas, "
                            f"not {text!r}") from None
    if not steps or steps[0] < 1:
        raise LiteDiffError("give at least one step count, each at least 1")
    return steps


def sampler_comparison(table) -> None:
    st.subheader("Sampler comparison")
    st.caption("Every cell starts from the same noise (same seed); stochastic samplers draw "
               "their step noise per image from the seed too. Wall time is measured on this "
               "machine when the cell is first generated (cached afterwards).")
    imports_done_shown()  # sampling needs torch and diffusers
    from litediff_core.samplers import SAMPLERS

    models = {"__base__": "A base model (below)"}
    models.update(ui.run_choices(table[table["status"] == "done"], need="model"))
    c = st.columns([2, 2])
    which = c[0].selectbox("Model", list(models), format_func=models.get, key="sm_model")
    base_source = c[1].text_input("Base model", "embedded", key="sm_base",
                                  disabled=which != "__base__",
                                  help="embedded, a local diffusers folder, or a hub id")
    c = st.columns([3, 2, 1, 1, 1])
    samplers = c[0].multiselect("Samplers", list(SAMPLERS), default=list(SAMPLERS),
                                key="sm_samplers")
    steps_text = c[1].text_input("Step counts", "10, 25", key="sm_steps",
                                 help="comma-separated, e.g. 5, 10, 25")
    n = int(c[2].number_input("Images", 1, 64, 8, key="sm_n"))
    seed = int(c[3].number_input("Seed", 0, 2**31 - 1, 0, key="sm_seed"))
    device_choice = c[4].selectbox("Device", DEVICES, key="sm_device")
    if st.button("Generate", key="sm_go", type="primary"):
        st.session_state["sm_request"] = {"which": which, "base": base_source,
                                          "samplers": list(samplers), "steps": steps_text,
                                          "n": n, "seed": seed, "device": device_choice}
    request = st.session_state.get("sm_request")
    if request:
        show_comparison(request)


def show_comparison(req: dict) -> None:
    from litediff_core.evaluate import grid_quality
    from litediff_core.samplers import grid

    try:
        steps = _parse_steps(req["steps"])
        device = resolve_device(req["device"])
        if not req["samplers"]:
            raise LiteDiffError("pick at least one sampler")
        if req["which"] == "__base__":
            source, stamp, label = req["base"], 0.0, f"base `{req['base']}`"
        else:
            store, run_id = ui.resolve(req["which"])
            folder = store.root / run_id
            source, stamp, label = str(folder / "model"), stamp_of(folder), f"run `{run_id}`"
        ui.load_model(source, stamp)
        cells = {}
        bar = st.progress(0.0, text="Sampling…")
        total = len(req["samplers"]) * len(steps)
        for i, sampler in enumerate(req["samplers"]):
            for j, k in enumerate(steps):
                cells[sampler, k] = sampler_cell(source, stamp, sampler, k, req["n"],
                                                    req["seed"], device)
                bar.progress((i * len(steps) + j + 1) / total,
                             text=f"Sampling… {sampler}, {k} steps")
        bar.empty()
    except LiteDiffError as e:
        st.error(str(e))
        return
    except KeyError:
        st.error("That run is no longer in the store.")
        return
    setup = f"{label}, {req['n']} images per cell, seed {req['seed']}, {device}"
    st.markdown(f"**{setup}** — rows: samplers, columns: steps")
    fmnist = ui.load_model(source, stamp).meta.dataset == "fashion-mnist"
    quality = {key: grid_quality(cells[key][0]) for key in cells} if fmnist else {}
    rank = {key: i + 1 for i, key in enumerate(
        sorted(quality, key=lambda key: -quality[key]["score"]))}
    for sampler in req["samplers"]:
        cols = st.columns(len(steps))
        for col, k in zip(cols, steps):
            images, seconds = cells[sampler, k]
            q = quality.get((sampler, k))
            figure = (f"; quality {q['score']:.2f} (#{rank[sampler, k]} of {len(rank)}) = "
                      f"confidence {q['confidence']:.2f} × classes {q['coverage'] * 10:.1f}/10"
                      if q else "")
            col.image(grid(images, nrow=min(req["n"], 8)), width="stretch",
                      caption=f"{sampler}, {k} steps — {seconds:.2f} s wall "
                              f"({seconds / req['n'] * 1000:.0f} ms/image){figure}")
    if fmnist:
        st.caption(f"Quality = the shipped Fashion-MNIST classifier's (litediff-fmnist-cnn-v1) "
                   f"mean confidence in the {req['n']} images of a cell × their class coverage "
                   f"(effective number of classes among them, of 10). Grey squares or one "
                   f"garment repeated score ≤ 0.1 however sure the classifier is; with fewer "
                   f"than 10 images coverage cannot reach 10. A quick figure on "
                   f"{req['n']} images, not an FID: compare FIDs of stored runs for that.")
    else:
        st.caption("No per-cell quality figure: the shipped classifier knows Fashion-MNIST only; "
                   "compare FIDs of stored runs instead.")
    import torch

    order = [(s, k) for s in req["samplers"] for k in steps]
    sheet = grid(torch.cat([cells[key][0] for key in order]), nrow=req["n"])
    st.download_button("Download PNG (one row per cell)", png_bytes(sheet),
                       "sampler-comparison.png", "image/png", key="sm_dl")
    st.caption("Rows of the PNG, top to bottom: " + "; ".join(
        f"{s} {k} steps ({cells[s, k][1]:.2f} s)" for s, k in order) + f". Setup: {setup}.")


def main() -> None:
    st.title("Samples & samplers")
    table = ui.runs_table()
    ui.no_cached_results_info(table)
    stored_samples(table)
    sampler_comparison(table)


main()
