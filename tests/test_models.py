import json
import time

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from litediff_core.errors import ModelSourceError
from litediff_core.models import (cifar10_ddpm_config, load_base, parse_source, read_meta,
                                  save_model)
from litediff_core.models.embedded import ddpm_scheduler_config

# Both doors into a model folder refuse the same bad input with the same message: load_base
# (weights loaded) and read_meta (the card and shape only, what the app's home shows at once).
OPENERS = pytest.mark.parametrize("open_model", [load_base, read_meta],
                                  ids=["load_base", "read_meta"])


def test_cifar10_architecture_from_local_folder_has_paper_param_count(tmp_path):
    torch.manual_seed(0)
    unet = UNet2DModel(**cifar10_ddpm_config())
    # flat layout, as on the hub: config.json + weights + scheduler_config.json side by side
    unet.save_pretrained(tmp_path / "cifar", safe_serialization=True)
    DDPMScheduler(**ddpm_scheduler_config()).save_pretrained(tmp_path / "cifar")
    base = load_base(str(tmp_path / "cifar"))
    assert sum(p.numel() for p in base.unet.parameters()) == 35_746_307
    assert (base.meta.kind, base.meta.resolution, base.meta.channels) == ("folder", 32, 3)
    assert base.scheduler.config.num_train_timesteps == 1000
    assert not any(p.suffix == ".bin" for p in (tmp_path / "cifar").iterdir())


def test_save_and_reload_pipeline_folder_is_identical(tmp_path, tiny_unet, ddpm_scheduler):
    folder = save_model(tiny_unet, ddpm_scheduler, tmp_path / "m",
                        {"dataset": "fashion-mnist", "classes": ["a", "b"]})
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert json.loads((folder / "litediff.json").read_text())["litediff_version"]
    base = load_base(str(folder))
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.equal(base.unet(x, t).sample, tiny_unet(x, t).sample)
    assert base.meta.dataset == "fashion-mnist" and base.meta.classes == ["a", "b"]


def test_embedded_default_loads_with_metadata():
    base = load_base("embedded")
    assert base.meta.kind == "embedded"
    assert (base.meta.dataset, base.meta.resolution, base.meta.channels) == ("fashion-mnist", 28, 1)
    assert read_meta("embedded") == base.meta  # the same facts, without loading the weights
    assert base.meta.card["training"]["steps"] > 0
    with torch.no_grad():
        out = base.unet(torch.zeros(1, 1, 28, 28), torch.tensor([999])).sample
    assert out.shape == (1, 1, 28, 28) and torch.isfinite(out).all()


def test_unreachable_hub_id_fails_fast_with_advice(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # really try the (unreachable) network
    t0 = time.time()
    with pytest.raises(ModelSourceError, match="local folder"):
        load_base("google/ddpm-cifar10-32")
    assert time.time() - t0 < 30


@pytest.mark.parametrize("source, pattern", [
    ("", "no model"),
    ("embedded:nope", "unknown embedded"),
    ("./does/not/exist", "neither an existing folder"),
    ("not a hub id!", "neither an existing folder"),
])
@OPENERS
def test_bad_sources_are_explained(open_model, source, pattern):
    with pytest.raises(ModelSourceError, match=pattern):
        open_model(source)


@OPENERS
def test_folder_that_is_not_a_unet(open_model, tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ModelSourceError, match="not a diffusers UNet folder"):
        open_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ModelSourceError, match="UNet2DModel checkpoints only"):
        open_model(str(tmp_path))


@OPENERS
def test_corrupt_weights_are_explained(open_model, tmp_path, tiny_unet, ddpm_scheduler):
    folder = save_model(tiny_unet, ddpm_scheduler, tmp_path / "m", {})
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelSourceError, match="cannot load the UNet weights"):
        open_model(str(folder))


def test_parse_source_kinds(tmp_path):
    assert parse_source("embedded") == ("embedded", "fashion-mnist-ddpm")
    assert parse_source("google/ddpm-cifar10-32") == ("hub", "google/ddpm-cifar10-32")
    assert parse_source(str(tmp_path)) == ("folder", str(tmp_path))


def test_load_base_opens_a_channel_pruned_folder(tmp_path, tiny_unet, ddpm_scheduler):
    from litediff_core.compress import CompressState, StructuredPrune, save_compressed

    state = StructuredPrune(ratio=0.5, importance="l1").apply(
        CompressState.start(tiny_unet, ddpm_scheduler, dataset="fashion-mnist"))
    folder = save_compressed(state, tmp_path / "pruned", {"dataset": "fashion-mnist"})
    base = load_base(str(folder))
    assert sum(p.numel() for p in base.unet.parameters()) < 0.6 * sum(
        p.numel() for p in tiny_unet.parameters())
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(base.unet(x, t).sample, state.unet(x, t).sample)


def _pickled_sources(tmp_path, tiny_unet):
    flat = tmp_path / "flat"
    tiny_unet.save_pretrained(flat, safe_serialization=False)  # config.json + .bin only
    pipeline = tmp_path / "pipeline"
    tiny_unet.save_pretrained(pipeline / "unet", safe_serialization=False)
    torch.save(tiny_unet.state_dict(), tmp_path / "weights.ckpt")
    return [flat, pipeline, tmp_path / "weights.ckpt", flat / "diffusion_pytorch_model.bin"]


@OPENERS
def test_pickled_checkpoints_are_refused_unopened(open_model, tmp_path, tiny_unet, monkeypatch,
                                                 capfd):
    sources = _pickled_sources(tmp_path, tiny_unet)

    def no_unpickling(*args, **kwargs):
        pytest.fail("a pickled checkpoint was opened")

    monkeypatch.setattr(torch, "load", no_unpickling)
    for source in sources:
        with pytest.raises(ModelSourceError, match="pickled checkpoint.*never unpickles.*"
                                                   "safetensors"):
            open_model(str(source))
    assert "unsafe serialization" not in "".join(capfd.readouterr())


def test_cli_refuses_a_pickled_checkpoint_in_one_line(tmp_path, tiny_unet, capsys):
    from litediff_core.cli import main

    for source in _pickled_sources(tmp_path, tiny_unet):
        assert main(["info", str(source)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("litediff: error:") and "pickled" in err and "\n" not in err


@OPENERS
def test_a_folder_without_weights_or_a_stray_file_is_refused(open_model, tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path / "m", safe_serialization=True)
    (tmp_path / "m" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelSourceError, match="no safetensors weights"):
        open_model(str(tmp_path / "m"))
    with pytest.raises(ModelSourceError, match="is a file"):
        open_model(str(tmp_path / "m" / "config.json"))


def test_read_meta_matches_load_base_on_saved_and_pruned_folders(tmp_path, tiny_unet,
                                                                 ddpm_scheduler):
    from litediff_core.compress import CompressState, StructuredPrune, save_compressed

    plain = save_model(tiny_unet, ddpm_scheduler, tmp_path / "m", {"dataset": "fashion-mnist"})
    state = StructuredPrune(ratio=0.5, importance="l1").apply(
        CompressState.start(tiny_unet, ddpm_scheduler, dataset="fashion-mnist"))
    pruned = save_compressed(state, tmp_path / "pruned", {"dataset": "fashion-mnist"})
    for folder in (plain, pruned):
        assert read_meta(str(folder)) == load_base(str(folder)).meta
    assert read_meta("google/ddpm-cifar10-32") is None  # a hub id: its files come with loading
