"""CPU backends weighed: the embedded UNet on PyTorch, ONNX Runtime and OpenVINO, side by side.

    python benchmarks/cpu_backends.py                  # writes benchmarks/cpu_backends.md
    python benchmarks/cpu_backends.py --quick          # smoke test: batch 16, 1 round, FID on 32

Needs ``pip install -r benchmarks/requirements-bench.txt`` (OpenVINO, NNCF) for the OpenVINO
rows; without them those rows say why. One process, one run, these backends of one denoising
step of ``load_base("embedded")`` (diffusers UNet2DModel, 1×28×28):

1. PyTorch fp32 eager (the reference of every ratio);
2. PyTorch bf16 autocast (``torch.autocast("cpu", dtype=torch.bfloat16)``);
3. ONNX Runtime fp32 and int8: the project's ``quant-onnx-int8`` stage with its defaults
   (``OnnxInt8.apply`` → ``OnnxUNet``; ``.fp32_reference()`` is the ORT fp32 one);
4. OpenVINO fp32 (``INFERENCE_PRECISION_HINT: "f32"``: on CPUs with AVX512-BF16 OpenVINO
   otherwise runs bf16), OpenVINO bf16 (only where the CPU has avx512_bf16 or AMX) and NNCF int8
   (``nncf.quantize``, ``model_type=TRANSFORMER``) of the same ONNX fp32 export, calibrated on
   the same (sample, timestep) inputs as the ORT int8 model: the UNet inputs at every 5th step of
   DDIM-50 trajectories of 32 images drawn by the fp32 model (seed 0). On CPUs without VNNI
   a second NNCF row uses ``overflow_fix=ENABLE`` (7-bit weights in every layer, NNCF's
   counterpart of the ORT stage's ``reduce_range``; its default fixes the first layer only).

Per backend: median ms per step at each batch × thread count; every (threads, batch) cell runs
``--rounds`` rounds in which every backend is timed once (order rotated each round), each after
``--pause`` s idle and ``--warmup`` untimed calls, and the speed-up is PyTorch fp32 / backend
*within each round* (median [min, max] of the rounds), so a busy spell hits all backends alike.
The one-step relative error ‖y − y_fp32‖ / ‖y_fp32‖ is taken on held-out real inputs (DDIM-50
trajectories from seed 1, every 5th step, all timesteps 999…99) against PyTorch fp32. Quality:
FID (200 samples, DPM-Solver++ 10 steps, seed 0, the shipped classifier's features) of samples
drawn through ``litediff_core.samplers.generate`` with the backend in place of the UNet, and
the SSIM of those samples to PyTorch fp32's from the same noise.

"Equal quality" in the summary: FID at most ``--fid-tolerance`` (5%) above PyTorch fp32's
from the same noise. Timings on a busy machine are not to be trusted (PyTorch's OpenMP pool
slows several fold beside other processes, ONNX Runtime and OpenVINO much less): the script
records the load average and says so at the top of its output when it was not idle.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from litediff_core.compress import OnnxInt8  # noqa: E402
from litediff_core.compress._calibration import calibration_inputs  # noqa: E402
from litediff_core.compress.base import CompressState  # noqa: E402
from litediff_core.compress.quant_onnx import _quiet, export_onnx  # noqa: E402
from litediff_core.data import load_dataset  # noqa: E402
from litediff_core.data.datasets import to_uint8  # noqa: E402
from litediff_core.device import cpu_label  # noqa: E402
from litediff_core.metrics import fidelity, ssim_psnr  # noqa: E402
from litediff_core.models import load_base  # noqa: E402
from litediff_core.samplers import generate  # noqa: E402

REFERENCE = "PyTorch fp32"
FID_LABEL = "FID, {n} samples, DPM-Solver++ 10 steps, litediff-fmnist-cnn-v1 features"
# what `grep -o -w -E '<pattern>' /proc/cpuinfo` looks for: the flags that decide which
# kernels the backends can use (AVX2 / AVX-512 fp32, VNNI and AMX int8, AVX512-BF16 and AMX bf16)
FLAG_PATTERN = "avx2|avx512f|avx512_vnni|avx_vnni|avx512_bf16|amx_bf16|amx_int8"


# ----------------------------------------------------------------------------- the machine

def cpu_flags() -> set:
    """The flags of ``FLAG_PATTERN`` that /proc/cpuinfo lists (``grep -o -w -E``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(re.findall(rf"(?<![\w])({FLAG_PATTERN})(?![\w])", text))


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


class OtherLoad:
    """The share of the machine's CPU time that other processes used since the last
    ``sample()``: (busy time of all CPUs from /proc/stat − this process's CPU time) / (wall
    time × CPUs). Unlike the load average it does not count this script itself."""

    def __init__(self):
        self.shares = []
        self._last = self._read()

    @staticmethod
    def _read():
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # no idle/iowait
        own = sum(os.times()[:4])
        return time.monotonic(), busy, own

    def sample(self) -> float:
        now = self._read()
        if now is None or self._last is None:
            return float("nan")
        (t0, b0, o0), (t1, b1, o1) = self._last, now
        self._last = now
        if t1 - t0 < 0.5:
            return float("nan")
        share = max(0.0, ((b1 - b0) - (o1 - o0)) / ((t1 - t0) * (os.cpu_count() or 1)))
        self.shares.append(share)
        return share


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__}
    for name in ("onnx", "onnxruntime", "openvino", "nncf", "diffusers"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing package is a fact to report
            out[name] = "not installed"
    return out


# ----------------------------------------------------------------------------- backends

def _output(out: torch.Tensor, return_dict: bool):
    from diffusers.models.unets.unet_2d import UNet2DOutput

    return UNet2DOutput(sample=out) if return_dict else (out,)


class TorchBackend(nn.Module):
    """The torch UNet, optionally under CPU autocast (``dtype``); output always float32."""

    def __init__(self, unet, dtype=None):
        super().__init__()
        self.unet, self.dtype, self.config = unet, dtype, unet.config

    def forward(self, sample, timestep, return_dict: bool = True, **unused):
        if self.dtype is None:
            out = self.unet(sample, timestep).sample
        else:
            with torch.autocast("cpu", dtype=self.dtype):
                out = self.unet(sample, timestep).sample
        return _output(out.float(), return_dict)


class OpenVINOBackend(nn.Module):
    """An OpenVINO model (inputs ``sample`` B×C×H×W, ``timestep`` B, both float32; dynamic B)
    called like a UNet. Compiled on first use for each ``torch.get_num_threads()`` (so one
    thread setting drives every backend) with ``properties``."""

    def __init__(self, core, model, config, properties: dict):
        super().__init__()
        self.core, self.model, self.config = core, model, config
        self.properties = dict(properties)
        self._compiled = {}

    def compiled(self, threads: int = None):
        threads = int(threads or torch.get_num_threads())
        if threads not in self._compiled:
            self._compiled[threads] = self.core.compile_model(
                self.model, "CPU", {**self.properties, "INFERENCE_NUM_THREADS": threads})
        return self._compiled[threads]

    def execution_precision(self) -> str:
        t = self.compiled().get_property("INFERENCE_PRECISION_HINT")
        return t.to_string() if hasattr(t, "to_string") else str(t)

    def forward(self, sample, timestep, return_dict: bool = True, **unused):
        t = torch.as_tensor(timestep).detach().float().cpu().reshape(-1)
        if t.numel() == 1:
            t = t.expand(sample.shape[0])
        res = self.compiled()({"sample": sample.detach().float().contiguous().numpy(),
                               "timestep": t.contiguous().numpy()})
        return _output(torch.from_numpy(np.array(res[0])).to(sample.dtype), return_dict)


class Row:
    """One backend: its model (None when it cannot run here, with ``reason``) and what it needs."""

    def __init__(self, name: str, needs: str, model=None, reason: str = "", note: str = ""):
        self.name, self.needs, self.model, self.reason, self.note = name, needs, model, reason, note
        self.setup_s = 0.0
        self.ms = {}          # (threads, batch) -> [ms per round]
        self.ratio = {}       # (threads, batch) -> [PyTorch fp32 ms / ms per round]
        self.rel_error = None
        self.fid = None       # FidelityResult
        self.ssim = None
        self.sample_s = None

    @property
    def ok(self) -> bool:
        return self.model is not None


def _why(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".splitlines()[0]
    return text if len(text) < 160 else text[:157] + "…"


def _timed(row: Row, build):
    start = time.perf_counter()
    try:
        row.model = build()
    except Exception as e:  # noqa: BLE001 - a backend that cannot run gets a row saying why
        row.model, row.reason = None, f"failed here: {_why(e)}"
        traceback.print_exc()
    row.setup_s = time.perf_counter() - start
    print(f"[setup] {row.name}: {'ok' if row.ok else row.reason} ({row.setup_s:.1f} s)",
          flush=True)
    return row


def build_backends(base, calibration, flags: set, ort_calibration: str, log: list) -> list:
    unet = base.unet.eval()
    has = lambda *fs: any(f in flags for f in fs)  # noqa: E731
    vnni = "yes" if has("avx512_vnni", "avx_vnni") else "no"
    bf16 = "yes" if has("avx512_bf16", "amx_bf16") else "no"
    rows = [Row(REFERENCE, "AVX2 (AVX-512 used where present)", TorchBackend(unet))]

    row = Row("PyTorch bf16 autocast", f"avx512_bf16 or amx_bf16 for native bf16 kernels "
              f"(here: {bf16}); without them oneDNN converts to and from fp32")
    if bf16 == "no":
        row.note = "no bf16 instructions on this CPU: emulated"
    rows.append(_timed(row, lambda: TorchBackend(unet, torch.bfloat16)))

    # ONNX Runtime: the project's stage, its defaults (except the calibration method if asked)
    ort8 = Row("ORT int8", f"VNNI (avx512_vnni / avx_vnni) for fast int8 dot products (here: "
               f"{vnni}); without it the stage's 7-bit weights avoid the 16-bit saturation")
    ort32 = Row("ORT fp32", "AVX2")
    state = {}

    def make_ort():
        stage = OnnxInt8({"calibration": ort_calibration})
        s = stage.apply(CompressState.start(unet, base.scheduler), calibration=calibration)
        state["log"] = s.log[-1]
        log.append(f"ORT int8: `quant-onnx-int8` {stage.to_dict()['config']}; relative error "
                   f"on 2 calibration batches {s.log[-1]['relative_error_int8']:.4f}; "
                   f"quantized ops {s.log[-1]['quantized_ops']} of "
                   f"{s.log[-1]['candidate_ops']}")
        return s.unet

    _timed(ort8, make_ort)
    if ort8.ok:
        ort32.model = ort8.model.fp32_reference()
    else:
        ort32.reason = ort8.reason
    rows += [ort32, ort8]

    # OpenVINO and NNCF, from the same fp32 ONNX export
    ov32 = Row("OpenVINO fp32", "AVX2; `INFERENCE_PRECISION_HINT: f32` (bf16 CPUs default to bf16)")
    ovbf = Row("OpenVINO bf16", f"avx512_bf16 or amx_bf16 (here: {bf16})")
    int8_needs = (f"VNNI or AMX-INT8 for fast int8 (here: VNNI {vnni}, amx_int8 "
                  f"{'yes' if has('amx_int8') else 'no'}); AVX2 runs it without")
    nn8 = Row("NNCF int8 (OpenVINO)", int8_needs)
    # without VNNI, u8 × s8 products are added in pairs in 16 bits (vpmaddubsw) and saturate;
    # NNCF's default fixes that in the first layer only, overflow_fix=ENABLE (7-bit weights
    # everywhere) is its counterpart of the ORT stage's reduce_range
    nn8fix = Row("NNCF int8, overflow fix", int8_needs + "; 7-bit weights for CPUs without VNNI")
    nncf_rows = [nn8] + ([nn8fix] if vnni == "no" else [])
    try:
        import openvino as ov
    except Exception as e:  # noqa: BLE001
        for r in [ov32, ovbf] + nncf_rows:
            r.reason = (f"openvino not importable ({_why(e)}): "
                        f"pip install -r benchmarks/requirements-bench.txt")
        return rows + [ov32, ovbf] + nncf_rows

    core = ov.Core()
    caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    log.append(f"OpenVINO CPU plugin: {core.get_property('CPU', 'FULL_DEVICE_NAME')}, "
               f"optimization capabilities {', '.join(caps)}")
    fp32_bytes = ort8.model.reference_bytes if ort8.ok else None

    def read_model():
        nonlocal fp32_bytes
        if fp32_bytes is None:
            fp32_bytes = export_onnx(unet)
        with tempfile.TemporaryDirectory(prefix="litediff-ov-") as tmp:
            path = Path(tmp) / "unet_fp32.onnx"
            path.write_bytes(fp32_bytes)
            return core.read_model(str(path))

    props = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}

    def make_ov(precision: str, model=None, name=None):
        b = OpenVINOBackend(core, model if model is not None else read_model(), unet.config,
                            {**props, "INFERENCE_PRECISION_HINT": precision})
        log.append(f"{name or 'OpenVINO ' + precision}: compiled with {b.properties}; "
                   f"execution precision {b.execution_precision()}")
        return b

    _timed(ov32, lambda: make_ov("f32"))
    if bf16 == "yes" and "BF16" in caps:
        _timed(ovbf, lambda: make_ov("bf16"))
    else:
        ovbf.reason = ("not supported on this CPU (no avx512_bf16 / amx_bf16; OpenVINO "
                       f"capabilities: {', '.join(caps)})")

    def make_nncf(row: Row, overflow_fix: bool):
        import nncf
        from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                           OverflowFix)

        items = [{"sample": b.sample[i:i + 1].float().numpy(),
                  "timestep": np.array([float(b.timestep)], dtype=np.float32)}
                 for b in calibration for i in range(b.sample.shape[0])]
        extra = {}
        if overflow_fix:
            extra["advanced_parameters"] = AdvancedQuantizationParameters(
                overflow_fix=OverflowFix.ENABLE)
        with _quiet():
            q = nncf.quantize(read_model(), nncf.Dataset(items),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items),
                              **extra)
        log.append(f"{row.name}: nncf.quantize(model_type=TRANSFORMER, subset_size={len(items)}"
                   f"{', overflow_fix=ENABLE' if overflow_fix else ''}) on {len(items)} "
                   f"single-image (sample, timestep) inputs, the ORT int8 model's calibration "
                   f"set; {sum(op.get_type_name() == 'FakeQuantize' for op in q.get_ops())} "
                   f"FakeQuantize ops")
        return make_ov("f32", q, row.name)

    for r in nncf_rows:
        _timed(r, lambda r=r: make_nncf(r, r is nn8fix))
    return rows + [ov32, ovbf] + nncf_rows


