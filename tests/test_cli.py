import json
import subprocess
import sys

import pytest
from PIL import Image

from litediff_core.cli import main
from litediff_core.models import save_model


@pytest.fixture
def tiny_folder(tmp_path, tiny_unet, ddpm_scheduler):
    return str(save_model(tiny_unet, ddpm_scheduler, tmp_path / "tiny", {"dataset": "fashion-mnist"}))


def test_info_reports_size_of_a_local_folder(tiny_folder, capsys, tiny_unet):
    assert main(["info", tiny_folder]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["size"]["params"] == sum(p.numel() for p in tiny_unet.parameters())
    assert out["model"]["resolution"] == 16 and out["scheduler"]["num_train_timesteps"] == 1000


def test_sample_writes_a_grid(tiny_folder, tmp_path, capsys):
    png = tmp_path / "g.png"
    assert main(["sample", tiny_folder, "--n", "6", "--steps", "3", "--nrow", "3",
                 "--out", str(png), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 6 and result["seconds"] > 0
    w, h = Image.open(png).size
    assert w > h > 16  # 3 columns × 2 rows of 16 px images plus padding


def test_eval_refuses_a_model_that_does_not_match_its_dataset(tiny_folder, capsys):
    # 16×16 model, but declared fashion-mnist (28×28): a clear one-line error, exit 2
    assert main(["eval", tiny_folder, "--n", "4", "--steps", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("litediff: error:") and "28×28" in err and "\n" not in err


@pytest.mark.parametrize("argv", [
    ["info", "./no/such/folder"],
    ["info", "embedded:nope"],
    ["sample", "embedded", "--device", "tpu"],
])
def test_bad_inputs_give_one_line_errors(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("litediff: error:") and "\n" not in err


@pytest.mark.parametrize("argv", [["sample", "--steps", "0"], ["sample", "--sampler", "nope"],
                                  ["eval", "--n", "-3"], ["frobnicate"]])
def test_bad_arguments_exit_nonzero(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_console_entry_point_never_prints_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "litediff_core.cli", "info", "nobody/nothing"],
                          capture_output=True, text=True, timeout=120,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": ".", "LITEDIFF_CACHE": str(tmp_path)})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "local folder" in proc.stderr


def test_cli_import_and_help_load_no_heavy_library():
    """`litediff --help` must answer at once: no torch, diffusers, pandas... before a command runs
    (benchmarks/cli_startup.py times it)."""
    code = """
import sys
import litediff_core.cli as cli
heavy = ("torch", "diffusers", "pandas", "streamlit", "numpy", "PIL", "yaml")
print("loaded:", *(m for m in heavy if m in sys.modules), file=sys.stderr)
parser = cli.build_parser()
for cmd in [None, "info", "sample", "eval", "train-base", "train-classifier", "compress", "runs",
            "sweep"]:
    try:
        parser.parse_args([cmd, "--help"] if cmd else ["--help"])
    except SystemExit:
        pass
print("loaded:", *(m for m in heavy if m in sys.modules), file=sys.stderr)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "usage: litediff sweep" in proc.stdout, proc.stderr
    assert proc.stderr.splitlines()[-2:] == ["loaded:", "loaded:"]


def _no_work(monkeypatch):
    """Make loading a model or sampling fail the test: bad output paths are refused first."""
    import litediff_core.models
    import litediff_core.samplers

    def boom(*args, **kwargs):
        pytest.fail("work started before the output path was checked")

    monkeypatch.setattr(litediff_core.models, "load_base", boom)
    monkeypatch.setattr(litediff_core.samplers, "generate", boom)


@pytest.mark.parametrize("out, says", [("/dev/null/x.png", "not a folder"),
                                       ("{tmp}", "is a folder"),
                                       ("{tmp}/grid.notanimage", "cannot save an image"),
                                       ("/proc/grid.png", "not writable")])
def test_sample_refuses_an_unwritable_output_before_any_work(out, says, tmp_path, capsys,
                                                             monkeypatch):
    _no_work(monkeypatch)
    assert main(["sample", "--out", out.format(tmp=tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("litediff: error:") and says in err and "\n" not in err


def test_eval_and_train_refuse_unwritable_outputs_before_any_work(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    (tmp_path / "file").write_text("")
    for argv in (["eval", "--json-out", str(tmp_path)],
                 ["eval", "--json-out", "/dev/null/eval.json"],
                 ["train-base", "--out", str(tmp_path / "file")],
                 ["train-classifier", "--out", "/dev/null/classifier"],
                 ["compress", "--preset", "diff-pruning", "--store", "/dev/null/runs"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("litediff: error:") and "\n" not in err, argv


@pytest.mark.parametrize("argv", [["sample", "--steps", "0"], ["sample", "--sampler", "nope"],
                                  ["frobnicate"], ["runs", "--what"]])
def test_bad_arguments_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("litediff: error:") and "\n" not in err


def test_sample_with_feature_caching_and_eta(tiny_folder, tmp_path, capsys):
    png = tmp_path / "c.png"
    assert main(["sample", tiny_folder, "--n", "2", "--steps", "4", "--cache", "2", "--eta",
                 "0.5", "--out", str(png), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["cache"], result["eta"]) == (2, 0.5) and png.exists()


@pytest.mark.parametrize("extra, says", [
    (["--cache", "1"], "--cache must be at least 2"),
    (["--cache", "4"], "below --steps (4)"),
    (["--cache", "2", "--cache-branch", "1"], "branch must be between 0 and 0"),
    (["--sampler", "dpm-solver++", "--eta", "0.3"], "--eta applies to ddim and ams only"),
    (["--eta", "1.5"], "--eta must be between 0 and 1"),
])
def test_sampling_options_that_cannot_run_are_refused(tiny_folder, tmp_path, capsys, extra, says):
    png = tmp_path / "never.png"
    assert main(["sample", tiny_folder, "--steps", "4", "--out", str(png), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("litediff: error:") and says in err and "\n" not in err
    assert not png.exists()
