"""The run store: one folder per recipe run, written atomically, and the runner that fills it.

A run folder (``<store>/<id>``, id = first 12 hex of the recipe key) holds::

    recipe.json     the recipe (plain data)          status.json   done | failed (+ error, times)
    metrics.json    size, latency (best of 3 rounds of median step times, alternating with the
                    base; speed-up = median of the 3 rounds' ratios), FID/KID with
                    interval, SSIM/PSNR to the base, quality gate, stage timings, notes, versions
    layers.csv      per-layer params / channels / sparsity / MACs before and after
    samples.png     a fixed-seed sample grid          model/       the compressed model
    log.jsonl       one line per stage

Runs are built in a hidden ``.tmp-<id>-<pid>`` folder and renamed into place, so a reader never
sees half a run; a run that raises is stored with status ``failed``, its error and no model; a
``.tmp-*`` folder whose process is gone (killed) is listed as ``interrupted`` until the next run in
the store (or ``litediff runs --clean``) removes it. Paths inside a run are relative to its folder.

Training stages keep resumable checkpoints in ``<store>/_checkpoints/<id>/`` while the run is
unfinished: the same recipe run again (after a kill, a failure, a stopped session) resumes each
training stage where its checkpoint left it, to the same result; a recipe's stages that train
with ``curve_every`` store their recovery curves under ``metrics["recovery"]``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import pandas as pd

from . import __version__
from .errors import LiteDiffError
from .fileio import replace_dir, write_json_atomic
from .progress import Progress, prefixed, report
from .recipes import Recipe

STATUS, RECIPE, METRICS, LAYERS, GRID, MODEL = ("status.json", "recipe.json", "metrics.json",
                                                "layers.csv", "samples.png", "model")
CHECKPOINTS = "_checkpoints"   # <store>/_checkpoints/<id>/<stage index>-<stage>/ (resumable)


def user_store() -> Path:
    """Where new runs go: ``$LITEDIFF_RUNS`` or ``~/.local/share/litediff/runs``."""
    return Path(os.environ.get("LITEDIFF_RUNS") or os.path.join(
        os.environ.get("XDG_DATA_HOME", os.path.expanduser("~/.local/share")), "litediff", "runs"))


def _write_json(path: Path, data) -> None:
    write_json_atomic(path, data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str) -> Optional[int]:
    """The pid of the process a hidden working folder belongs to: ``.tmp-<id>-<pid>``,
    ``.trash-<id>-<pid>`` (a delete), ``.<id>.old-<pid>`` (a replace); None for other names."""
    if not name.startswith((".tmp-", ".trash-")) and ".old-" not in name:
        return None
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


class RunStore:
    def __init__(self, root=None):
        self.root = Path(root) if root else user_store()

    def run_dir(self, recipe: Recipe) -> Path:
        return self.root / recipe.key()[:12]

    def find(self, recipe: Recipe) -> Optional[Path]:
        """The finished run of this recipe, if any."""
        d = self.run_dir(recipe)
        return d if self.status(d).get("status") == "done" else None

    @staticmethod
    def status(run_dir: Path) -> dict:
        try:
            return json.loads((Path(run_dir) / STATUS).read_text())
        except (OSError, ValueError):
            return {}

    def runs(self):
        """Every run folder (finished, failed, or interrupted), oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for d in self.root.iterdir():
            try:  # another process may rename or delete it meanwhile
                if d.is_dir() and not d.name.startswith("_"):
                    found.append((d.stat().st_mtime, d))
            except FileNotFoundError:
                continue
        return [d for _, d in sorted(found)]

    def checkpoint_dir(self, run_id: str) -> Path:
        """Where the training stages of run ``run_id`` keep their resumable checkpoints."""
        return self.root / CHECKPOINTS / run_id

    def checkpoints(self) -> dict:
        """run id → (stage folder → step reached) of every unfinished run's checkpoints."""
        from .compress._checkpoint import read_state

        found = {}
        root = self.root / CHECKPOINTS
        for run in sorted(root.iterdir()) if root.is_dir() else []:
            stages = {d.name: (read_state(d) or {}).get("step") for d in sorted(run.iterdir())
                      if d.is_dir() and not d.name.startswith(".")}
            if stages:
                found[run.name] = stages
        return found

    def clean(self) -> list:
        """Remove the working folders of processes that are gone (a run killed mid-way, a
        delete or a replace cut short); the names removed."""
        removed = []
        for d in self.runs():
            pid = _owner_pid(d.name)
            if pid is not None and not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        return removed

    def load(self, run_id: str) -> dict:
        d = self.root / run_id
        if not d.is_dir():
            raise LiteDiffError(f"no run {run_id!r} in {self.root}")
        out = {"id": run_id, "path": str(d), "status": self.status(d)}
        for key, name in (("recipe", RECIPE), ("metrics", METRICS)):
            try:
                out[key] = json.loads((d / name).read_text())
            except (OSError, ValueError):
                out[key] = {}
        if "model" in out["metrics"]:  # older runs hold the absolute path of their tmp folder
            out["metrics"]["model"] = MODEL
        return out

    def layers(self, run_id: str) -> pd.DataFrame:
        return pd.read_csv(self.root / run_id / LAYERS)

    def delete(self, run_id: str) -> None:
        d = self.root / run_id
        if not d.is_dir() or d.parent != self.root:
            raise LiteDiffError(f"no run {run_id!r} in {self.root}")
        trash = self.root / f".trash-{run_id}-{os.getpid()}"
        try:
            os.replace(d, trash)
        except FileNotFoundError:  # deleted by another process meanwhile
            raise LiteDiffError(f"no run {run_id!r} in {self.root}") from None
        shutil.rmtree(trash, ignore_errors=True)

    def table(self) -> pd.DataFrame:
        """One row per run, for the CLI (``litediff runs``) and the dashboard."""
        rows = []
        for d in self.runs():
            status = self.status(d)
            if d.name.startswith(".tmp-"):
                pid = _owner_pid(d.name)
                if pid is None or _pid_alive(pid) or not d.is_dir():
                    continue  # still running, or finished (renamed) since it was listed
                status = {**status, "status": "interrupted", "error": "interrupted"}
            elif d.name.startswith("."):
                continue
            try:
                run = self.load(d.name)
            except LiteDiffError:  # renamed into place or deleted meanwhile
                continue
            rows.append(_row(d.name, run["recipe"], status, run["metrics"]))
        return pd.DataFrame(rows, columns=COLUMNS)


