"""Training speed on the CPU: one distillation step of the embedded default's 30 %-pruned
student, against this machine's fp32 matmul limit, and what channels_last, torch.compile and
bf16 autocast change — plus channel rounding (widths that are multiples of 8 / 16) on the
inference step. Writes ``benchmarks/train_speed.md``.

    python benchmarks/train_speed.py            # run with the machine otherwise idle
    python benchmarks/train_speed.py --out benchmarks/train_speed-amx.md   # another machine

Every figure is a ratio taken in alternating rounds in this one process (variant, baseline,
variant, …; median of the rounds), so a slow spell hits both sides. bf16 autocast runs only on
CPUs with AVX512-BF16 or AMX (elsewhere it is emulated and slower: not worth measuring). A
variant is adopted only at ≥ 1.3× with a loss curve within the noise of the baseline's (the
same 20 steps from the same seed: the largest relative difference of the losses is shown).
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
ROUNDS, STEPS_TIMED, BATCH = 3, 4, 32


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = sorted(set(re.findall(r"\b(avx512_vnni|avx512_bf16|amx_int8|amx_bf16|avx512f|avx2)\b",
                                  text)))
    model = re.search(r"model name\s*:\s*(.*)", text)
    return f"{model.group(1) if model else 'unknown CPU'}; flags: {' '.join(flags) or 'none'}"


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9


def student():
    from litediff_core.compress import CompressState, StructuredPrune
    from litediff_core.data import load_dataset
    from litediff_core.models import load_base

    base = load_base("embedded")
    data = load_dataset("fashion-mnist", "train")
    state = CompressState.start(base.unet, base.scheduler, dataset="fashion-mnist", data=data)
    state = StructuredPrune(ratio=0.3, importance="l1").apply(state)
    return base, state.unet, data


class Step:
    """One distillation step (0.7 teacher + 0.3 true noise), Adam, on a fixed sequence of
    batches; ``variant`` in baseline | channels_last | compile | bf16 | bf16+channels_last
    (bf16: the teacher's forward and the student's under autocast, the loss in fp32)."""

    def __init__(self, base, unet, data, variant: str):
        import copy

        import torch.nn.functional as F

        self.F = F
        self.variant = variant
        self.student = copy.deepcopy(unet).train()
        self.teacher = base.unet.eval()
        self.scheduler = base.scheduler
        self.data = data
        fmt = torch.channels_last if "channels_last" in variant else torch.contiguous_format
        self.fmt = fmt
        self.student.to(memory_format=fmt)
        self.forward = self.student
        if variant == "compile":
            self.forward = torch.compile(self.student)
        self.opt = torch.optim.Adam(self.student.parameters(), lr=1e-3)
        self.i = 0

    def __call__(self) -> float:
        g = torch.Generator().manual_seed(self.i)
        self.i += 1
        x0 = self.data.batch(torch.randint(len(self.data), (BATCH,), generator=g))
        t = torch.randint(1000, (BATCH,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        xt = self.scheduler.add_noise(x0, noise, t).contiguous(memory_format=self.fmt)
        bf16 = self.variant.startswith("bf16")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                want = self.teacher(xt, t).sample.float()
            pred = self.forward(xt, t).sample.float()
        loss = 0.3 * self.F.mse_loss(pred, noise) + 0.7 * self.F.mse_loss(pred, want)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def seconds_per_step(step: Step) -> float:
    t = time.perf_counter()
    for _ in range(STEPS_TIMED):
        step()
    return (time.perf_counter() - t) / STEPS_TIMED


def losses(base, unet, data, variant: str, n: int = 20) -> list:
    torch.manual_seed(0)
    s = Step(base, unet, data, variant)
    return [s() for _ in range(n)]


def rounding_rows() -> list:
    """Inference step latency of the embedded architecture at widths that are / are not
    multiples of 8 and 16, per MAC (same process, alternating)."""
    from diffusers import UNet2DModel

    from litediff_core.metrics import size_report, step_latency
    from litediff_core.models import load_base

    cfg = {k: v for k, v in dict(load_base("embedded").unet.config).items()
           if not k.startswith("_")}
    widths = {"(16, 40, 88): layer-wise 30 %, multiples of 8": (16, 40, 88),
              "(16, 48, 96): rounded up to 16": (16, 48, 96),
              "(16, 32, 80): rounded down to 16": (16, 32, 80),
              "(18, 42, 90): not multiples of 8": (18, 42, 90)}
    models = {}
    for label, w in widths.items():
        torch.manual_seed(0)
        groups = 2 if any(x % 8 for x in w) else 8
        models[label] = UNet2DModel.from_config({**cfg, "block_out_channels": w,
                                                 "norm_num_groups": groups}).eval()
    rows = {label: [] for label in models}
    for _ in range(ROUNDS):
        for label, m in models.items():
            time.sleep(0.5)
            rows[label].append(step_latency(m, batch_size=16, repeats=10)["median_s"])
    out = []
    for label, m in models.items():
        macs = size_report(m)["macs_per_image"]
        ms = statistics.median(rows[label]) * 1000
        out.append((label, macs, ms, ms / (macs / 1e6)))
    return out


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "train_speed.md",
                        help="the report to write (one per machine)")
    out = parser.parse_args(argv).out
    torch.set_num_threads(torch.get_num_threads())
    base, unet, data = student()
    from litediff_core.metrics import size_report

    macs = size_report(unet)["macs_per_image"]
    teacher_macs = size_report(base.unet)["macs_per_image"]
    limit = matmul_gflops()
    flops_per_sample = 2 * (3 * macs + teacher_macs)  # fwd + 2× bwd of the student, teacher fwd
    bf16 = bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", Path("/proc/cpuinfo").read_text()))
    variants = ["channels_last", "compile"] + (["bf16", "bf16+channels_last"] if bf16 else [])
    steps = {v: Step(base, unet, data, v) for v in ["baseline"] + variants}
    compile_s = None
    t = time.perf_counter()
    steps["compile"]()  # compilation happens on the first call
    compile_s = time.perf_counter() - t
    for s in steps.values():
        s()  # warm-up
    times = {v: [] for v in steps}
    for _ in range(ROUNDS):
        for v, s in steps.items():
            times[v].append(seconds_per_step(s))
    base_s = statistics.median(times["baseline"])
    ref = losses(base, unet, data, "baseline")
    lines = [
        "# Training speed on the CPU",
        "",
        f"Command: `python benchmarks/train_speed.py"
        f"{'' if out.name == 'train_speed.md' else ' --out benchmarks/' + out.name}`  ",
        f"Machine: {cpu_flags()}; {torch.get_num_threads()} threads; torch {torch.__version__};"
        f" {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"One distillation step of the embedded default pruned 30 % (L1, layer-wise: "
        f"{macs / 1e6:.0f} M MACs per image and step; teacher {teacher_macs / 1e6:.0f} M), "
        f"batch {BATCH}, Adam. fp32 matmul limit of this machine (2048² `torch.mm`): "
        f"{limit:.0f} GFLOP/s.",
        "",
        "| variant | s / step | samples / s | GFLOP/s (share of the matmul limit) | speed-up "
        "(median of rounds) | loss curve vs baseline (max rel. diff, 20 steps) |",
        "|---|---|---|---|---|---|",
    ]
    for v in steps:
        s = statistics.median(times[v])
        ratios = sorted(b / x for b, x in zip(times["baseline"], times[v]))
        diff = ""
        if v != "baseline":
            other = losses(base, unet, data, v)
            diff = f"{max(abs(a - b) / abs(a) for a, b in zip(ref, other)):.2%}"
        gflops = flops_per_sample * BATCH / s / 1e9
        note = f" (compiled in {compile_s:.0f} s)" if v == "compile" else ""
        lines.append(f"| {v}{note} | {s:.2f} | {BATCH / s:.1f} | {gflops:.1f} "
                     f"({gflops / limit:.0%}) | {ratios[len(ratios) // 2]:.2f}× | {diff} |")
    if not bf16:
        lines += ["", "bf16 autocast: not measured — this CPU has neither AVX512-BF16 nor AMX "
                      "(PyTorch would emulate bf16, slower than fp32)."]
    lines += ["", "## Channel rounding (inference step, batch 16, 2 threads)", "",
              "Widths of the embedded architecture (randomly initialised; the MACs differ, so "
              "compare the cost per MAC).", "",
              "| block widths | M MACs / image | ms / step | ms per G MAC (batch of 16) |",
              "|---|---|---|---|"]
    for label, m, ms, per in rounding_rows():
        lines.append(f"| {label} | {m / 1e6:.0f} | {ms:.1f} | {ms / (m * 16 / 1e9):.1f} |")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