# ----------------------------------------------------------------------------- measurements

def time_step(model, x, t, threads: int, warmup: int, repeats: int, budget_s: float) -> float:
    """Median ms of ``model(x, t)`` at ``threads`` torch threads (which also set the ORT and
    OpenVINO threads); at least 3 timed calls, fewer than ``repeats`` past ``budget_s``."""
    torch.set_num_threads(threads)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x, t)
        spent = 0.0
        for i in range(repeats):
            start = time.perf_counter()
            model(x, t)
            times.append(time.perf_counter() - start)
            spent += times[-1]
            if i >= 2 and spent > budget_s:
                break
    return 1000 * statistics.median(times)


def relative_error(model, reference, batches) -> float:
    num = den = 0.0
    with torch.inference_mode():
        for b in batches:
            ref = reference(b.sample, b.timesteps()).sample
            num += float((model(b.sample, b.timesteps()).sample.float() - ref).square().sum())
            den += float(ref.square().sum())
    return (num / den) ** 0.5


def measure_speed(rows, threads_list, batches, args, loads: list, other: OtherLoad) -> None:
    active = [r for r in rows if r.ok]
    gen = torch.Generator().manual_seed(0)
    for threads in threads_list:
        for batch in batches:
            x = torch.randn(batch, 1, 28, 28, generator=gen)
            t = torch.randint(0, 1000, (batch,), generator=gen)
            for r in active:
                r.ms[(threads, batch)] = []
            for k in range(args.rounds):
                loads.append(load_average())
                other.sample()
                order = active[k % len(active):] + active[:k % len(active)]
                for r in order:
                    time.sleep(args.pause)  # let the previous backend's threads stop spinning
                    r.ms[(threads, batch)].append(
                        time_step(r.model, x, t, threads, args.warmup, args.repeats,
                                  args.budget))
            share = other.sample()
            ref = active[0].ms[(threads, batch)]
            for r in active:
                r.ratio[(threads, batch)] = [a / b for a, b in zip(ref, r.ms[(threads, batch)])]
            print(f"[speed] threads {threads}, batch {batch}: " + ", ".join(
                f"{r.name} {statistics.median(r.ms[(threads, batch)]):.1f} ms "
                f"({statistics.median(r.ratio[(threads, batch)]):.2f}×)" for r in active)
                + f"; other processes {100 * share:.0f}% of the CPUs", flush=True)