COLUMNS = ["id", "name", "method", "status", "params", "nonzero_params", "bytes", "macs",
           "latency_ms", "speedup", "image_ms", "image_speedup", "macs_total", "fid", "fid_lo", "fid_hi", "kid", "ssim_to_base",
           "psnr_to_base", "gate", "train_steps", "wall_s", "eval", "created", "error"]


def _row(run_id, recipe, status, m) -> dict:
    size, lat, fid = m.get("size", {}), m.get("latency", {}), m.get("fidelity", {})
    cons, gate = m.get("consistency", {}), m.get("quality_gate", {})
    per = m.get("per_image") or {}   # whole images, against the dense base at DDIM 50
    ev = recipe.get("eval", {})
    return {
        "id": run_id, "name": recipe.get("name", ""), "method": m.get("method", ""),
        "status": status.get("status", "unknown"),
        "params": size.get("params"), "nonzero_params": size.get("nonzero_params"),
        "bytes": size.get("bytes"), "macs": size.get("macs_per_image"),
        "latency_ms": lat["median_s"] * 1000 if lat.get("median_s") else None,
        "speedup": m.get("speedup"),
        # per image, at the run's own sampling, against the dense base at DDIM 50
        "image_ms": per["seconds"] * 1000 if per.get("seconds") else None,
        "image_speedup": per.get("speedup"), "macs_total": per.get("macs"),
        "fid": fid.get("fid"), "fid_lo": (fid.get("fid_ci95") or [None, None])[0],
        "fid_hi": (fid.get("fid_ci95") or [None, None])[1], "kid": fid.get("kid_mean"),
        "ssim_to_base": cons.get("ssim_mean"), "psnr_to_base": cons.get("psnr_mean"),
        "gate": gate.get("passes"), "train_steps": m.get("train_steps"),
        "wall_s": m.get("wall_s"),
        "eval": f"{ev.get('n')} samples, {ev.get('sampler')} {ev.get('steps')} steps" if ev else "",
        "created": status.get("finished"), "error": status.get("error", ""),
    }


