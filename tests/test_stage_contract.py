"""The contract every compression stage in ``STAGES`` keeps (one test base for the family):
options described and round-tripping, out-of-range values refused, ``apply`` on the tiny UNet
writing its log entry, and save → reload giving the same outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from litediff_core.compress import STAGES, CompressState, describe_stage, load_compressed, \
    make_stage, save_compressed
from litediff_core.errors import LiteDiffError

REPO = Path(__file__).resolve().parent.parent

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
    "runtime-onnx": {"threads": 1, "check_images": 2},
    "deepcache": {"interval": 2},
}
NOT_RANGED = {"seed"}   # any integer seeds a generator


def test_registry_recipes_and_the_explore_grid_load_without_torch():
    """Forms, recipes and the Explore page read the stages' facts only: with torch made
    unimportable, every stage is described and built from its options, and every recipe of the
    shipped grid and of cached_results is normalised, keyed and named (litediff_core._lazy)."""
    code = """
import json, pathlib, sys
sys.modules["torch"] = None  # any import of torch fails
from litediff_core import explore as ex
from litediff_core.compress import STAGES, describe_stage, make_stage
from litediff_core.recipes import Recipe
for name in STAGES:
    describe_stage(name)
    make_stage({"stage": name, "config": {}})
keys = {ex.recipe_of(c).key() for _, c in ex.shipped_grid()}
stored = [json.loads(p.read_text()) for p in pathlib.Path("cached_results").glob("*/recipe.json")]
found = {Recipe.from_dict(r).key() for r in stored if ex.controls_of(r)}
print(len(STAGES), len(keys), len(stored), len(keys & found))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stages, grid, stored, on_grid = map(int, proc.stdout.split())
    assert stages == len(STAGES) and stored > 50 and on_grid == grid  # every grid point stored


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


# ----------------------------------------------------------------------------- declared ranges

def _just_outside(o):
    """Values a declared range refuses: past each bound, and an open bound itself."""
    step = 1 if o["type"] == "int" else 1e-3
    out = []
    if o["low"] is not None:
        out += [o["low"] - step] + ([o["low"]] if o["open_low"] else [])
    if o["high"] is not None:
        out += [o["high"] + step] + ([o["high"]] if o["open_high"] else [])
    return out


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_number_declares_its_range_and_the_bounds_hold(name):
    for o in describe_stage(name):
        if o["type"] not in ("int", "float") or o["name"] in NOT_RANGED:
            continue
        assert o["low"] is not None or o["high"] is not None, f"{name}.{o['name']}: no range"
        for value in _just_outside(o):
            with pytest.raises(LiteDiffError, match=rf"{o['name']} must be"):
                STAGES[name]({**FAST[name], o["name"]: value})
        inside = [v for v in (o["low"], o["high"]) if v is not None]
        inside = [v for v, open_ in zip(inside, (o["open_low"], o["open_high"])) if not open_]
        for value in inside:  # a closed bound is accepted (unless another rule refuses it)
            try:
                STAGES[name]({**FAST[name], o["name"]: value})
            except LiteDiffError as e:
                assert f"{o['name']} must be in" not in str(e) and "must be ≥" not in str(e)
        if o["widget"] == "slider":
            assert o["low"] is not None and o["high"] is not None


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_declares_its_family_summary_and_headline(name):
    from litediff_core.compress.base import FAMILIES

    cls = STAGES[name]
    assert cls.family in FAMILIES and cls.summary() and "``" not in cls.summary()
    options = {o["name"] for o in describe_stage(name)}
    assert set(cls.headline) <= options
    stage = cls(FAST[name])
    assert isinstance(stage.can_preview(), bool)


def test_stages_are_listed_by_family():
    from litediff_core.compress.base import FAMILIES

    order = [FAMILIES.index(cls.family) for cls in STAGES.values()]
    assert order == sorted(order) and next(iter(STAGES)) == "structured-prune"


def test_preview_size_applies_what_it_can_and_names_the_rest(tiny_unet, ddpm_scheduler):
    from litediff_core.compress import preview_size
    from litediff_core.metrics import size_report

    stages = [{"stage": "structured-prune", "config": {"ratio": 0.5, "importance": "taylor"}},
              {"stage": "finetune", "config": {"steps": 3}},
              {"stage": "quant-dynamic", "config": {}}]
    pred = preview_size(tiny_unet, ddpm_scheduler, stages)
    assert pred["applied"] == ["structured-prune"]
    assert pred["skipped"] == ["finetune", "quant-dynamic"]
    assert any("taylor ranking needs data" in n for n in pred["notes"])
    # the same size as pruning with l1 for real; the base is untouched
    real = STAGES["structured-prune"]({"ratio": 0.5}).apply(
        CompressState.start(tiny_unet, ddpm_scheduler))
    assert pred["size"]["params"] == size_report(real.unet)["params"] < size_report(
        tiny_unet)["params"]
    fresh = preview_size(tiny_unet, ddpm_scheduler,
                         [{"stage": "distill", "config": {"fresh": True, "scale": 2}}])
    assert fresh["applied"] == ["distill"] and fresh["size"]["params"] < pred["size"]["params"]


NEW_STAGE = '''
"""A test method: scales every weight by a factor; one file, nothing else edited."""
from dataclasses import dataclass

import torch

from .base import Stage, clone_model, option


class Scale(Stage):
    """Scale every weight by a factor; see test_a_new_method_is_one_new_file."""

    name = "scale-weights"
    family = "quant"
    headline = ("factor",)
    previewable = True

    @dataclass
    class Config:
        factor: float = option(0.5, "multiply every weight by this", low=0.0, high=2.0,
                               widget="slider")

    def transform(self, state, progress=None):
        unet = clone_model(state.unet)
        with torch.no_grad():
            for p in unet.parameters():
                p.mul_(self.config.factor)
        return unet, {"scaled": sum(1 for _ in unet.parameters())}
'''

CHECK_NEW_STAGE = '''
import json, sys
from litediff_core.compress import STAGES, describe_stage, make_stage
from litediff_core.recipes import Recipe
assert "scale-weights" in STAGES
r = Recipe(base="embedded", stages=[{"stage": "scale-weights", "config": {"factor": 0.25}}])
try:
    make_stage({"stage": "scale-weights", "config": {"factor": 3}})
    refused = ""
except Exception as e:
    refused = str(e)
print(json.dumps({"method": r.method(), "options": describe_stage("scale-weights"),
                  "refused": refused, "summary": STAGES["scale-weights"].summary()}))
'''


def test_a_new_method_is_one_new_file(tmp_path):
    """Copy the package, add one stage module, and the registry, recipes, forms' metadata and
    range checks all know it."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import litediff_core

    pkg = Path(litediff_core.__file__).parent
    shutil.copytree(pkg, tmp_path / "litediff_core",
                    ignore=shutil.ignore_patterns("__pycache__", "embedded"))
    (tmp_path / "litediff_core" / "embedded").symlink_to(pkg / "embedded")
    (tmp_path / "litediff_core" / "compress" / "scale_weights.py").write_text(NEW_STAGE)
    out = subprocess.run([sys.executable, "-c", CHECK_NEW_STAGE], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["method"] == "scale-weights(0.25)"
    assert got["options"][0]["widget"] == "slider" and got["options"][0]["high"] == 2.0
    assert "factor must be in [0, 2], not 3" in got["refused"]
    assert got["summary"] == "Scale every weight by a factor"
