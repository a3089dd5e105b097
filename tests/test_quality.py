"""Quality of what students compare, judged on the embedded model's real output: the per-grid
figure of the Samples page, AMS against DDIM, and DeepCache against the full model."""

import pytest
import torch

from litediff_core.data import load_dataset
from litediff_core.data.datasets import to_uint8
from litediff_core.evaluate import grid_quality, quality_gate
from litediff_core.metrics import fidelity, ssim_psnr
from litediff_core.models import load_base
from litediff_core.samplers import generate

pytestmark = pytest.mark.usefixtures("fashion_mnist")


def test_blank_and_single_class_grids_rank_last():
    """The Samples page ranks cells by confidence × class coverage: grey squares (which the
    classifier calls 'Bag' with near certainty) and one garment repeated must rank below
    real garments, and noise too, whatever their confidence."""
    test = load_dataset("fashion-mnist", "test")
    real = test.batch(torch.arange(16))
    trousers = test.batch(torch.nonzero(test.labels == 1).flatten()[:16])
    grey = torch.full((16, 1, 28, 28), -0.2) + 0.01 * torch.randn(16, 1, 28, 28)
    noise = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    q = {name: grid_quality(x) for name, x in
         (("real", real), ("trousers", trousers), ("grey", grey), ("noise", noise))}
    assert q["trousers"]["confidence"] > 0.9 and q["trousers"]["coverage"] == pytest.approx(0.1)
    assert max(q[k]["score"] for k in ("trousers", "grey")) <= 0.1 + 1e-9   # one class each
    assert q["noise"]["score"] < 0.2
    assert q["real"]["score"] > 0.5 and q["real"]["classes"] >= 7
    ranking = sorted(q, key=lambda k: -q[k]["score"])
    assert ranking[0] == "real"


@pytest.fixture(scope="module")
def embedded():
    return load_base("embedded")


def _judge(images):
    test = load_dataset("fashion-mnist", "test")
    fid = fidelity(to_uint8(images), test.uint8, reference_name="fashion-mnist-test",
                   bootstrap=0).fid
    gate = quality_gate(images)
    return fid, gate["mean_max_probability"], max(gate["class_fractions"].values())


def test_ams_defaults_draw_garments_as_well_as_ddim(embedded):
    """AMS with its defaults against DDIM from the same noise, 10 steps, 200 samples: the
    gate's two parts (confidence and class mix) and FID in the classifier's features. The
    previous AMS drew grey squares here (one class for all samples, FID 2,428 vs 124)."""
    cfg = dict(embedded.scheduler.config)
    ams = generate(embedded.unet, cfg, "ams", steps=10, n=200, seed=0, batch_size=100)
    ddim = generate(embedded.unet, cfg, "ddim", steps=10, n=200, seed=0, batch_size=100)
    fid_ams, conf_ams, top_ams = _judge(ams)
    fid_ddim, conf_ddim, top_ddim = _judge(ddim)
    assert conf_ams >= min(0.8, conf_ddim - 0.02)
    assert top_ams <= max(0.2, top_ddim + 0.02)        # no class takes over
    assert fid_ams <= 1.10 * fid_ddim                   # measured: 127.4 vs 123.6
    assert ams.std() == pytest.approx(ddim.std().item(), rel=0.05)


def test_deepcache_stays_close_to_the_full_model(embedded):
    """Interval 3, branch 0 on DDIM 20 steps (7 full + 13 cached steps): the samples stay the
    same garments as the full model's from the same noise."""
    from litediff_core.compress import DeepCacheUNet

    cfg = dict(embedded.scheduler.config)
    cached = DeepCacheUNet(embedded.unet, interval=3, branch=0).eval()
    fast = generate(cached, cfg, "ddim", steps=20, n=64, seed=0)
    full = generate(embedded.unet, cfg, "ddim", steps=20, n=64, seed=0)
    assert ssim_psnr(fast, full)["ssim_mean"] > 0.7
    fid_fast, conf_fast, top_fast = _judge(fast)
    assert conf_fast > 0.8 and top_fast < 0.3
