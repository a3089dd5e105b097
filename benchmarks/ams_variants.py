"""Which momentum update works: AMS variants against DDIM on the embedded model.

    python benchmarks/ams_variants.py --n 200 --steps 10,25,50 \
        --variants ddim,sincos:0.1,ema:0.2,slope:0.05,slope:0.1 >> benchmarks/ams_variants.jsonl

Every variant runs DDIM's deterministic step (diffusers, x0 clipped) from the same noise and
changes only how the increments are combined, in x̄ = x / sqrt(ᾱ) (σ = sqrt((1 - ᾱ)/ᾱ)):

- ``ddim``: the base step;
- ``sincos:λ``: the released code's m ← sin(πλ/2) m + cos(πλ/2) dx̄ on raw increments;
- ``ema:λ``: the same with weights a and 1 − a;
- ``slope:λ``: what ``litediff_core.samplers.ams`` does — m ← a m + (1 − a) g on the slope
  g = dx̄ / (σ' − σ), stepping x̄ += (σ' − σ) m;
- ``slopeasc:λ``: the slope form with λ rising from 0 to λ (momentum at the end);
- ``slopeneg:λ``: the slope form with a negative a (extrapolation, not momentum).

λ falls linearly from the given value to 0 over the steps (rises for ``slopeasc``). Each line
printed: FID in the shipped classifier's features (no bootstrap), the gate's two parts and the
spread of the samples. CPU only; slow on 2 cores (about a minute per 10 steps × 200 samples).
"""

import argparse
import json
import math
import time

import numpy as np
import torch

from litediff_core.data import load_dataset
from litediff_core.data.datasets import to_uint8
from litediff_core.device import cpu_label
from litediff_core.evaluate import quality_gate
from litediff_core.metrics import fidelity
from litediff_core.models import load_base
from litediff_core.samplers import initial_noise, make_sampler


def schedule(form: str, lam: float, k: int) -> np.ndarray:
    if form == "slopeasc":
        return np.linspace(0.0, lam, k)
    lams = np.linspace(lam, 0.0, k) if k > 1 else np.array([0.0])
    return -lams if form == "slopeneg" else lams


def sample(unet, cfg: dict, variant: str, steps: int, n: int, batch: int = 100) -> torch.Tensor:
    form, _, lam = variant.partition(":")
    s = make_sampler("ddim", cfg)
    sch, T = s.scheduler, s.num_train_timesteps
    out = []
    noise = initial_noise(n, (unet.config.in_channels, unet.config.sample_size,
                              unet.config.sample_size), 0)
    with torch.no_grad():
        for start in range(0, n, batch):
            x, m = noise[start:start + batch], None
            s.set_timesteps(steps)
            lams = schedule(form, float(lam or 0), len(s.timesteps))
            for k, t in enumerate(s.timesteps):
                target = sch.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
                if form == "ddim":
                    x = target
                    continue
                prev = int(t) - T // steps
                a_n = float(sch.alphas_cumprod[prev]) if prev >= 0 else float(sch.final_alpha_cumprod)
                a_t = float(sch.alphas_cumprod[int(t)])
                ratio = math.sqrt(a_n / a_t)
                dxb = (target - ratio * x) / math.sqrt(a_n)
                a = math.sin(math.pi / 2 * lams[k])
                if form == "sincos":
                    b = math.cos(math.pi / 2 * lams[k])
                    m = b * dxb if m is None else a * m + b * dxb
                    x = ratio * x + math.sqrt(a_n) * m
                elif form == "ema":
                    m = (1 - a) * dxb if m is None else a * m + (1 - a) * dxb
                    x = ratio * x + math.sqrt(a_n) * m
                else:  # slope forms
                    dsig = math.sqrt((1 - a_n) / a_n) - math.sqrt((1 - a_t) / a_t)
                    g = dxb / dsig
                    m = g if m is None else a * m + (1 - a) * g
                    x = ratio * x + math.sqrt(a_n) * dsig * m
            out.append(x.clamp(-1, 1))
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--steps", default="10,25,50")
    p.add_argument("--variants", default="ddim,sincos:0.1,ema:0.2,slope:0.05,slope:0.1")
    args = p.parse_args()
    base = load_base("embedded")
    unet, cfg = base.unet.eval(), dict(base.scheduler.config)
    ref = load_dataset("fashion-mnist", "test")
    for steps in map(int, args.steps.split(",")):
        for variant in args.variants.split(","):
            t0 = time.time()
            images = sample(unet, cfg, variant, steps, args.n)
            fid = fidelity(to_uint8(images), ref.uint8, reference_name="fashion-mnist-test",
                           bootstrap=0).fid
            gate = quality_gate(images)
            fr = gate["class_fractions"].values()
            print(json.dumps({"variant": variant, "steps": steps, "n": args.n, "fid": round(fid, 1),
                              "confidence": gate["mean_max_probability"],
                              "largest_class": max(fr), "smallest_class": min(fr),
                              "std": round(images.std().item(), 3),
                              "seconds": round(time.time() - t0), "cpu": cpu_label()}),
                  flush=True)


if __name__ == "__main__":
    main()
