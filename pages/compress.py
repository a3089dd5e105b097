"""Compress: build a recipe from the stage registry, predict its size, run it in the background.

The stage forms are generated from ``STAGES`` / ``describe_stage``; presets fill the stage list
from ``PRESETS``. "Run" starts ``run_recipe`` as a background job (``litediff_core.jobs``) into
the user run store; a fragment polls the job for progress, ETA and the loss curve.
"""

import json

import pandas as pd
import streamlit as st

from litediff_core.compress import STAGES, describe_stage, make_stage
from litediff_core.device import DEVICES, resolve_device
from litediff_core.errors import LiteDiffError
from litediff_core.presets import PRESETS, preset_recipe
from litediff_core.recipes import EVAL_DEFAULTS, Recipe
from pages import _shared as ui
from pages._warm_up import imports_done_shown

# ----------------------------------------------------------------------------- stage list state


def _stages() -> list:
    return st.session_state.setdefault("cp_stages", [])


def _new_uid() -> int:
    st.session_state["cp_uid"] = st.session_state.get("cp_uid", 0) + 1
    return st.session_state["cp_uid"]


def _add_stage():
    name = st.session_state.get("cp_add_choice") or next(iter(STAGES))
    defaults = {o["name"]: o["default"] for o in describe_stage(name)}
    _stages().append({"uid": _new_uid(), "stage": name, "config": defaults})


def _remove_stage(uid: int):
    st.session_state["cp_stages"] = [s for s in _stages() if s["uid"] != uid]


def _move_stage(uid: int, delta: int):
    stages = _stages()
    i = next(k for k, s in enumerate(stages) if s["uid"] == uid)
    j = min(max(i + delta, 0), len(stages) - 1)
    stages[i], stages[j] = stages[j], stages[i]


def _clear_stages():
    st.session_state["cp_stages"] = []


def _fill_preset(name: str):
    """Replace the stage list by a preset's stages (fresh widget keys, so the forms reset)."""
    p = st.session_state.get("cp_preset_p", 0.3)
    steps = int(st.session_state.get("cp_preset_steps", 400))
    try:
        recipe = preset_recipe(name, p=p, steps=steps)
    except LiteDiffError as e:
        st.session_state["cp_preset_error"] = str(e)
        return
    st.session_state["cp_stages"] = [{"uid": _new_uid(), **s} for s in recipe.stages]
    st.session_state["cp_name"] = st.session_state["_kept_cp_name"] = recipe.name


def kept(widget, label: str, key: str, default, options=None, **kwargs):
    """A form widget whose value survives visits to other pages (Streamlit drops the state of
    widgets a page run does not draw): the last value is mirrored under ``_kept_<key>``."""
    value = st.session_state.get(f"_kept_{key}", default)
    if options is not None:
        value = widget(label, options, index=list(options).index(value)
                       if value in options else 0, key=key, **kwargs)
    else:
        value = widget(label, value=value, key=key, **kwargs)
    st.session_state[f"_kept_{key}"] = value
    return value


# ----------------------------------------------------------------------------- option widgets

def option_widget(opt: dict, value, key: str):
    """The widget for one stage option, from what the stage declares: type, choices, range
    and widget hint (``describe_stage``)."""
    label, kind, help_, choices = opt["name"], opt["type"], opt["help"] or None, opt["choices"]
    if kind == "bool":
        return st.checkbox(label, value=bool(value), key=key, help=help_)
    if kind == "list[str]":
        chosen = [v for v in (value or []) if v in (choices or [])]
        return st.multiselect(label, choices or [], default=chosen, key=key, help=help_)
    if choices:
        index = choices.index(value) if value in choices else 0
        return st.selectbox(label, choices, index=index, key=key, help=help_)
    if kind not in ("float", "int"):
        return st.text_input(label, value=str(value), key=key, help=help_)
    num, step = (float, 0.01) if kind == "float" else (int, 1)
    low, high = opt["low"], opt["high"]
    if opt["widget"] == "slider":  # both bounds declared; an open bound is one step inside
        bottom = num(low) + (step if opt["open_low"] else 0)
        top = num(high) - (step if opt["open_high"] else 0)
        return st.slider(label, bottom, top, min(max(num(value), bottom), top), step, key=key,
                         help=help_)
    bounds = {}  # an open bound is left to the stage's own check (its message says why)
    if low is not None and not opt["open_low"]:
        bounds["min_value"] = num(low)
    if high is not None and not opt["open_high"]:
        bounds["max_value"] = num(high)
    if kind == "float":
        return st.number_input(label, value=float(value), key=key, help=help_, format="%g",
                               **bounds)
    return int(st.number_input(label, value=int(value), step=1, key=key, help=help_, **bounds))


