from pathlib import Path

from streamlit.testing.v1 import AppTest

from litediff_core.metrics import size_report
from litediff_core.models import load_base

APP = Path(__file__).resolve().parent.parent / "app.py"


def test_home_shows_the_embedded_model_card_and_grid():
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    assert not at.exception
    params = size_report(load_base("embedded").unet)["params"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Parameters"] == f"{params / 1e6:.2f} M"
    assert any("Step latency" in label for label in shown)
    assert len(at.get("image")) == 1


def test_home_explains_a_bad_model_source_and_stays_up():
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.sidebar.text_input[0].set_value("no/such-model-offline").run()
    assert not at.exception
    assert at.error and "local folder" in at.error[0].value
