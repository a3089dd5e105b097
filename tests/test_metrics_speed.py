import pytest
import torch

from litediff_core.errors import MetricError
from litediff_core.metrics import sampling_throughput, step_latency


def test_step_latency_records_setup(tiny_unet):
    tiny_unet.train()
    r = step_latency(tiny_unet, batch_size=4, repeats=3, warmup=1, threads=1)
    assert r["median_s"] > 0 and r["p10_s"] <= r["median_s"] <= r["p90_s"]
    assert r["images_per_s"] == pytest.approx(4 / r["median_s"])
    assert (r["batch_size"], r["threads"], r["device"], r["repeats"]) == (4, 1, "cpu", 3)
    assert r["torch_version"] == torch.__version__
    assert tiny_unet.training  # mode restored


def test_step_latency_restores_threads(tiny_unet):
    before = torch.get_num_threads()
    step_latency(tiny_unet, batch_size=1, repeats=1, warmup=0, threads=2)
    assert torch.get_num_threads() == before


def test_step_latency_rejects_bad_arguments(tiny_unet):
    with pytest.raises(MetricError):
        step_latency(tiny_unet, repeats=0)


def test_sampling_throughput(tiny_unet):
    pytest.importorskip("litediff_core.samplers")
    from litediff_core.models.embedded import ddpm_scheduler_config

    r = sampling_throughput(tiny_unet, ddpm_scheduler_config(), sampler="ddim", steps=2, n=2,
                            threads=1)
    assert r["images_per_s"] > 0 and r["n"] == 2 and r["steps"] == 2 and r["threads"] == 1