def measure_quality(rows, base, error_batches, ref_images, args) -> None:
    cfg = dict(base.scheduler.config)
    torch.set_num_threads(args.fid_threads)
    reference = rows[0].model
    samples = {}
    for r in (r for r in rows if r.ok):
        try:
            r.rel_error = relative_error(r.model, reference, error_batches)
            start = time.perf_counter()
            images = generate(r.model, cfg, sampler="dpm-solver++", steps=10, n=args.fid_n,
                              seed=0, batch_size=64)
            r.sample_s = time.perf_counter() - start
            samples[r.name] = images
            r.fid = fidelity(to_uint8(images), ref_images, reference_name="fashion-mnist-test",
                             setup={"sampler": "DPM-Solver++", "steps": 10})
            r.ssim = ssim_psnr(images, samples[REFERENCE])["ssim_mean"]
            print(f"[quality] {r.name}: relative error {r.rel_error:.2e}, "
                  f"{r.fid.label()}, SSIM to fp32 {r.ssim:.4f}, sampling {r.sample_s:.1f} s",
                  flush=True)
        except Exception as e:  # noqa: BLE001
            r.reason = f"quality run failed: {_why(e)}"
            traceback.print_exc()


# ----------------------------------------------------------------------------- report

def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def summary(rows, cells, args, busy: bool) -> str:
    ref = rows[0]
    if ref.fid is None:
        return "PyTorch fp32's FID is missing, so no backend can be judged at equal quality."
    bar = ref.fid.fid * (1 + args.fid_tolerance)
    measured = [r for r in rows if r.ok and r.fid is not None and r.ratio]
    equal = [r for r in measured if r.fid.fid <= bar]
    worse = [r for r in measured if r.fid.fid > bar]
    parts = []
    wins = {}
    for cell in cells:
        best = max(equal, key=lambda r: _med(r.ratio.get(cell, [])))
        wins.setdefault(best.name, []).append(cell)
    top = max(wins, key=lambda n: len(wins[n]))
    top_row = next(r for r in rows if r.name == top)
    ratios = [_med(top_row.ratio[c]) for c in cells]
    parts.append(
        f"At equal quality (FID at most {100 * args.fid_tolerance:g}% above PyTorch fp32's "
        f"{ref.fid.fid:.1f}, same noise) the fastest backend is **{top}** in {len(wins[top])} of "
        f"{len(cells)} (threads, batch) cells, {min(ratios):.2f}–{max(ratios):.2f}× PyTorch fp32 "
        f"(FID {top_row.fid.fid:.1f}, one-step relative error {top_row.rel_error:.1e}); it "
        f"needs {top_row.needs}.")
    lossless = [r for r in measured if r.rel_error is not None and r.rel_error < 1e-5]
    if lossless:
        fast = max(lossless, key=lambda r: statistics.median(_med(r.ratio[c]) for c in cells))
        rs = [_med(fast.ratio[c]) for c in cells]
        parts.append(f"Without any change of the numbers (relative error < 1e-5: fp32 "
                     f"backends) the fastest is {fast.name}, {min(rs):.2f}–{max(rs):.2f}×.")
    others = {n: c for n, c in wins.items() if n != top}
    if others:
        parts.append("Elsewhere: " + "; ".join(
            f"{n} wins at " + ", ".join(f"{t} thread{'s' * (t > 1)} / batch {b}" for t, b in c)
            for n, c in others.items()) + ".")
    for r in worse:
        rs = [_med(r.ratio[c]) for c in cells]
        parts.append(f"{r.name} is {min(rs):.2f}–{max(rs):.2f}× but misses the quality bar "
                     f"(FID {r.fid.fid:.1f}, {100 * (r.fid.fid / ref.fid.fid - 1):+.0f}%, "
                     f"relative error {r.rel_error:.1e}).")
    slow = [r for r in equal if max(_med(r.ratio[c]) for c in cells) < 1.0]
    if slow:
        parts.append("Slower than PyTorch fp32 everywhere: "
                     + ", ".join(r.name for r in slow) + ".")
    missing = [r for r in rows if not r.ok]
    if missing:
        parts.append("Not measured here: " + "; ".join(f"{r.name} ({r.reason})" for r in missing)
                     + ".")
    if args.fid_n < 200:
        parts.append(f"FID on {args.fid_n} samples is a smoke test only: its interval is wide "
                     f"and the equal-quality call above is not reliable.")
    if busy:
        parts.append("**The machine was busy: every ratio above may be off several fold** "
                     "(PyTorch's OpenMP threads suffer most, which flatters the other "
                     "backends).")
    return " ".join(parts)


