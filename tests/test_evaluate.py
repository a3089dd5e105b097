import pytest
import torch

from litediff_core.data import load_dataset
from litediff_core.evaluate import EvalConfig, evaluate, quality_gate
from litediff_core.models import load_base
from litediff_core.models.classifier import load_classifier
from litediff_core.train.classifier import accuracy

pytestmark = pytest.mark.usefixtures("fashion_mnist")


def test_shipped_classifier_is_accurate():
    test = load_dataset("fashion-mnist", "test")
    assert accuracy(load_classifier(), test) >= 0.90


def test_quality_gate_passes_real_images_and_fails_noise_and_one_class():
    test = load_dataset("fashion-mnist", "test")
    real = test.batch(torch.arange(1000))
    gate = quality_gate(real, test.classes)
    assert gate["passes"] and gate["mean_max_probability"] > 0.9
    assert abs(sum(gate["class_fractions"].values()) - 1) < 1e-3
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert not quality_gate(noise)["passes"]
    trousers = test.batch(torch.nonzero(test.labels == 1).flatten()[:300])
    one_class = quality_gate(trousers, test.classes)
    assert not one_class["passes"] and one_class["class_fractions"]["Trouser"] > 0.9


def test_evaluate_embedded_reports_every_figure_with_its_setup():
    base = load_base("embedded")
    cfg = EvalConfig(n=40, steps=4, batch_size=20, device="cpu", latency_batch=4)
    result = evaluate(base, cfg)
    fid = result["fidelity"]
    assert fid["n_generated"] == 40 and fid["n_reference"] == 10000
    assert fid["fid_ci95"][0] <= fid["fid"] <= fid["fid_ci95"][1]
    assert "40 samples" in fid["label"] and "ddim 4 steps" in fid["label"]
    assert "litediff-fmnist-cnn" in fid["label"]
    assert result["size"]["params"] == sum(p.numel() for p in base.unet.parameters())
    assert result["latency"]["median_s"] > 0 and result["latency"]["batch_size"] == 4
    assert set(result["quality_gate"]["class_fractions"]) == set(base.meta.classes)
    # 4 DDIM steps are far too few for clothing: the evaluation must see that
    few = result["fidelity"]["fid"]
    good = evaluate(base, EvalConfig(n=40, steps=20, batch_size=40, device="cpu",
                                     latency_batch=4))["fidelity"]["fid"]
    assert good < few


def test_classifier_confidence_is_high_on_garments_low_on_noise():
    from litediff_core.errors import LiteDiffError
    from litediff_core.evaluate import classifier_confidence

    real = torch.stack([load_dataset("fashion-mnist", "test")[i] for i in range(64)])
    noise = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert classifier_confidence(real) > 0.85 > classifier_confidence(noise)
    assert classifier_confidence(real[:32]) == pytest.approx(
        (classifier_confidence(real[:16]) + classifier_confidence(real[16:32])) / 2, abs=1e-6)
    with pytest.raises(LiteDiffError, match="1×28×28"):
        classifier_confidence(torch.zeros(2, 3, 32, 32))
