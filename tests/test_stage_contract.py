"""The contract every compression stage in ``STAGES`` keeps (one test base for the family):
options described and round-tripping, out-of-range values refused, ``apply`` on the tiny UNet
writing its log entry, and save → reload giving the same outputs."""

import json

import pytest
import torch

from litediff_core.compress import STAGES, CompressState, describe_stage, load_compressed, \
    make_stage, save_compressed
from litediff_core.errors import LiteDiffError

# the fastest options that still exercise each stage on the tiny 16×16 UNet
FAST = {
    "structured-prune": {"ratio": 0.25, "importance": "l1"},
    "unstructured-prune": {"ratio": 0.3},
    "low-rank": {"factor": 2.0, "min_params_saving": 0.0},
    "quant-dynamic": {},
    "quant-simulated": {"calib_images": 4, "calib_steps": 10, "calib_every": 5},
    "quant-onnx-int8": {"calib_images": 4, "calib_steps": 10, "calib_every": 5, "threads": 1,
                        "calibration": "minmax"},
    "finetune": {"steps": 2, "batch_size": 4},
    "distill": {"steps": 2, "batch_size": 4},
    "lora": {"r": 2, "steps": 2, "batch_size": 4},
    "deepcache": {"interval": 2},
}
NOT_RANGED = {"seed"}   # any integer seeds a generator


def test_every_stage_has_a_fast_setting_here():
    assert set(FAST) == set(STAGES)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_options_are_described_and_round_trip(name):
    options = describe_stage(name)
    assert options and all(o["help"].strip() for o in options), "every option needs a help line"
    stage = STAGES[name](FAST[name])
    again = make_stage(json.loads(json.dumps(stage.to_dict())))
    assert again.to_dict() == stage.to_dict() and again.name == name
    for trait in ("trains", "previewable", "must_be_last"):
        assert isinstance(getattr(STAGES[name], trait), bool)
    with pytest.raises(LiteDiffError, match="does not take"):
        STAGES[name]({"no_such_option": 1})


@pytest.mark.parametrize("name", sorted(STAGES))
def test_negative_counts_and_rates_are_refused(name):
    for o in describe_stage(name):
        if o["type"] in ("int", "float") and o["name"] not in NOT_RANGED:
            with pytest.raises(LiteDiffError):
                STAGES[name]({**FAST[name], o["name"]: -10**9})
        if o["choices"] and o["type"] == "str":
            with pytest.raises(LiteDiffError, match="choose"):
                STAGES[name]({**FAST[name], o["name"]: "no-such-choice"})


@pytest.mark.parametrize("name", sorted(STAGES))
def test_apply_logs_and_survives_save_and_reload(name, tmp_path, tiny_unet, ddpm_scheduler):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 1, 16, 16, generator=g) * 2 - 1
    state = CompressState.start(tiny_unet, ddpm_scheduler, dataset="test", data=images)
    stage = STAGES[name](FAST[name])
    state = stage.apply(state)
    assert state.log and state.log[-1]["stage"] == name
    assert state.teacher is tiny_unet and all(
        torch.equal(a, b) for a, b in zip(tiny_unet.state_dict().values(),
                                          CompressState.start(tiny_unet, ddpm_scheduler)
                                          .unet.state_dict().values()))
    save_compressed(state, tmp_path / "m", {"dataset": "test", "resolution": 16, "channels": 1})
    unet, _, meta = load_compressed(tmp_path / "m")
    assert meta["compression"]["log"][-1]["stage"] == name
    x, t = torch.randn(2, 1, 16, 16, generator=g), torch.tensor([900, 20])
    with torch.no_grad():
        if hasattr(state.unet, "reset_cache"):
            state.unet.reset_cache(), unet.reset_cache()
        before, after = state.unet(x, t).sample, unet(x, t).sample
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