# ----------------------------------------------------------------------------- running

def run_recipe(recipe: Recipe, store: RunStore, progress: Optional[Progress] = None,
               device: str = "auto", force: bool = False, restart: bool = False,
               checkpoint_every_s: float = 60.0,
               checkpoint_every_steps: Optional[int] = None) -> Path:
    """Run ``recipe`` into ``store`` (or return the finished run with the same key).

    Training stages keep a checkpoint in ``<store>/_checkpoints/<id>/`` (every
    ``checkpoint_every_s`` seconds, or every ``checkpoint_every_steps`` steps): a run killed or
    failed mid-way resumes from there when the same recipe runs again (``restart`` discards
    them and starts afresh). They are removed once the run is done."""
    store.clean()
    done = store.find(recipe)
    if done and not force:
        report(progress, 1, 1, "already run: reused")
        return done
    final = store.run_dir(recipe)
    checkpoints = store.checkpoint_dir(final.name)
    if restart or force:
        shutil.rmtree(checkpoints, ignore_errors=True)
    store.root.mkdir(parents=True, exist_ok=True)
    tmp = store.root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _write_json(tmp / RECIPE, recipe.to_dict())
    started = time.time()
    _write_json(tmp / STATUS, {"status": "running", "pid": os.getpid(), "started": started})
    from .compress._checkpoint import Checkpointing

    keep = Checkpointing(checkpoints, every_s=checkpoint_every_s,
                         every_steps=checkpoint_every_steps)
    from .compress import make_stage

    if any(make_stage(s).trains for s in recipe.stages):  # what an unfinished run was
        checkpoints.mkdir(parents=True, exist_ok=True)
        _write_json(checkpoints / RECIPE, recipe.to_dict())
    try:
        _execute(recipe, tmp, progress, device, keep)
        metrics = json.loads((tmp / METRICS).read_text())
        _write_json(tmp / METRICS, {**metrics, "model": MODEL})  # relative to the run folder
        status = {"status": "done"}
    except BaseException as e:  # noqa: BLE001 — stored, then re-raised below
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        status = {"status": "failed", "error": f"{type(e).__name__}: {first}"}
        error = e
        shutil.rmtree(tmp / MODEL, ignore_errors=True)  # a failed run keeps no model
    else:
        error = None
    _write_json(tmp / STATUS, {**status, "started": started, "finished": time.time(),
                               "litediff_version": __version__})
    replace_dir(tmp, final)
    if error is not None:
        raise error
    shutil.rmtree(checkpoints, ignore_errors=True)  # done: nothing left to resume
    return final


def _execute(recipe: Recipe, out: Path, progress: Optional[Progress], device: str,
             checkpointing=None) -> None:
    from .compress import CompressState, make_stage, save_compressed
    from .data import load_dataset
    from .device import resolve_device
    from .models import load_base

    device = resolve_device(device)
    base = load_base(recipe.base)
    dataset = recipe.dataset or base.meta.dataset
    if not dataset:
        raise LiteDiffError(f"{recipe.base}: unknown dataset; set `dataset` in the recipe")
    base.meta.dataset = dataset
    trained = int(base.scheduler.config.num_train_timesteps)
    if recipe.eval["steps"] > trained:
        raise LiteDiffError(f"recipe eval steps {recipe.eval['steps']} exceed the {trained} "
                            f"timesteps {recipe.base} was trained with")
    import torch

    torch.manual_seed(recipe.seed)
    data = load_dataset(dataset, "train") if recipe.stages else None
    state = CompressState.start(base.unet, base.scheduler, dataset=dataset, data=data)
    n_stages = len(recipe.stages)
    timings, recovery = [], []
    with (out / "log.jsonl").open("w") as log:
        for i, spec in enumerate(recipe.stages):
            stage = make_stage(spec)
            t0 = time.time()

            def sub(done, total, message, _i=i, _name=stage.name):
                report(progress, _i * 1000 + int(1000 * done / max(total, 1)),
                       (n_stages + 1) * 1000, prefixed(_name, message))

            if checkpointing is not None and stage.trains:
                state.checkpointing = dataclasses.replace(
                    checkpointing, folder=checkpointing.folder / f"{i}-{stage.name}")
            state = stage.apply(state, sub)
            state.checkpointing = None
            timings.append({"stage": stage.name, "seconds": round(time.time() - t0, 2)})
            entry = state.log[-1] if state.log else {}
            if entry.get("curve"):
                recovery.append({"stage_index": i, "stage": stage.name,
                                 "label": entry["curve_label"], "points": entry["curve"],
                                 "reference": entry.get("curve_reference"),
                                 "resumed_from": entry.get("resumed_from", 0)})
            log.write(json.dumps({**timings[-1], "log": state.log[-1] if state.log else {}},
                                 default=str) + "\n")
    save_compressed(state, out / MODEL, {**_meta_of(base), "recipe": recipe.to_dict()})

    def eval_progress(done, total, message):
        report(progress, n_stages * 1000 + int(1000 * done / max(total, 1)),
               (n_stages + 1) * 1000, f"evaluating: {message}")

    metrics = measure(base, out / MODEL, recipe, device, out, eval_progress)
    if recovery:
        metrics["recovery"] = recovery
    metrics.update({"method": recipe.method(), "stages": timings, "notes": list(state.notes),
                    "train_steps": sum(int(s["config"].get("steps", 0)) for s in recipe.stages
                                       if make_stage(s).trains),
                    "wall_s": round(sum(t["seconds"] for t in timings), 1)})
    _write_json(out / METRICS, metrics)