def stage_editor(index: int, spec: dict, count: int) -> None:
    uid = spec["uid"]
    with st.container(border=True):
        head = st.columns([8, 1, 1, 1])
        doc = STAGES[spec["stage"]].summary()
        head[0].markdown(f"**{index + 1}. `{spec['stage']}`**" + (f" — {doc}" if doc else ""))
        head[1].button("↑", key=f"cp_up_{uid}", on_click=_move_stage, args=(uid, -1),
                       disabled=index == 0, help="move up")
        head[2].button("↓", key=f"cp_down_{uid}", on_click=_move_stage, args=(uid, 1),
                       disabled=index == count - 1, help="move down")
        head[3].button("✕", key=f"cp_rm_{uid}", on_click=_remove_stage, args=(uid,),
                       help="remove this stage")
        cols = st.columns(3)
        config = {}
        for j, opt in enumerate(describe_stage(spec["stage"])):
            with cols[j % 3]:
                config[opt["name"]] = option_widget(
                    opt, spec["config"].get(opt["name"], opt["default"]),
                    key=f"cp_{uid}_{opt['name']}")
        spec["config"] = config


# ----------------------------------------------------------------------------- results

def show_run(store, run_id: str) -> None:
    """A finished run's measurements and samples."""
    from litediff_core.results import Latency, Size

    run = store.load(run_id)
    r, recipe, status = run["result"], run["recipe"], run["status"]
    if status.get("status") != "done":
        st.error(f"Run {run_id} failed: {status.get('error', 'unknown error')}")
        return
    size, lat = r.size or Size(), r.latency or Latency()
    st.markdown(f"**{recipe.get('name', run_id)}** · run `{run_id}` · `{r.method or ''}`")
    cols = st.columns(5)
    cols[0].metric("Parameters", ui.fmt(size.params, "params"))
    cols[1].metric("MACs / image / step", ui.fmt(size.macs_per_image, "macs"))
    cols[2].metric("Weights on disk", ui.fmt(size.bytes, "bytes"))
    cols[3].metric(f"Step latency ({lat.device or '?'}, batch {lat.batch_size})",
                   ui.fmt(lat.median_ms, "ms"))
    cols[4].metric("Speed-up vs base (same run)", ui.fmt(r.speedup, "x"))
    if r.fidelity:
        st.markdown(f"**Quality** — {r.fidelity.label or ''}")
    if r.consistency:
        cons = r.consistency
        st.markdown(f"SSIM to base {cons.ssim_mean:.3f}, PSNR {cons.psnr_mean:.1f} dB "
                    f"({cons.setup or ''})")
    if r.quality_gate:
        gate = r.quality_gate
        st.markdown(f"Quality gate ({gate.rule}): "
                    f"{'passes' if gate.passes else 'does not pass'}")
    for note in r.notes or []:
        st.info(note)
    grid = store.root / run_id / "samples.png"
    if grid.exists():
        ev = recipe.get("eval", {})
        st.image(str(grid), caption=f"{min(int(ev.get('n', 64)), 64)} samples, DDIM "
                 f"{ev.get('steps')} steps, seed {recipe.get('seed')}, {lat.device or ''}")
    st.caption("Compare it with other runs on the Pareto and Runs pages; per-layer changes are "
               "on the Layers page.")


def _dismiss():
    st.session_state.pop("cp_job", None)


