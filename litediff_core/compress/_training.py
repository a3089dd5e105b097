"""The training loop shared by the recovery stages (``finetune``, ``distill``, ``lora``).

One loop, :func:`train_noise_prediction`: the DDPM noise-prediction MSE (the target follows the
scheduler's ``prediction_type``, as in :func:`._common.noise_prediction_loss`) on the state's
images, Adam, cosine annealing with warm restarts (``CosineAnnealingWarmRestarts``, period
``T_0`` optimizer steps, as in LiteDiffusion), optional EMA (diffusers ``EMAModel``), optional
extra loss terms, a ``progress(done, total, "loss 0.1234")`` report per step, and the per-step
losses returned (the UI's live loss curve).

Every step draws its images, timesteps and noise from a generator seeded by (seed, step), like
``train/base.py``, so a run is reproducible and does not depend on how many processes share it,
and a loop killed at any point resumes from its last checkpoint (``checkpointing``, see
``_checkpoint.py``) to the same result. A ``monitor`` (``_curve.py``) evaluates the model at
step 0, every ``monitor_every`` steps and at the end: the recovery curve.

Hugging Face Accelerate runs it: ``Accelerator().prepare(model, optimizer)`` and
``accelerator.backward``. On one process Accelerate adds nothing (the model is not wrapped, the
loss is divided by ``gradient_accumulation_steps`` = 1), so the loop is exactly a plain loop.
Under ``accelerate launch --multi_gpu --num_processes N`` (on CPU-only machines also set
``ACCELERATE_USE_CPU=1``; plain ``accelerate launch --cpu --num_processes N`` without mpirun
starts a single, non-distributed process) every process draws the same global batch of
``batch_size`` images and takes its own contiguous shard (``tensor_split``: shards differ by at
most one image). The shard's loss is scaled by ``N · n_shard / batch_size``, so that the
average of the processes' gradients that DDP computes is exactly the gradient of the
global-batch mean; regularisers (``penalty``) are added unscaled on every process, so their
average is themselves. Every process therefore takes the same optimizer step (identical weights
everywhere); against one process with the same ``batch_size`` only float summation order
differs. The learning-rate scheduler is stepped by hand once per step (an
``AcceleratedScheduler`` would step it N times per step). Progress is reported by the main
process only; the loss history (the global-batch loss, averaged over processes) is the same on
every process.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from .._lazy import F, nn, no_grad, torch
from ..errors import LiteDiffError
from ..progress import Event, Progress, report
from ._common import eval_mode, image_sampler, loss_target
from ._curve import MIN_CURVE_SAMPLES
from .base import Stage, clone_model, option


@dataclass
class Batch:
    """What one process sees in one step (its shard of the global batch)."""

    x0: torch.Tensor      # clean images
    noise: torch.Tensor   # the noise added
    t: torch.Tensor       # timesteps
    xt: torch.Tensor      # noisy images the student (and a teacher) sees
    target: torch.Tensor  # the regression target of the prediction type
    pred: torch.Tensor    # the student's output (with grad)


@dataclass
class TrainResult:
    losses: List[float] = field(default_factory=list)  # total loss of every step
    seconds: float = 0.0       # wall time of this call
    train_s: float = 0.0       # training time of all steps, across resumes, evaluation excluded
    processes: int = 1
    curve: List[dict] = field(default_factory=list)    # the monitor's points
    resumed_from: int = 0      # the step a checkpoint resumed at (0: started afresh)

    @property
    def first_loss(self) -> Optional[float]:
        return self.losses[0] if self.losses else None

    @property
    def last_loss(self) -> Optional[float]:
        return self.losses[-1] if self.losses else None


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one step's images, timesteps and noise (as in ``train/base.py``)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def training_data(state, data, who: str):
    """The images a stage trains on: ``data``, else ``state.data``, else the state's dataset."""
    if data is None:
        data = state.data
    if data is None and state.dataset:
        from ..data import load_dataset

        data = load_dataset(state.dataset, "train")
    if data is None:
        raise LiteDiffError(f"{who} needs training images: give the state data or a dataset name")
    return data