LATENCY_ROUNDS = 3
LATENCY_PAUSE_S = 0.5


def _meta_of(base) -> dict:
    m = base.meta
    return {"dataset": m.dataset, "resolution": m.resolution, "channels": m.channels,
            "classes": m.classes, "base": m.source}


def measure(base, model_dir: Path, recipe: Recipe, device: str, out: Path,
            progress: Optional[Progress] = None) -> dict:
    """Evaluate the saved model against its base, with ratios measured in this one run."""
    from .evaluate import EvalConfig, evaluate
    from .metrics import ssim_psnr
    from .models import load_base
    from .samplers import generate, grid

    from .compress.quant_onnx import OnnxUNet

    compressed = load_base(str(model_dir))
    compressed.meta.dataset = base.meta.dataset
    if isinstance(compressed.unet, OnnxUNet):
        device = "cpu"  # our ONNX Runtime sessions run on the CPU; the base is timed there too
    ev = recipe.eval
    cfg = EvalConfig(n=ev["n"], sampler=ev["sampler"], steps=ev["steps"], eta=ev["eta"],
                     seed=recipe.seed, device=device, latency_batch=ev["latency_batch"])
    result = evaluate(compressed, cfg, progress=progress)
    # the ratio to the base: both timed in alternating rounds on the same device and threads,
    # so a slow spell of a shared machine hits both (median of the rounds' medians)
    result.update(latency_vs_base(base.unet, compressed.unet, cfg.latency_batch, device))
    report(progress, 0, 1, "timing whole images against the dense base at DDIM 50")
    result["per_image"] = image_cost_vs_base(base, compressed, cfg, device)
    # consistency: the run's own sampling against the dense base's reference sampling (DDIM
    # 50), from the same noise (for DDIM-50 runs: the same sampler on both sides)
    from .evaluate import caching_of, sampler_kwargs

    ref = REFERENCE_SAMPLING
    images = generate(compressed.unet.to(device), dict(compressed.scheduler.config),
                      sampler=ev["sampler"], steps=ev["steps"], n=min(ev["n"], 256),
                      seed=recipe.seed, device=device, **sampler_kwargs(cfg))
    reference = base_samples(base, ref["sampler"], ref["steps"], min(ev["n"], 256), recipe.seed,
                             device, cache=out.parent / "_cache")
    cons = ssim_psnr(images, reference)
    own = f"{ev['sampler']} {ev['steps']} steps" + (f", η={cfg.eta:g}" if cfg.eta else "") + (
        f", cached every {caching_of(compressed.unet)['cache_interval']}"
        if caching_of(compressed.unet) else "")
    result["consistency"] = {"ssim_mean": cons["ssim_mean"], "psnr_mean": cons["psnr_mean"],
                             "n": cons["n"], "setup": f"compressed with {own} vs the base with "
                             f"DDIM {ref['steps']} steps, same noise (seed {recipe.seed})"}
    grid(images[:64], nrow=8).save(out / GRID)
    from .compress._io_hooks import torch_unet  # the torch UNet inside a runtime wrapper

    layers(base.unet, torch_unet(compressed.unet).cpu()).to_csv(out / LAYERS, index=False)
    return result


