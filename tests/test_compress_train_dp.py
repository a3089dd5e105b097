"""Accelerate data parallel on CPU: two processes fine-tune (and distill) the tiny UNet.

``dp_finetune.py`` runs unstructured pruning → FineTune (L1, EMA, regrowth every 2 steps) →
Distill (KD) with a global batch of 9 images; this test launches it with two processes
(gloo on CPU) and checks:

- each process saw its own shard (5 and 4 images per forward pass), not the whole batch;
- both processes end with bit-identical weights and masks (DDP all-reduces the gradients, so
  every process takes the same optimizer step; regrowth draws are seeded identically);
- the result matches a single-process run with the same global batch: losses to 1e-5
  relative, weights to 2e-5 — not exactly, because the gradient of the 9-image mean is summed
  in another order (two shard means, all-reduced) and float addition is not associative.
  Attention key biases get a looser bound (1e-3, still below the learning rate): their true
  gradient is exactly zero (softmax ignores a shift shared by every key), so what they receive
  is rounding noise, which Adam divides by its own tiny running RMS, so that noise — different
  in the two runs — moves them by a sizeable fraction of lr per step.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    # --multi_gpu selects the launcher that spawns processes (torchrun); ACCELERATE_USE_CPU
    # puts them on the CPU (gloo). "--cpu --num_processes 2" without mpirun runs ONE process.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(free_port()), str(HERE / "dp_finetune.py"), str(out)]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_two_cpu_processes_match_each_other_and_one_process(tmp_path):
    import torch.distributed as dist
    from safetensors.torch import load_file

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no torch.distributed gloo backend (CPU data parallel)")
    done = launch(tmp_path)
    if done.returncode != 0 and "Address already in use" in done.stderr:
        pytest.skip("the rendezvous port was taken by another process between choosing and "
                    "binding it; rerun")
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert [r["processes"] for r in ranks] == [2, 2]
    steps = 4 + 3  # FineTune + Distill student forward passes (the teacher has no hook)
    assert ranks[0]["batch_sizes"] == [5] * steps and ranks[1]["batch_sizes"] == [4] * steps
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert ranks[0]["losses"] == ranks[1]["losses"]

    sys.path.insert(0, str(HERE))
    try:
        import dp_finetune
    finally:
        sys.path.remove(str(HERE))
    single, found, losses, processes, seen = dp_finetune.run()
    assert processes == 1 and seen == [9] * steps
    for stage, history in losses.items():
        assert ranks[0]["losses"][stage] == pytest.approx(history, rel=1e-5), stage
    for key, mask in found.items():
        assert torch.equal(weights[0][f"mask::{key}"].bool(), mask), key
    assert len(found) > 0
    for key, value in single.items():
        atol = 1e-3 if key.endswith("to_k.bias") else 2e-5
        torch.testing.assert_close(weights[0][key], value, rtol=0, atol=atol, msg=key)