def _fmt_s(seconds) -> str:
    if seconds is None:
        return "estimating…"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def loss_chart(snap: dict) -> None:
    if len(snap["losses"]) == 1:  # one point draws no line: show it as a dot
        st.scatter_chart(pd.DataFrame(snap["losses"]), x="step", y="loss",
                         x_label="training step (reported)", y_label="training loss (MSE)",
                         height=220)
        st.caption(f"Latest loss {snap['last_loss']:.4f} (the curve grows with each report)")
    elif snap["losses"]:
        df = pd.DataFrame(snap["losses"])
        st.line_chart(df, x="step", y="loss", color="stage" if df["stage"].nunique() > 1 else None,
                      x_label="training step (reported)", y_label="training loss (MSE)",
                      height=220)
        st.caption(f"Latest loss {snap['last_loss']:.4f}")
    if snap.get("curve"):  # recovery-curve points (stages with curve_every)
        df = pd.DataFrame(snap["curve"])
        st.line_chart(df, x="step", y="fid", color="stage" if df["stage"].nunique() > 1 else None,
                      x_label="training step", y_label="curve FID", height=200)
        st.caption(f"Recovery curve so far: FID {df['fid'].iloc[-1]:.1f} at step "
                   f"{int(df['step'].iloc[-1])} (few samples, fast sampler: the Recovery page "
                   f"shows the stored curve with its setup)")


@st.fragment(run_every=1.0)
def live_panel(job_id: str) -> None:
    """Polls the job; once it ends, reruns the whole page to show the result."""
    registry, snap = ui.job_registry(), ui.live_snapshot(job_id)
    if snap is None:
        return
    cancelling = snap.get("cancelling", snap["cancel_requested"])
    if cancelling:
        waited = snap.get("cancel_wait_s")
        st.warning(f"Cancelling… {snap['label']} stops at its next progress report"
                   + (f" (asked {_fmt_s(waited)} ago)" if waited and waited >= 1 else "")
                   + (": it leaves the queue without running." if snap["state"] == "queued"
                      else "; a long step (training, sampling, timing) finishes first. The "
                           "run is then stored as failed (cancelled)."))
    elif snap["state"] == "queued":
        ahead = sum(s["state"] == "running" for s in registry.running())
        st.info(f"Queued: {snap['label']} starts when the {ahead} run(s) ahead of it finish "
                f"(runs execute one at a time so their latency measurements stay fair).")
    st.progress(snap["fraction"], text=("Cancelling… " if cancelling else "")
                + f"{snap['label']} — {snap['message'] or 'starting…'}")
    st.caption(f"{snap['fraction']:.0%} · elapsed {_fmt_s(snap['elapsed_s'])} · " +
               ("stopping at the next progress report" if cancelling else
                f"ETA {_fmt_s(snap['eta_s'])} (rough: from the rate of the current stage)"))
    loss_chart(snap)
    st.button("Cancelling…" if cancelling else "Cancel", key=f"cp_cancel_{job_id}",
              on_click=registry.cancel, args=(job_id,), disabled=cancelling,
              help="stops at the next progress report; the run is stored as failed (cancelled)")


def job_section() -> None:
    registry = ui.job_registry()
    job_id = st.session_state.get("cp_job")
    snap = registry.snapshot(job_id) if job_id else None
    if snap is None:
        return
    st.subheader("Run")
    if snap["state"] in ("queued", "running"):
        live_panel(job_id)
        return
    if snap["state"] == "done":
        st.success(f"Done in {_fmt_s(snap['elapsed_s'])}: {snap['label']}")
        loss_chart(snap)
        show_run(_store_of(snap["result"]), snap["result"].name)
    elif snap["state"] == "cancelled":
        if "before it started" in (snap["error"] or ""):
            st.warning("Cancelled before it started: nothing was run or stored.")
        else:
            st.warning("Cancelled. The run is kept in the run store as failed (cancelled); "
                       "nothing else was touched.")
    else:
        st.error(snap["error"])
    st.button("Dismiss", key="cp_dismiss", on_click=_dismiss)


def _store_of(run_dir):
    from litediff_core.runs import RunStore

    return RunStore(run_dir.parent)


