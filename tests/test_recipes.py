"""Recipes are checked whole when they are built, so a recipe that cannot run is refused before
anything is computed or stored."""

import json

import pytest

from litediff_core import recipes
from litediff_core.errors import LiteDiffError
from litediff_core.recipes import EVAL_DEFAULTS, SAMPLER_NAMES, Recipe, check_eval


def test_sampler_names_are_the_samplers_registry():
    from litediff_core.samplers import SAMPLERS

    assert tuple(SAMPLERS) == SAMPLER_NAMES


@pytest.mark.parametrize("ev, says", [
    ({"n": 0}, "n must be at least 1"),
    ({"steps": -5}, "steps must be at least 1"),
    ({"latency_batch": 0}, "latency_batch must be at least 1"),
    ({"n": 2.5}, "n must be a whole number"),
    ({"n": True}, "n must be a whole number"),
    ({"steps": "50"}, "steps must be a whole number"),
    ({"sampler": "euler"}, "unknown sampler 'euler'"),
    ({"sampler": 3}, "sampler must be a name"),
    ({"batch": 4}, "does not take batch"),
    ("fast", "eval is a mapping"),
])
def test_an_evaluation_that_cannot_run_is_refused(ev, says):
    with pytest.raises(LiteDiffError, match=says):
        Recipe(eval=ev)


@pytest.mark.parametrize("data, says", [
    ({"base": ""}, "base must be a model"),
    ({"base": 3}, "base must be a model"),
    ({"seed": "zero"}, "seed must be a whole number"),
    ({"dataset": ["fashion-mnist"]}, "dataset must be a name"),
    ({"stages": {"stage": "finetune"}}, "stages is a list"),
])
def test_a_recipe_that_cannot_run_is_refused(data, says):
    with pytest.raises(LiteDiffError, match=says):
        Recipe.from_dict(data)


def test_check_eval_fills_defaults_and_follows_new_keys(monkeypatch):
    assert check_eval({"n": 8}) == {**EVAL_DEFAULTS, "n": 8}
    assert Recipe(eval={"sampler": "ams", "steps": 1}).eval["sampler"] == "ams"
    # a key added to EVAL_DEFAULTS is checked by the type of its default, nothing else to change
    monkeypatch.setattr(recipes, "EVAL_DEFAULTS", {**EVAL_DEFAULTS, "eta": 0.0})
    assert check_eval({"eta": 1})["eta"] == 1 and check_eval({})["eta"] == 0.0
    with pytest.raises(LiteDiffError, match="eta must be a number"):
        check_eval({"eta": "some"})


def test_cli_refuses_an_evaluation_of_no_samples_and_stores_nothing(tmp_path, capsys):
    from litediff_core.cli import main

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"base": "embedded", "eval": {"n": 0}}))
    store = tmp_path / "store"
    assert main(["compress", str(path), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "litediff: error: recipe eval n must be at least 1, not 0"
    assert not store.exists()
    sweep = tmp_path / "s.yaml"  # a sweep is checked whole before its first run
    sweep.write_text("recipes:\n  - {base: embedded}\n  - {base: embedded, eval: {steps: 0}}\n")
    assert main(["sweep", str(sweep), "--store", str(store)]) == 2
    assert not store.exists()