def latency_vs_base(base_unet, unet, batch_size: int, device: str) -> dict:
    """Step latency of ``unet`` and its ratio to ``base_unet``, timed in LATENCY_ROUNDS
    alternating rounds on the same device and threads, so that a slow spell of a shared
    machine hits both: ``speedup`` is the median of the rounds' ratios."""
    rounds = [(_timed_after_pause(base_unet, batch_size, device),
               _timed_after_pause(unet, batch_size, device)) for _ in range(LATENCY_ROUNDS)]
    ratios = sorted(b["median_s"] / c["median_s"] for b, c in rounds)
    fastest = [min((r[i] for r in rounds), key=lambda x: x["median_s"]) for i in (0, 1)]
    return {"base_latency": fastest[0], "latency": fastest[1],
            "speedup": ratios[len(ratios) // 2], "speedup_rounds": ratios}


REFERENCE_SAMPLING = {"sampler": "ddim", "steps": 50}   # what per-image speed-ups compare to


def unet_calls(steps: int, interval: Optional[int] = None) -> tuple:
    """(full, cached) UNet calls of one trajectory of ``steps`` steps; every sampler here
    calls the UNet once per step, and DeepCache runs the whole UNet every ``interval`` calls."""
    full = steps if not interval else -(-steps // interval)
    return full, steps - full


def image_macs(size: dict, steps: int, interval: Optional[int] = None) -> int:
    """MACs to generate one image: full steps × MACs per step + cached steps × their MACs."""
    full, cached = unet_calls(steps, interval)
    return int(full * size["macs_per_image"] + cached * size.get("cached_step_macs", 0))


def image_cost_vs_base(base, compressed, cfg, device: str) -> dict:
    """Time and MACs to generate one image with the run's own sampler, steps, η and caching,
    against the dense base with DDIM 50 steps: a batch of ``cfg.latency_batch`` images drawn
    end to end (sampler arithmetic included), the two timed in LATENCY_ROUNDS alternating
    rounds; ``speedup`` is the median of the rounds' ratios."""
    from .evaluate import caching_of, sampler_kwargs
    from .metrics import sampling_throughput, size_report

    ref = REFERENCE_SAMPLING
    batch, kwargs = cfg.latency_batch, sampler_kwargs(cfg)
    load = os.getloadavg()[0]   # timings taken while other jobs ran are recorded as such
    rounds = []
    for _ in range(LATENCY_ROUNDS):
        time.sleep(LATENCY_PAUSE_S)
        b = sampling_throughput(base.unet, dict(base.scheduler.config), ref["sampler"],
                                ref["steps"], n=batch, device=device)
        time.sleep(LATENCY_PAUSE_S)
        c = sampling_throughput(compressed.unet, dict(compressed.scheduler.config), cfg.sampler,
                                cfg.steps, n=batch, device=device, **kwargs)
        rounds.append((b["seconds"] / batch, c["seconds"] / batch))
    ratios = sorted(b / c for b, c in rounds)
    caching = caching_of(compressed.unet)
    interval = caching.get("cache_interval")
    full, cached = unet_calls(cfg.steps, interval)
    return {
        "seconds": min(c for _, c in rounds), "base_seconds": min(b for b, _ in rounds),
        "speedup": ratios[len(ratios) // 2], "speedup_rounds": ratios,
        "macs": image_macs(size_report(compressed.unet), cfg.steps, interval),
        "base_macs": image_macs(size_report(base.unet), ref["steps"]),
        "unet_calls": {"full": full, "cached": cached},
        "setup": {"sampler": cfg.sampler, "steps": cfg.steps, **kwargs, **caching},
        "base_setup": dict(ref), "batch_size": batch, "device": str(device),
        "threads": _threads(), "load_average": round(load, 2),
    }


def remeasure_latency(store: RunStore, run_id: str, device: str = "cpu",
                      progress: Optional[Progress] = None, bases: Optional[dict] = None) -> dict:
    """Time a stored run against its base again (e.g. once the machine is quiet) and update
    its metrics in place; the previous figures are kept under ``latency_history``. ``bases``
    (source → loaded base) lets a loop over many runs load each base once."""
    from .models import load_base

    run = store.load(run_id)
    if run["status"].get("status") != "done":
        raise LiteDiffError(f"run {run_id} is not finished")
    model_dir = store.root / run_id / MODEL
    if not model_dir.is_dir():
        raise LiteDiffError(f"run {run_id} has no saved model (cached results ship without "
                            f"weights: regenerate them to time them)")
    m = run["metrics"]
    batch = int(Recipe.from_dict(run["recipe"]).eval["latency_batch"])
    bases = {} if bases is None else bases
    source = run["recipe"]["base"]
    base = bases[source] = bases.get(source) or load_base(source)
    compressed = load_base(str(model_dir))
    from .compress.quant_onnx import OnnxUNet

    if isinstance(compressed.unet, OnnxUNet):
        device = "cpu"  # as when it was measured first
    report(progress, 0, 1, f"timing {run_id}")
    new = latency_vs_base(base.unet, compressed.unet, batch, device)
    from .evaluate import EvalConfig

    ev = Recipe.from_dict(run["recipe"]).eval
    new["per_image"] = image_cost_vs_base(base, compressed, EvalConfig(
        sampler=ev["sampler"], steps=ev["steps"], eta=ev["eta"], latency_batch=batch), device)
    old = {k: m.get(k) for k in ("latency", "base_latency", "speedup", "speedup_rounds",
                                 "per_image")}
    m["latency_history"] = m.get("latency_history", []) + [old]
    m.update(new)
    m["latency_remeasured"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _write_json(store.root / run_id / METRICS, m)
    report(progress, 1, 1, f"{run_id}: {new['speedup']:.2f}×")
    return new


def _timed_after_pause(unet, batch_size: int, device: str) -> dict:
    """``step_latency`` after LATENCY_PAUSE_S idle: thread pools (PyTorch's OpenMP, each ONNX
    Runtime session's) spin-wait for a while after a call, and one still spinning slows the
    next model on a small machine (ORT int8 after PyTorch: 35 instead of 20 ms per step)."""
    from .metrics import step_latency

    time.sleep(LATENCY_PAUSE_S)
    return step_latency(unet, batch_size=batch_size, device=device)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def base_samples(base, sampler: str, steps: int, n: int, seed: int, device: str,
                 cache: Optional[Path] = None) -> "torch.Tensor":
    """The base model's samples for a setup, cached under a key of its weights and the setup."""
    import hashlib

    from safetensors.torch import load_file, save, save_file

    from .samplers import generate

    path = None
    if cache is not None:
        weights = save({k: v.contiguous() for k, v in base.unet.state_dict().items()})
        key = hashlib.sha256(weights + json.dumps(
            [dict(base.scheduler.config), sampler, steps, n, seed], sort_keys=True,
            default=str).encode()).hexdigest()[:24]
        path = Path(cache) / f"base-samples-{key}.safetensors"
        if path.exists():
            return load_file(str(path))["images"]
    images = generate(base.unet.to(device), dict(base.scheduler.config), sampler=sampler,
                      steps=steps, n=n, seed=seed, device=device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file({"images": images.contiguous()}, str(tmp))
        os.replace(tmp, path)
    return images


def layers(before, after) -> pd.DataFrame:
    """Per-layer table of a base and a compressed UNet, joined on the layer name."""
    from .metrics import layer_table

    a, b = layer_table(before), layer_table(after)
    for t in (a, b):
        t["channels"] = t["shape"].map(lambda s: int(str(s).split("×")[0]) if s else None)
    cols = ["name", "type", "params", "nonzeros", "macs", "channels"]
    merged = a[cols].merge(b[cols], on="name", how="outer", suffixes=("_before", "_after"),
                           sort=False)
    merged["type"] = merged["type_before"].fillna(merged["type_after"])
    merged["sparsity_after"] = 1 - merged["nonzeros_after"] / merged["params_after"]
    return merged[["name", "type", "params_before", "params_after", "channels_before",
                   "channels_after", "sparsity_after", "macs_before", "macs_after"]]