def other_jobs() -> None:
    running = [s for s in ui.job_registry().running() if s["id"] != st.session_state.get("cp_job")]
    if running:
        with st.expander(f"{len(running)} other run(s) in progress on this server"):
            for s in running:
                st.progress(s["fraction"], text=("Cancelling… " if s.get("cancelling") else "")
                            + f"{s['label']} — {s['message']}")


# ----------------------------------------------------------------------------- page

def main() -> None:
    st.title("Compress")
    st.caption("Stack compression stages into a recipe, predict its size, then run it: the run "
               "is measured (size, MACs, real latency, FID, SSIM to the base) and stored.")
    imports_done_shown()  # the base model, the samplers and the size preview need torch
    from litediff_core.samplers import SAMPLERS

    c = st.columns([3, 1, 1, 2])
    with c[0]:
        source = kept(st.text_input, "Base model", "cp_base", "embedded",
                      help="embedded, a local diffusers folder, or a hub id")
    with c[1]:
        device_choice = kept(st.selectbox, "Device", "cp_device", DEVICES[0], options=DEVICES)
    with c[2]:
        seed = int(kept(st.number_input, "Seed", "cp_seed", 0, min_value=0,
                        max_value=2**31 - 1))
    with c[3]:
        name = kept(st.text_input, "Run name (optional)", "cp_name", "")
    dataset = kept(st.text_input, "Dataset (blank: the base model's)", "cp_dataset", "")

    base, problems = None, []
    try:
        device = resolve_device(device_choice)
        base = ui.load_model(source)
    except LiteDiffError as e:
        st.error(str(e))
        problems.append("base")
        device = "cpu"

    st.subheader("Stages")
    with st.expander("Presets — the seed papers' configurations", expanded=not _stages()):
        pc = st.columns(2)
        pc[0].slider("Prune ratio p", 0.05, 0.9, 0.3, 0.05, key="cp_preset_p",
                     help="channel / weight ratio the presets prune (ignored by fresh students)")
        pc[1].number_input("Training steps", 1, 100_000, 400, key="cp_preset_steps",
                           help="fine-tune / distillation steps of the presets")
        cols = st.columns(3)
        for i, (pname, preset) in enumerate(PRESETS.items()):
            cols[i % 3].button(pname, key=f"cp_preset_{pname}", on_click=_fill_preset,
                               args=(pname,), help=f"{preset.paper}: {preset.description}",
                               width="stretch")
        if "cp_preset_error" in st.session_state:
            st.error(st.session_state.pop("cp_preset_error"))

    stages = _stages()
    if not stages:
        st.info("No stages yet: add one below or pick a preset. A recipe without stages "
                "measures the base model itself.")
    for i, spec in enumerate(list(stages)):
        stage_editor(i, spec, len(stages))
    ac = st.columns([3, 1, 1])
    ac[0].selectbox("Stage to add", list(STAGES), key="cp_add_choice",
                    label_visibility="collapsed")
    ac[1].button("Add stage", key="cp_add", on_click=_add_stage, width="stretch")
    ac[2].button("Clear", key="cp_clear", on_click=_clear_stages, width="stretch",
                 disabled=not stages)

    st.subheader("Sampling and evaluation")
    st.caption("The run is sampled this way: FID, the sample grid and the time per image "
               "(against the dense model at DDIM 50) all use this sampler and step count. "
               "Fewer steps are compression too; add a deepcache stage to reuse features "
               "across steps.")
    ec = st.columns(5)
    with ec[0]:
        n = int(kept(st.number_input, "Samples (n)", "cp_n", EVAL_DEFAULTS["n"], min_value=2,
                     max_value=50_000,
                     help="images generated for FID/KID; fewer → wider interval"))
    with ec[1]:
        sampler = kept(st.selectbox, "Sampler", "cp_sampler", EVAL_DEFAULTS["sampler"],
                       options=list(SAMPLERS), help="sampler of the run's samples")
    with ec[2]:
        steps = int(kept(st.number_input, "Sampling steps", "cp_steps", EVAL_DEFAULTS["steps"],
                         min_value=1, max_value=1000))
    with ec[3]:
        eta = float(kept(st.number_input, "DDIM η", "cp_eta", EVAL_DEFAULTS["eta"],
                         min_value=0.0, max_value=1.0, step=0.1,
                         disabled=sampler not in ("ddim", "ams"),
                         help="0 = deterministic DDIM, 1 = as noisy as DDPM (ddim and ams only)"))
        eta = eta if sampler in ("ddim", "ams") else 0.0
    with ec[4]:
        latency_batch = int(kept(st.number_input, "Latency batch", "cp_lat_batch",
                                 EVAL_DEFAULTS["latency_batch"], min_value=1, max_value=1024,
                                 help="images per UNet call when timing a step"))

    recipe = None
    try:
        recipe = Recipe(base=source, dataset=dataset.strip() or None, seed=seed,
                        stages=[{"stage": s["stage"], "config": s["config"]} for s in stages],
                        eval={"n": n, "sampler": sampler, "steps": steps, "eta": eta,
                              "latency_batch": latency_batch}, name=name.strip())
    except LiteDiffError as e:
        st.error(str(e))

    if recipe is not None and base is not None and any(
            make_stage(s).can_preview() for s in recipe.stages):
        if st.toggle("Predict size before running", value=True, key="cp_predict"):
            preview(source, recipe)

    if recipe is not None:
        box = st.expander("Recipe (YAML)", key="cp_yaml", on_change="rerun")
        if box.open:  # drawn when opened (the code highlighter is one more script to load)
            box.code(recipe.to_yaml(), language="yaml")
            box.download_button("Download recipe.yaml", recipe.to_yaml(), "recipe.yaml",
                                key="cp_dl_recipe")
            box.caption(f"Method: `{recipe.method()}` · key `{recipe.key()[:12]}` · CLI: "
                        f"`litediff compress recipe.yaml`")

    rc = st.columns([1, 3])
    force = rc[1].checkbox("Run again even if this exact recipe is already stored",
                           key="cp_force")
    stored = ui.user_store().find(recipe) if recipe is not None else None
    if stored is not None and not force:
        rc[1].caption(f"Already stored as run `{stored.name}`: Run shows it at once.")
    if rc[0].button("Run", type="primary", key="cp_run", width="stretch",
                    disabled=recipe is None or bool(problems)):
        st.session_state["cp_job"] = ui.submit_run(recipe, device=device, force=force)
    job_section()
    other_jobs()


