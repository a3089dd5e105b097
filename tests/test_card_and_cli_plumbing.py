import json
import shutil

import pytest
import torch

from litediff_core.device import resolve_device
from litediff_core.errors import LiteDiffError
from litediff_core.evaluate import EvalConfig, evaluate
from litediff_core.model_card import write_card
from litediff_core.models import load_base
from litediff_core.models.embedded import embedded_path
from litediff_core.progress import TqdmProgress, report


def test_model_card_states_measured_figures_and_setup(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(embedded_path("fashion-mnist-ddpm"), folder)
    (folder / "README.md").unlink(missing_ok=True)
    (folder / "samples.png").unlink(missing_ok=True)
    base = load_base(str(folder))
    result = evaluate(base, EvalConfig(n=30, steps=3, batch_size=30, device="cpu",
                                       latency_batch=2, bootstrap=20))
    card = write_card(folder, result, base).read_text()
    assert result["fidelity"]["label"] in card
    assert f"{result['size']['params']:,}" in card
    assert "30 samples" in card and "Quality gate" in card
    assert base.meta.card["training"]["command"] in card
    stored = json.loads((folder / "litediff.json").read_text())["metrics"]
    assert stored["fidelity"]["fid"] == result["fidelity"]["fid"]
    assert (folder / "samples.png").stat().st_size > 1000
    # the folder still loads as a model after the card was written
    assert load_base(str(folder)).meta.card["metrics"]["setup"]["n"] == 30


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(LiteDiffError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LiteDiffError, match="no CUDA"):
            resolve_device("cuda")


def test_progress_callbacks():
    seen = []
    report(lambda d, t, m: seen.append((d, t, m)), 3, 10, "x")
    report(None, 1, 2)  # no callback: nothing happens, no error
    assert seen == [(3, 10, "x")]
    bar = TqdmProgress("t")
    bar(1, 4, "a")
    assert bar._bar is not None and bar._bar.n == 1
    bar(4, 4, "done")
    assert bar._bar is None  # closed when finished


def test_cpu_info_reads_model_name_and_vnni():
    from litediff_core.device import cpu_info, cpu_label

    avx2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
    vnni = "model name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512_vnni\n"
    assert cpu_info(avx2) == {"cpu": "AMD EPYC", "vnni": False}
    assert cpu_info(vnni) == {"cpu": "Intel Xeon", "vnni": True}
    assert cpu_info("")["vnni"] is None
    assert cpu_label(cpu_info(avx2)) == "AMD EPYC, without VNNI"
    assert cpu_label(cpu_info("")).endswith("VNNI unknown")
