import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from litediff_core.metrics import size_report
from litediff_core.models import load_base

APP = Path(__file__).resolve().parent.parent / "app.py"


def test_home_shows_the_embedded_model_card_and_grid():
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert not at.exception
    params = size_report(load_base("embedded").unet)["params"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Parameters"] == f"{params / 1e6:.2f} M"  # the card's figure is the model's
    card = load_base("embedded").meta.card["metrics"]["latency"]
    assert shown["Step latency (cpu, batch 16)"] == f"{card['median_s'] * 1000:.0f} ms"
    captions = " ".join(c.value for c in at.caption)
    assert f"from the model card: {card['cpu']}, {card['threads']} threads" in captions
    images = at.get("image")
    assert len(images) == 1 and "samples of the model card: ddim 50 steps, seed 0" in (
        images[0].proto.imgs[0].caption)


def _home_in_a_fresh_process(then: str, warm_up_s: str, timeout: int) -> list:
    """Home run once by AppTest in a new interpreter (nothing imported before it), then the
    statements ``then``; the lines they print."""
    code = ("import sys, threading; from streamlit.testing.v1 import AppTest; "
            f"at = AppTest.from_file({str(APP)!r}, default_timeout=60).run(); "
            "assert not at.exception, at.exception; " + then)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, cwd=APP.parent,
                         env={**os.environ, "LITEDIFF_WARM_UP_S": warm_up_s})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()


def test_home_paints_from_the_card_without_importing_torch():
    """The first visit reads the card and its grid: no torch, no weights, no sampling. Then a
    background thread imports them for the next page (here given a minute's delay, to look at
    the state before it)."""
    printed = _home_in_a_fresh_process(
        "assert at.metric and at.get('image'); "
        "print(sorted(m for m in ('torch', 'diffusers', 'fvcore') if m in sys.modules)); "
        "print([t.name for t in threading.enumerate() if t.name == 'litediff-warm-up'])",
        warm_up_s="60", timeout=120)
    assert printed[-2:] == ["[]", "['litediff-warm-up']"]


def test_the_warm_up_loads_what_the_other_pages_need():
    """Every other page first waits for the warm-up's imports (``app.run_page``) instead of
    importing diffusers beside it (not thread-safe), and hurries it past its delay (60 s)."""
    printed = _home_in_a_fresh_process(
        "import time; from pages._warm_up import imports_done; t0 = time.perf_counter(); "
        "imports_done(); "
        "print(time.perf_counter() - t0 < 50, not any(t.is_alive() for t in "
        "threading.enumerate() if t.name == 'litediff-warm-up')); "
        "print(all(m in sys.modules for m in ('torch', 'diffusers', 'torch_pruning', "
        "'litediff_core.compress', 'pandas', 'plotly.graph_objects')))",
        warm_up_s="60", timeout=180)
    assert printed[-2:] == ["True True", "True"]


@pytest.mark.parametrize("name, shows", [
    ("explore", "Stored result"), ("layers", "Per block"), ("pareto", "FID"),
    ("recovery", "Recovery"), ("runs", "Runs")])
def test_pages_of_stored_runs_open_without_torch(name, shows, tmp_path):
    """The pages that read stored runs (Explore on a shipped recipe among them) need neither
    torch nor the warm-up: with torch unimportable they open on cached_results/ (a cold server's
    first switch does not wait for the background imports, ``app.NEEDS_TORCH``)."""
    code = ("import sys; sys.modules['torch'] = None; "
            "from streamlit.testing.v1 import AppTest; "
            f"at = AppTest.from_file({str(APP)!r}, default_timeout=60); "
            f"at.switch_page('pages/{name}.py'); at.run(); "
            "assert not at.exception, [e.value for e in at.exception]; "
            "print(' '.join(m.value for m in [*at.title, *at.markdown, *at.caption]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=APP.parent,
                         env={**os.environ, "LITEDIFF_WARM_UP_S": "off",
                              "LITEDIFF_RUNS": str(tmp_path / "runs")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert shows in out.stdout


def test_home_measures_latency_and_samples_on_demand():
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.button(key="home_measure").click().run()
    assert not at.exception
    assert "measured here at" in " ".join(c.value for c in at.caption)
    at.slider[0].set_value(10)
    next(b for b in at.button if b.label == "Sample").click().run()
    assert not at.exception
    captions = [i.proto.imgs[0].caption for i in at.get("image")]
    assert captions[-1] == "16 samples, DDIM 10 steps, seed 0, cpu"


def test_home_explains_a_bad_model_source_and_stays_up():
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.sidebar.text_input[0].set_value("no/such-model-offline").run()
    assert not at.exception
    assert at.error and "local folder" in at.error[0].value


def test_home_dataset_must_fit_the_model_and_carries_to_compress():
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.text_input(key="home_dataset").set_value("no-such-dataset").run()
    assert not at.exception and "unknown dataset" in at.error[0].value
    at.switch_page("pages/compress.py").run()
    assert not at.exception
    assert at.text_input(key="cp_dataset").value == at.session_state["_kept_cp_dataset"]


def test_home_takes_the_dataset_of_the_model_and_carries_it_to_compress(fashion_mnist):
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.text_input(key="home_dataset").set_value("fashion-mnist").run()
    assert not at.exception and not at.error
    assert "dataset: fashion-mnist ·" in " ".join(c.value for c in at.caption)
    at.switch_page("pages/compress.py").run()
    assert not at.exception
    assert at.text_input(key="cp_dataset").value == at.session_state["_kept_cp_dataset"]


def test_home_refuses_a_dataset_of_other_channels(tmp_path):
    """A 3-channel image folder against the 1-channel embedded model: a clear message."""
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (28, 28), (i * 100, 0, 0)).save(tmp_path / f"{i}.png")
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.text_input(key="home_dataset").set_value(f"folder:{tmp_path}").run()
    assert not at.exception
    assert "3×" in at.error[0].value and "1×28×28" in at.error[0].value
