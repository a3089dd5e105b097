"""Dashboard speed in a real browser: first paint and page switches, with cached_results/.

    python benchmarks/page_timings.py --rounds 5      # writes benchmarks/page_timings.md

Starts ``streamlit run app.py`` on loopback (as the browser test does) and drives Debian's
Chromium with Playwright:

- first paint: ``goto`` until the home title is visible; "cold" is the first visit to a fresh
  server (it imports torch/diffusers and loads the model), "warm" a new tab afterwards;
- home complete: until the script run is over (model card, latency, sample grid drawn);
- page switch: sidebar click until the page's title is visible, and until its run is over.

Each warm figure is the median over ``--rounds`` rounds. Needs /usr/bin/chromium and playwright.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _browser_test():
    """The browser test's server and tab helpers (loaded by path: ``tests`` is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("test_browser",
                                                  REPO / "tests" / "test_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_bt = _browser_test()
CHROMIUM, CHROMIUM_ARGS, PAGES, Tab, serve = (_bt.CHROMIUM, _bt.CHROMIUM_ARGS, _bt.PAGES, _bt.Tab,
                                              _bt.serve)


def visit_home(browser, url):
    tab = Tab(browser, url)
    t0 = time.perf_counter()
    tab.page.goto(url)
    tab.title("LiteDiff Lab")
    paint = time.perf_counter() - t0
    tab.idle(settle=False)
    done = time.perf_counter() - t0
    tab.idle()  # nothing left to paint before the next action
    return tab, paint, done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "page_timings.md"))
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    rows, errors = {}, []
    with tempfile.TemporaryDirectory() as tmp, \
            serve(Path(tmp) / "runs", Path(tmp) / "streamlit.log") as url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab, paint, done = visit_home(browser, url)
        rows["first paint, cold server"] = [paint]
        rows["home complete, cold server"] = [done]
        errors += tab.errors
        tab.page.close()
        for _ in range(args.rounds):
            tab, paint, done = visit_home(browser, url)
            rows.setdefault("first paint, warm (new tab)", []).append(paint)
            rows.setdefault("home complete, warm", []).append(done)
            for label, title, _ in PAGES:
                t0 = time.perf_counter()
                tab.nav(label)
                tab.title(title)
                rows.setdefault(f"switch to {label}: title shown", []).append(
                    time.perf_counter() - t0)
                tab.idle(settle=False)
                rows.setdefault(f"switch to {label}: run complete", []).append(
                    time.perf_counter() - t0)
                tab.idle()
            errors += tab.errors
            tab.page.close()
        browser.close()

    lines = ["# Dashboard timings in a real browser", "",
             f"Command: `python benchmarks/page_timings.py --rounds {args.rounds}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; Chromium {CHROMIUM}; "
             f"cached_results/ as shipped; written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "| what | median s | min s | max s | n |", "|---|---|---|---|---|"]
    for what, xs in rows.items():
        lines.append(f"| {what} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} "
                     f"| {len(xs)} |")
    lines += ["", f"Browser console errors: {len(errors)}" + (": " + "; ".join(errors[:5])
                                                              if errors else ".")]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
