"""Model cards: ``README.md`` + the ``metrics`` entry of ``litediff.json`` in a model folder,
written from an :func:`litediff_core.evaluate.evaluate` result (every figure measured)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

from .fileio import write_json_atomic, write_text_atomic
from .models.io import META_FILE
from .results import Environment, RunResult

GRID_FILE = "samples.png"


def _fmt_int(x) -> str:
    return f"{int(x):,}"


def render_card(meta: dict, result: dict) -> str:
    r = RunResult.from_dict(result)
    fid, size, lat, setup = r.fidelity, r.size, r.latency, r.setup
    train = meta.get("training", {})
    hw = train.get("hardware", {})
    lines = [
        f"# {meta.get('name', 'LiteDiff model')}",
        "",
        meta.get("description", ""),
        "",
        f"![{setup['n'] if setup['n'] < 64 else 64} samples, {setup['sampler']} "
        f"{setup['steps']} steps, seed {setup['seed']}]({GRID_FILE})",
        "",
        "## Model",
        f"- diffusers `UNet2DModel`, {meta.get('channels')}×{meta.get('resolution')}×"
        f"{meta.get('resolution')} images of `{meta.get('dataset')}`; DDPM noise schedule in "
        f"`scheduler/` (linear β 1e-4→0.02, 1000 steps)",
        f"- parameters: {_fmt_int(size.params)}; MACs per image and denoising step: "
        f"{size.macs_per_image / 1e6:.1f} M; weights on disk: "
        f"{size.bytes / 2**20:.2f} MiB (safetensors, fp32)",
        "",
        "## Training",
        f"- command: `{train.get('command', 'unknown')}`",
        f"- steps: {train.get('steps')} (batch {train.get('config', {}).get('batch_size')}), "
        f"weights: {train.get('weights', '?')}, wall time: "
        f"{train.get('seconds', 0) / 60:.1f} min",
        f"- hardware: {hw.get('device', '?')}, {hw.get('cpu_count', '?')} cores "
        f"({hw.get('machine', '?')}), torch {hw.get('torch', '?')}",
        f"- data: {meta.get('dataset')} train split ({train.get('data_source', '?')})",
        *([f"- notes: {train['notes']}"] if train.get("notes") else []),
        "",
        "## Measured quality and speed",
        f"- {fid.label}",
        f"- KID {fid.kid_mean:.4f} ± {fid.kid_std:.4f}; precision {fid.precision:.3f},"
        f" recall {fid.recall:.3f} (same samples and features, reference: "
        f"{fid.n_reference} {r.dataset} {setup['reference_split']} images)",
        f"- latency of one denoising step: {lat.median_ms:.1f} ms median for a batch of "
        f"{lat.batch_size} on {lat.device} ({lat.threads} threads) — "
        f"{lat.median_ms / lat.batch_size:.2f} ms per image",
    ]
    gate = r.quality_gate
    if gate:
        fr = ", ".join(f"{k} {v:.1%}" for k, v in gate.class_fractions.items())
        lines += [
            "",
            "## Quality gate",
            f"Rule: {gate.rule}, on {gate.n} samples ({setup['sampler']}, {setup['steps']}"
            f" steps) classified by the shipped Fashion-MNIST classifier.",
            f"- mean max-probability: {gate.mean_max_probability:.3f}",
            f"- class mix: {fr}",
            f"- **{'passes' if gate.passes else 'does not pass'}**",
        ]
    env = r.environment or Environment()
    lines += ["", f"Measured with litediff {env.litediff} / torch {env.torch} by "
              f"`litediff eval {r.model} --n {setup['n']} --sampler {setup['sampler']} "
              f"--steps {setup['steps']} --card`.", ""]
    return "\n".join(lines)


def card_grid(meta) -> Optional[Tuple[Path, str]]:
    """The sample grid a model card was written with, and a caption naming what drew it
    (``None`` for a model without a card). ``meta``: a :class:`~litediff_core.models.ModelMeta`."""
    unet_dir = Path(meta.path)
    folder = unet_dir.parent if (unet_dir.parent / META_FILE).exists() else unet_dir
    metrics = meta.card.get("metrics")
    if not metrics or not (folder / GRID_FILE).exists():
        return None
    s = RunResult.from_dict(metrics).setup
    return folder / GRID_FILE, (f"{min(s['n'], 64)} samples of the model card: {s['sampler']} "
                                f"{s['steps']} steps, seed {s['seed']}, drawn on {s['device']} "
                                f"when the card was written")


def write_card(folder, result: dict, base=None) -> Path:
    """Store ``result`` under ``metrics`` in litediff.json, draw the grid, write README.md."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["metrics"] = {k: v for k, v in result.items() if k != "card"}
    write_json_atomic(meta_path, meta)
    if base is not None:
        from .samplers import generate, grid

        s = result["setup"]
        images = generate(base.unet.cpu(), dict(base.scheduler.config), sampler=s["sampler"],
                          steps=s["steps"], n=64, seed=s["seed"], batch_size=64)
        grid(images, nrow=8).save(folder / GRID_FILE)
    card = folder / "README.md"
    write_text_atomic(card, render_card(meta, result))
    return card