def write_report(rows, cells, args, machine: dict, log: list, timings: dict) -> str:
    ref = rows[0]
    shares = [x for x in machine["other_cpu"] if x == x]
    busy = not machine["load_start"] < 0.5 or (shares and max(shares) > 0.10)
    other = (f"other processes used {100 * statistics.mean(shares):.0f}% of the CPUs on "
             f"average during the timings (at most {100 * max(shares):.0f}% in one round)"
             if shares else "other processes' CPU use unknown")
    lines = ["# CPU backends weighed: one denoising step of the embedded UNet", ""]
    if busy:
        lines += [f"> **Measured on a busy machine** (load average {machine['load_start']:.2f} "
                  f"before the start, up to {machine['load_max']:.2f} during the run, this "
                  f"script included; {other}). **Figures from a busy machine are "
                  f"not to be trusted**: rerun the command below with the machine idle (load "
                  f"average < 0.5) before drawing conclusions.", ""]
    if args.quick:
        lines += ["> `--quick` smoke test: batch 16 only, 1 round, FID on "
                  f"{args.fid_n} samples. Not a measurement.", ""]
    lines += [
        f"Command: `{machine['command']}`  ",
        f"Machine: {platform.machine()}, {machine['cpu_label']}, {os.cpu_count()} logical CPUs; "
        f"`grep -o -w -E '{FLAG_PATTERN}' /proc/cpuinfo` finds: "
        f"{', '.join(sorted(machine['flags'])) or 'none'} (absent: "
        f"{', '.join(f for f in FLAG_PATTERN.split('|') if f not in machine['flags']) or 'none'})"
        "  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + "  ",
        f"Load: average {machine['load_start']:.2f} before the start; {other}.  ",
        f"Written {time.strftime('%Y-%m-%d %H:%M')}; the run took {timings['total'] / 60:.1f} min "
        f"(setup {timings['setup']:.0f} s, timing {timings['speed']:.0f} s, quality "
        f"{timings['quality']:.0f} s).", "",
        "## Quality and one step", "",
        f"Relative error: ‖y − y_fp32‖ / ‖y_fp32‖ of one step's output against PyTorch fp32 on "
        f"{machine['error_inputs']} held-out real inputs (DDIM-50 trajectories, seed 1, every 5th "
        f"step). {FID_LABEL.format(n=args.fid_n)}, seed 0, with the bootstrap 95% interval; SSIM "
        f"of the samples to PyTorch fp32's from the same noise; sampling: wall time of those "
        f"{args.fid_n} samples (batch 64, {args.fid_threads} threads).", "",
        f"| backend | relative error | {FID_LABEL.format(n=args.fid_n)} | FID vs PyTorch fp32 "
        f"| SSIM to fp32 samples | sampling s | needs | notes |",
        "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.ok or r.fid is None:
            lines.append(f"| {r.name} | — | — | — | — | — | {r.needs} | {r.reason} |")
            continue
        lo, hi = r.fid.fid_ci95
        rel = f"{r.rel_error:.1e}" if r.rel_error else "0 (reference)"
        d = 100 * (r.fid.fid / ref.fid.fid - 1)
        vs = "—" if r is ref else ("±0.0%" if abs(d) < 0.05 else f"{d:+.1f}%")
        lines.append(f"| {r.name} | {rel} | {r.fid.fid:.1f} [{lo:.1f}, {hi:.1f}] | {vs} | "
                     f"{r.ssim:.4f} | {r.sample_s:.1f} | {r.needs} | {r.note} |")
    active = [r for r in rows if r.ok and r.ms]
    lines += ["", "## Per-step latency", "",
              f"Median ms per step (median over {args.rounds} alternating round"
              f"{'s' * (args.rounds > 1)} of the median of up to {args.repeats} timed calls "
              f"after {args.warmup} warm-up calls, {args.pause:g} s idle before each); in "
              f"brackets the speed-up against PyTorch fp32 in the same round (median "
              f"[min, max] over the rounds).", "",
              "| threads | batch | " + " | ".join(r.name for r in active) + " |",
              "|---|---|" + "---|" * len(active)]
    for cell in cells:
        out = []
        for r in active:
            ms, ra = r.ms.get(cell), r.ratio.get(cell)
            if not ms:
                out.append("—")
            elif r is ref:
                out.append(f"{_med(ms):.1f}")
            else:
                spread = f" [{min(ra):.2f}, {max(ra):.2f}]" if len(ra) > 1 else ""
                out.append(f"{_med(ms):.1f} ({_med(ra):.2f}×{spread})")
        lines.append(f"| {cell[0]} | {cell[1]} | " + " | ".join(out) + " |")
    lines += ["", "## What it says", "", summary(rows, cells, args, busy), "",
              "## Setup", ""] + [f"- {x}" for x in log] + [
              "- setup seconds: " + ", ".join(f"{r.name} {r.setup_s:.0f}" for r in rows
                                               if r.setup_s), ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    return text


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke test: batch 16 only, 1 round, FID on 32 samples")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    p.add_argument("--fid-n", type=int, default=None, help="samples per FID (default 200)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default=None, help="default 1,16,64")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per timing (at most)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--budget", type=float, default=8.0,
                   help="seconds per timing after which no more repeats start (min 3 calls)")
    p.add_argument("--pause", type=float, default=0.5)
    p.add_argument("--fid-threads", type=int, default=2)
    p.add_argument("--fid-tolerance", type=float, default=0.05)
    p.add_argument("--ort-calibration", default="percentile", choices=("percentile", "minmax"),
                   help="the ORT int8 stage's calibration (minmax saves ~3.5 GB of memory)")
    p.add_argument("--error-images", type=int, default=None,
                   help="images per held-out trajectory for the relative error (default 16)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "cpu_backends.md"))
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.fid_n = args.fid_n or (32 if args.quick else 200)
    args.batches = args.batches or ("16" if args.quick else "1,16,64")
    args.error_images = args.error_images or (8 if args.quick else 16)
    threads_list = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    cells = [(t, b) for t in threads_list for b in batches]

    t0 = time.perf_counter()
    flags = cpu_flags()
    machine = {"load_start": load_average(), "cpu_label": cpu_label(), "flags": flags,
               "versions": versions(),
               "command": "python benchmarks/cpu_backends.py " + " ".join(
                   shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))}
    loads = [machine["load_start"]]
    print(f"[machine] {machine['cpu_label']}; flags {sorted(flags)}; load "
          f"{machine['load_start']:.2f}; {machine['versions']}", flush=True)
    torch.set_num_threads(max(threads_list))
    base = load_base("embedded")
    base.unet.eval()
    cfg = dict(base.scheduler.config)
    c = OnnxInt8({}).config
    calibration = calibration_inputs(base.unet, cfg, c.calib_images, c.calib_steps,
                                     c.calib_every, c.calib_sampler, c.seed)
    error_batches = calibration_inputs(base.unet, cfg, args.error_images, 50, 5, "ddim", 1)
    machine["error_inputs"] = sum(b.sample.shape[0] for b in error_batches)
    log = [f"calibration: {sum(b.sample.shape[0] for b in calibration)} inputs at timesteps "
           f"{[b.timestep for b in calibration]} (DDIM {c.calib_steps}, every {c.calib_every}th "
           f"step, {c.calib_images} images, seed {c.seed})"]
    rows = build_backends(base, calibration, flags, args.ort_calibration, log)
    t1 = time.perf_counter()
    other = OtherLoad()
    measure_speed(rows, threads_list, batches, args, loads, other)
    t2 = time.perf_counter()
    ref_images = load_dataset("fashion-mnist", "test").uint8
    measure_quality(rows, base, error_batches, ref_images, args)
    t3 = time.perf_counter()
    loads.append(load_average())
    machine["load_max"] = max(loads)
    machine["other_cpu"] = other.shares
    timings = {"setup": t1 - t0, "speed": t2 - t1, "quality": t3 - t2, "total": t3 - t0}
    text = write_report(rows, cells, args, machine, log, timings)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
