"""Recovery curves: a cheap, labelled quality figure of a model while it trains.

:class:`RecoveryMonitor` is called by the training loop at step 0, every ``every`` steps and at
the last step, on the weights the stage would end with at that point (the EMA's when the stage
keeps one). Each point holds:

- ``fid``: FID of ``n`` samples (default 200) drawn with DPM-Solver++ in ``steps`` steps (10)
  from fixed noise, against the dataset's test split, with the same feature extractor as every
  other FID of the dataset (the Fashion-MNIST classifier's features for 1-channel data); its 95 %
  bootstrap interval too. Few samples: compare points of one curve, or curves of one setup,
  never with 1,000-sample FIDs;
- ``eps_mse_teacher``: mean squared difference between the model's and the dense teacher's
  noise predictions on a fixed held-out batch (``probe`` test images, timesteps and noise drawn
  from a fixed seed): how far the student still is from the model it replaces;
- ``eps_mse``: the same batch's DDPM loss (against the true noise);
- ``step``, ``train_s`` (training seconds so far, evaluation excluded) and ``eval_s``.

:meth:`RecoveryMonitor.reference` gives the dense teacher's figures at the same setup: the line
a curve climbs towards.

The monitor draws from its own generators and restores nothing it did not touch: training with
a monitor takes exactly the steps it takes without one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from .._lazy import F, torch
from ..device import machine_of
from ..errors import LiteDiffError
from ._common import eval_mode

CURVE_SAMPLER = "dpm-solver++"
MIN_CURVE_SAMPLES = 50       # fidelity() refuses fewer


@dataclass
class CurveConfig:
    every: int = 0        # evaluate every this many steps (0: no curve)
    n: int = 200          # samples per FID point
    steps: int = 10       # DPM-Solver++ steps per sample
    probe: int = 256      # held-out images of the ε-MSE probe
    seed: int = 0


def check_curve(who: str, every: int, train_steps: int) -> None:
    """Refuse a curve interval longer than the training, before any work (each curve option's
    own range is declared with it in ``TrainingOptions``)."""
    if every and every > train_steps:
        raise LiteDiffError(f"{who}: curve_every {every} is more than the {train_steps} training "
                            f"steps: the curve would hold only its two ends; lower it or set 0")


def curve_label(cfg: CurveConfig, extractor: str = "") -> str:
    return (f"FID of {cfg.n} samples, DPM-Solver++ {cfg.steps} steps"
            + (f", {extractor} features" if extractor else "") + "; ε-MSE on "
            f"{cfg.probe} held-out images")


class RecoveryMonitor:
    """``monitor(step, model, train_s) -> point``; see the module docstring."""

    def __init__(self, cfg: CurveConfig, scheduler, dataset: str, teacher=None):
        from ..data import load_dataset

        if not dataset:
            raise LiteDiffError("a recovery curve needs the model's dataset (its test split is "
                                "the FID reference)")
        self.cfg, self.scheduler, self.dataset, self.teacher = cfg, scheduler, dataset, teacher
        self.test_set = load_dataset(dataset, "test")
        g = torch.Generator().manual_seed(10_007 + cfg.seed)
        T = int(scheduler.config.num_train_timesteps)
        n = min(cfg.probe, len(self.test_set))
        idx = torch.randperm(len(self.test_set), generator=g)[:n]
        self.x0 = self.test_set.batch(idx)
        self.t = torch.randint(T, (n,), generator=g)
        self.noise = torch.randn(self.x0.shape, generator=g)
        self.xt = scheduler.add_noise(self.x0, self.noise, self.t)
        self._teacher_eps = None
        self.extractor = ""

    def _predict(self, model, device) -> torch.Tensor:
        out = []
        with torch.no_grad(), eval_mode(model):
            for s in range(0, len(self.xt), 64):
                out.append(model(self.xt[s:s + 64].to(device),
                                 self.t[s:s + 64].to(device)).sample.float().cpu())
        return torch.cat(out)

    @property
    def label(self) -> str:
        return curve_label(self.cfg, self.extractor)

    def reference(self) -> Optional[dict]:
        """The dense teacher's point at the same setup (same noise, samples, extractor): the
        level the curve climbs towards (None without a teacher)."""
        if self.teacher is None:
            return None
        point = self(0, self.teacher, 0.0)
        return {k: v for k, v in point.items() if k not in ("step", "train_s", "machine")}

    def __call__(self, step: int, model, train_s: float) -> dict:
        from ..data.datasets import to_uint8
        from ..metrics import fidelity
        from ..samplers import generate

        start = time.perf_counter()
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            eps = self._predict(model, device)
            point = {"step": int(step), "train_s": round(float(train_s), 2),
                     "machine": machine_of(device),  # whose minutes train_s counts
                     "eps_mse": float(F.mse_loss(eps, self.noise))}
            if self.teacher is not None:
                if self._teacher_eps is None:
                    self._teacher_eps = self._predict(self.teacher,
                                                      next(self.teacher.parameters()).device)
                point["eps_mse_teacher"] = float(F.mse_loss(eps, self._teacher_eps))
            with eval_mode(model):
                images = generate(model, dict(self.scheduler.config), sampler=CURVE_SAMPLER,
                                  steps=self.cfg.steps, n=self.cfg.n, seed=self.cfg.seed,
                                  batch_size=100, device=device)
            fid = fidelity(to_uint8(images), self.test_set.uint8,
                           reference_name=f"{self.dataset}-test", seed=self.cfg.seed,
                           device=str(device), setup={"sampler": CURVE_SAMPLER,
                                                      "steps": self.cfg.steps})
        self.extractor = fid.extractor
        lo, hi = fid.fid_ci95 if fid.bootstrap else (None, None)
        point.update(fid=float(fid.fid), fid_lo=lo, fid_hi=hi,
                     eval_s=round(time.perf_counter() - start, 2))
        return point