@st.cache_data(show_spinner="Predicting the compressed size…", max_entries=64)
def predict_size(source: str, stages_json: str) -> dict:
    """:func:`litediff_core.compress.preview_size` of a recipe's stages on the cached base."""
    from litediff_core.compress import preview_size

    base = ui.load_model(source)
    return preview_size(base.unet, base.scheduler, json.loads(stages_json),
                        dataset=base.meta.dataset)


def preview(source: str, recipe: Recipe) -> None:
    try:
        before = ui.size_of(source)
        pred = predict_size(source, json.dumps(recipe.stages, sort_keys=True))
    except LiteDiffError as e:
        st.error(str(e))
        return
    after = pred["size"]
    cols = st.columns(4)
    for col, key, label, kind in ((cols[0], "params", "Predicted parameters", "params"),
                                  (cols[1], "nonzero_params", "Predicted non-zero params",
                                   "params"),
                                  (cols[2], "macs_per_image", "Predicted MACs / image / step",
                                   "macs"),
                                  (cols[3], "bytes", "Predicted weights on disk", "bytes")):
        change = (after[key] - before[key]) / before[key] if before[key] else 0.0
        col.metric(label, ui.fmt(after[key], kind), f"{change:+.1%} vs base",
                   delta_color="inverse")
    skipped = f"; not applied in the prediction: {', '.join(pred['skipped'])}" \
        if pred["skipped"] else ""
    st.caption(f"Predicted on the CPU by applying {', '.join(pred['applied']) or 'no stage'} "
               f"to a copy of the base (fvcore MACs of one image per UNet step){skipped}. "
               f"Latency is not predicted: it is measured when the run finishes.")
    for note in pred["notes"]:
        st.caption(f":material/info: {note}")


main()