def train_noise_prediction(model: nn.Module, scheduler, data, *, steps: int, lr: float,
                           batch_size: int, seed: int = 0, T_0: int = 0, warmup: int = 0,
                           ema: bool = False,
                           ema_decay: float = 0.999, grad_clip: float = 0.0,
                           task_weight: float = 1.0,
                           extra_loss: Optional[Callable[[Batch], torch.Tensor]] = None,
                           penalty: Optional[Callable[[nn.Module], torch.Tensor]] = None,
                           on_step: Optional[Callable[[int, nn.Module], None]] = None,
                           monitor: Optional[Callable[[int, nn.Module, float], dict]] = None,
                           monitor_every: int = 0,
                           checkpointing=None, fingerprint: Optional[dict] = None,
                           extra_state: Optional[dict] = None,
                           progress: Optional[Progress] = None, who: str = "train",
                           accelerator=None) -> TrainResult:
    """Train ``model`` in place (its parameters with ``requires_grad``) for ``steps`` steps.

    Per step: loss = task_weight · MSE(pred, target) + extra_loss(batch) (both averaged over
    the images of the batch) + penalty(model) (a regulariser of the weights). ``extra_loss``
    returns a per-image mean over the batch it gets (e.g. knowledge distillation);
    ``task_weight=0`` skips the MSE. ``on_step(step, model)`` runs after optimizer step
    ``step`` (1-based) on the unwrapped model. ``T_0`` is the cosine restart period in steps
    (0: ``steps``, a single cosine decay to 0); ``warmup`` > 0 ramps the learning rate up
    linearly over the first ``warmup`` steps (step k uses (k / warmup) × the cosine's rate).
    With ``ema`` the model ends with the EMA
    weights. ``grad_clip`` > 0 clips the gradient norm. The model ends on the device it came
    on, in the mode it came in; masked weights (``torch.nn.utils.prune``) stay exactly 0.

    ``monitor(step, model, train_s)`` returns a curve point (run on the main process, on the
    weights the loop would end with: the EMA's when there is one). ``checkpointing``
    (:class:`._checkpoint.Checkpointing`) keeps the loop's state in a folder and resumes from
    it; ``fingerprint`` (the stage's options) and a hash of the starting weights guard it.
    ``extra_state`` is a JSON-able dict of the caller's own counters, saved and restored in place.
    """
    from . import _checkpoint
    from accelerate import Accelerator

    if steps < 1 or batch_size < 1:
        raise LiteDiffError(f"{who}: steps and batch_size must be at least 1")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LiteDiffError(f"{who}: the model has no trainable parameters")
    draw = image_sampler(data, model, who)
    accelerator = accelerator if accelerator is not None else Accelerator()
    processes, rank = accelerator.num_processes, accelerator.process_index
    if batch_size < processes:
        raise LiteDiffError(f"{who}: batch_size {batch_size} is smaller than the number of "
                            f"processes ({processes}): every process needs an image")
    home, was_training = next(model.parameters()).device, model.training
    shard = torch.arange(batch_size).tensor_split(processes)[rank]
    scale = processes * len(shard) / batch_size  # DDP averages: mean of shards = global mean
    T = int(scheduler.config.num_train_timesteps)

    model.to(accelerator.device)
    optimizer = torch.optim.Adam(params, lr=lr)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=T_0 if T_0 > 0 else steps)
    wrapped, opt = accelerator.prepare(model, optimizer)
    averager = None
    if ema:
        from diffusers.training_utils import EMAModel

        averager = EMAModel(params, decay=ema_decay)
    result = TrainResult(processes=processes)
    first, extra_state = 0, extra_state if extra_state is not None else {}
    if checkpointing is not None:
        fingerprint = {**(fingerprint or {}), "steps": steps,
                       "start_weights": _checkpoint.weights_hash(model)}
        saved = _checkpoint.read_state(checkpointing.folder)
        if saved is not None:
            _checkpoint.load(checkpointing.folder, saved, fingerprint=fingerprint, model=model,
                             optimizer=optimizer, scheduler=lr_schedule, ema=averager, who=who)
            if averager is not None:
                averager.to(accelerator.device)
            refresh_masked_weights(model)
            first = result.resumed_from = int(saved["step"])
            result.losses, result.curve = list(saved["losses"]), list(saved["curve"])
            result.train_s = float(saved["train_s"])
            extra_state.update(saved["extra"])
            if accelerator.is_main_process:
                report(progress, first, steps, f"resumed at step {first} of {steps}")
    main = accelerator.is_main_process

    def evaluate(step: int) -> None:
        if monitor is None or not main:
            return
        unwrapped = accelerator.unwrap_model(wrapped)
        if averager is not None:  # the weights the stage would end with now
            averager.store(params)
            averager.copy_to(params)
            refresh_masked_weights(unwrapped)
        try:
            result.curve.append(monitor(step, unwrapped, result.train_s))
        finally:
            if averager is not None:
                averager.restore(params)
                refresh_masked_weights(unwrapped)
        if progress is not None:
            p = result.curve[-1]
            report(progress, step, steps,
                   Event(f"step {step}: curve FID {p['fid']:.1f}", curve_point=p))

    last_saved = time.monotonic()

    def keep(step: int) -> None:
        nonlocal last_saved
        if checkpointing is None or not checkpointing.due(step, steps, last_saved):
            return
        if main:
            _checkpoint.save(checkpointing.folder, fingerprint=fingerprint, step=step,
                             model=accelerator.unwrap_model(wrapped), optimizer=optimizer,
                             scheduler=lr_schedule, ema=averager,
                             info={"losses": result.losses, "curve": result.curve,
                                   "curve_label": getattr(monitor, "label", None),
                                   "train_s": result.train_s, "extra": extra_state})
        accelerator.wait_for_everyone()
        last_saved = time.monotonic()

    start = time.perf_counter()
    if first == 0 and monitor_every:
        evaluate(0)
    wrapped.train()
    try:
        for step in range(first, steps):
            tick = time.perf_counter()
            g = step_generator(seed, step)
            x0 = draw(batch_size, g)
            t = torch.randint(T, (x0.shape[0],), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            x0, t, noise = (v[shard].to(accelerator.device) for v in (x0, t, noise))
            xt = scheduler.add_noise(x0, noise, t)
            target = loss_target(scheduler, x0, noise, t)
            pred = wrapped(xt, t).sample
            loss = None
            if task_weight:
                loss = F.mse_loss(pred, target)
                if task_weight != 1.0:
                    loss = task_weight * loss
            if extra_loss is not None:
                term = extra_loss(Batch(x0, noise, t, xt, target, pred))
                loss = term if loss is None else loss + term
            if loss is None:
                raise LiteDiffError(f"{who}: the loss has no term (task_weight 0, no extra loss)")
            if scale != 1.0:
                loss = loss * scale
            shown = loss.detach()
            if penalty is not None:
                reg = penalty(accelerator.unwrap_model(wrapped))
                loss = loss + reg
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if grad_clip > 0:
                accelerator.clip_grad_norm_(params, grad_clip)
            if step < warmup:  # the cosine's rate, scaled; its next step() sets it afresh
                for group in opt.param_groups:
                    group["lr"] *= (step + 1) / warmup
            opt.step()
            lr_schedule.step()
            if averager is not None:
                averager.step(params)
            if processes > 1:
                shown = accelerator.reduce(shown, "mean")
            value = float(shown) + (float(reg.detach()) if penalty is not None else 0.0)
            result.losses.append(value)
            if on_step is not None:
                on_step(step + 1, accelerator.unwrap_model(wrapped))
            result.train_s += time.perf_counter() - tick
            if main:
                report(progress, step + 1, steps,
                       Event(f"loss {value:.4f}", loss=value, step=step + 1))
            if monitor_every and ((step + 1) % monitor_every == 0 or step + 1 == steps):
                evaluate(step + 1)
                wrapped.train()
            keep(step + 1)
    finally:
        model = accelerator.unwrap_model(wrapped)
        opt.zero_grad(set_to_none=True)
        accelerator.free_memory()
    if averager is not None:
        averager.copy_to(params)
    refresh_masked_weights(model)
    model.train(was_training)
    model.to(home)
    refresh_masked_weights(model)
    result.seconds = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------- recovery

@dataclass
class TrainingOptions:
    """The options every training stage's ``Config`` inherits (declared once, here): the loop's
    and the recovery curve's (``_curve.py``). A stage redeclares one to change its default."""

    steps: int = option(500, "optimizer steps", low=1)
    lr: float = option(2e-4, "peak learning rate (Adam)", low=0.0, open_low=True)
    batch_size: int = option(64, "images per step (global: shared out over processes)", low=1)
    T_0: int = option(0, "cosine warm-restart period in steps (0: one cosine over all steps)",
                     low=0)
    warmup: int = option(0, "linear learning-rate warm-up over the first this many steps "
                            "(0: none)", low=0)
    ema: bool = option(False, "end with the exponential moving average of the weights")
    ema_decay: float = option(0.999, "EMA: largest decay", low=0.0, high=1.0, open_low=True,
                               open_high=True)
    grad_clip: float = option(1.0, "clip the gradient norm to this (0: no clipping)", low=0.0)
    seed: int = option(0, "seed of images, timesteps and noise")
    # shown after the stage's own options (``late``)
    curve_every: int = option(0, "recovery curve: evaluate every this many steps (0: no curve)",
                              low=0, late=True)
    curve_samples: int = option(200, "recovery curve: samples per FID point",
                                low=MIN_CURVE_SAMPLES, late=True)
    curve_sampling_steps: int = option(10, "recovery curve: DPM-Solver++ steps per sample",
                                       low=1, high=100, late=True)


def loop_options(c: TrainingOptions) -> dict:
    """The keyword arguments of :func:`train_noise_prediction` that come from the options."""
    return {"steps": c.steps, "lr": c.lr, "batch_size": c.batch_size, "seed": c.seed,
            "T_0": c.T_0, "warmup": c.warmup, "ema": c.ema, "ema_decay": c.ema_decay, "grad_clip": c.grad_clip}


def training_entry(stage, result: "TrainResult", recovery: dict) -> dict:
    """The log facts every training stage reports (the stage adds its own)."""
    return {"steps": stage.config.steps, "processes": result.processes,
            "first_loss": result.first_loss, "last_loss": result.last_loss,
            "losses": round_losses(result.losses), **recovery_log(result, recovery)}


# added after runs were stored: recipes that leave them at these values keep their keys
CURVE_DEFAULTS = {"curve_every": 0, "curve_samples": 200, "curve_sampling_steps": 10}
ADDED_TRAINING_OPTIONS = {**CURVE_DEFAULTS, "warmup": 0}


def recovery_kwargs(stage, state) -> dict:
    """The recovery curve and checkpointing arguments of ``train_noise_prediction`` for a
    training stage applied to ``state`` (``state.checkpointing`` is set by the runner)."""
    from ._curve import CurveConfig, RecoveryMonitor

    c, kwargs = stage.config, {}
    if c.curve_every:
        cfg = CurveConfig(every=c.curve_every, n=c.curve_samples, steps=c.curve_sampling_steps,
                          seed=c.seed)
        kwargs.update(monitor=RecoveryMonitor(cfg, state.scheduler, state.dataset, state.teacher),
                      monitor_every=c.curve_every)
    if getattr(state, "checkpointing", None) is not None:
        kwargs.update(checkpointing=state.checkpointing, fingerprint=stage.to_dict())
    return kwargs


def recovery_log(result: "TrainResult", kwargs: dict) -> dict:
    """What a training stage adds to its log entry: the curve (with its label) and resumption."""
    out = {"train_seconds": round(result.train_s, 3), "resumed_from": result.resumed_from}
    monitor = kwargs.get("monitor")
    if monitor is not None:
        out.update(curve=result.curve, curve_label=monitor.label,
                   curve_reference=monitor.reference())
    return out


# ----------------------------------------------------------------------------- loss terms

def kd_loss(teacher: nn.Module, kd_frac: float, feature_kd: float = 0.0,
            student_taps: Optional["FeatureTaps"] = None) -> Callable[[Batch], torch.Tensor]:
    """``kd_frac · MSE(teacher(x_t, t), student(x_t, t))``: the teacher (frozen: eval mode, no
    grad, never modified; a copy is moved when the student trains on another device) sees the
    student's noisy images and timesteps. With ``feature_kd`` > 0, plus ``feature_kd`` ×
    :func:`attention_transfer` of the block outputs ``student_taps`` caught in the student's
    forward pass and the teacher's of the same step; use it through :func:`teacher_term`, which
    removes the hooks afterwards."""
    cache = {}

    def term(batch: Batch) -> torch.Tensor:
        device = batch.xt.device
        if device not in cache:
            home = next(teacher.parameters()).device
            close()
            cache.clear()
            model = teacher if home == device else clone_model(teacher).to(device)
            cache[device] = (model, FeatureTaps(model) if feature_kd else None)
        model, taps = cache[device]
        with torch.no_grad(), eval_mode(model):
            wanted = model(batch.xt, batch.t).sample
        loss = kd_frac * F.mse_loss(batch.pred, wanted)
        if feature_kd:
            loss = loss + feature_kd * attention_transfer(student_taps.out, taps.out)
        return loss

    def close() -> None:  # the teacher's feature hooks (the teacher is shared)
        for _, taps in cache.values():
            if taps is not None:
                taps.close()

    term.close = close
    return term


@contextmanager
def teacher_term(teacher: nn.Module, kd_frac: float, student: nn.Module,
                 feature_kd: float = 0.0):
    """The distillation term of :func:`kd_loss` for ``student`` (None when both weights are 0),
    with the feature hooks on both models removed on exit (the teacher is shared)."""
    if not kd_frac and not feature_kd:
        yield None
        return
    taps = FeatureTaps(student) if feature_kd else None
    term = kd_loss(teacher, kd_frac, feature_kd, taps)
    try:
        yield term
    finally:
        term.close()
        if taps is not None:
            taps.close()


class FeatureTaps:
    """The output of each down, mid and up block of a ``UNet2DModel`` in its latest forward
    pass (``out``: block name → N×C×H×W), caught by forward hooks; ``close()`` removes them."""

    def __init__(self, unet: nn.Module):
        self.out, self._handles = {}, []
        blocks = [(f"down_blocks.{i}", b) for i, b in enumerate(getattr(unet, "down_blocks", []))]
        if getattr(unet, "mid_block", None) is not None:
            blocks.append(("mid_block", unet.mid_block))
        blocks += [(f"up_blocks.{i}", b) for i, b in enumerate(getattr(unet, "up_blocks", []))]
        if not blocks:
            raise LiteDiffError("feature distillation needs a UNet2DModel (down, mid and up "
                                "blocks) as teacher and student")
        for name, block in blocks:
            self._handles.append(block.register_forward_hook(self._keep(name)))

    def _keep(self, name: str):
        def hook(module, args, output):
            self.out[name] = output[0] if isinstance(output, tuple) else output
        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Where a block's output is strong: the channel mean of its squares, flattened and scaled
    to unit length per image (N×C×H×W → N×HW). It does not depend on the channel count, so a
    pruned or narrower student is compared with its teacher directly (attention transfer,
    Zagoruyko & Komodakis 2017)."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(student: dict, teacher: dict) -> torch.Tensor:
    """The mean over blocks of the squared distance between the student's and the teacher's
    attention maps (per image, averaged over the batch): 0 for equal maps, at most 2."""
    names = [n for n in teacher if n in student]
    if not names:
        raise LiteDiffError("feature distillation: the student and teacher share no block")
    terms = []
    for name in names:
        s, t = attention_map(student[name]), attention_map(teacher[name])
        if s.shape != t.shape:
            raise LiteDiffError(f"feature distillation: {name} gives {tuple(student[name].shape)} "
                                f"in the student and {tuple(teacher[name].shape)} in the "
                                f"teacher: the spatial sizes must match")
        terms.append((s - t).pow(2).sum(1).mean())
    return torch.stack(terms).mean()


def effective_weights(model: nn.Module):
    """(module name, weight as the forward pass uses it) of every Conv2d / Linear: a weight
    under a ``torch.nn.utils.prune`` mask is ``weight_orig · weight_mask`` (with grad)."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if hasattr(m, "weight_orig") and hasattr(m, "weight_mask"):
                yield name, m.weight_orig * m.weight_mask
            elif isinstance(getattr(m, "weight", None), torch.Tensor):
                yield name, m.weight


def l1_penalty(lam: float) -> Callable[[nn.Module], torch.Tensor]:
    """``λ · Σ|w|`` over every Conv2d / Linear weight (masks applied): a sum, not a mean."""

    def term(model: nn.Module) -> torch.Tensor:
        return lam * sum(w.abs().sum() for _, w in effective_weights(model))

    return term


@no_grad
def refresh_masked_weights(model: nn.Module) -> None:
    """Recompute ``weight = weight_orig · weight_mask`` of masked layers (normally done by the
    pre-forward hook) after their ``weight_orig`` was set outside a forward (EMA, device move)."""
    for m in model.modules():
        if hasattr(m, "weight_orig") and hasattr(m, "weight_mask"):
            m.weight = m.weight_orig * m.weight_mask


def sparsity(model: nn.Module) -> Optional[float]:
    """Fraction of zeroed weights under masks (None when the model has no masks)."""
    total = zeros = 0
    for m in model.modules():
        if hasattr(m, "weight_mask"):
            total += m.weight_mask.numel()
            zeros += int((m.weight_mask == 0).sum())
    return zeros / total if total else None


def round_losses(losses: List[float]) -> List[float]:
    return [float(f"{v:.6g}") for v in losses]


def check_training(who: str, c) -> None:
    """Checks across the options every training stage has (each option's own range is
    declared with it and checked when the stage is built)."""
    if c.warmup > c.steps:
        raise LiteDiffError(f"{who}: warmup {c.warmup} is longer than the {c.steps} training "
                            f"steps")
    if isinstance(c, TrainingOptions):
        from ._curve import check_curve

        check_curve(who, c.curve_every, c.steps)


class TrainingStage(Stage):
    """What every training stage shares: it trains (its ``steps`` count as training), its
    ``Config`` inherits :class:`TrainingOptions` (checked by :func:`check_training`), and the
    recovery-curve options, added after runs were stored, leave stored recipe keys as they were."""

    trains = True
    added_options = ADDED_TRAINING_OPTIONS

    def check(self) -> None:
        check_training(self.name, self.config)
