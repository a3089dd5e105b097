"""A 10-minute class demo, driven in Chromium and timed: what a student does and waits for.

    python benchmarks/demo_walk.py          # writes benchmarks/demo_walk.md + screenshots

Starts ``streamlit run app.py`` on loopback with the shipped ``cached_results/`` and an empty
user run store (as the browser test does), then, as one visit:

1. opens Home on the cold server (first paint, page complete);
2. Explore: moves the prune ratio slider 0 → 0.3 → 0.5 → 0.7 (each a shipped run: the time till
   its stored result shows) and picks 10 sampling steps (another shipped run);
3. sets an off-grid recipe (structured L1 30 %, 50 training steps), reads the estimate the page
   gives before it starts and the training-budget warning, runs it, and times it to "Done";
4. shows the Pareto plot, the Layers heatmap, compares samplers on the Samples page;
5. exports the Runs table for a slide and compiles the LaTeX document with ``pdflatex``.

Every step's seconds, the ETA against the measured run time, and a screenshot per step (under
``test-artifacts/demo/``) go into the report. Run it with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHOTS = REPO / "test-artifacts" / "demo"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-steps", type=int, default=50, help="the fresh run's training steps")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "demo_walk.md"))
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from page_timings import _bt as tb, cpu_model  # the browser test's helpers
    SHOTS.mkdir(parents=True, exist_ok=True)
    tb.ARTIFACTS = SHOTS  # Tab.check writes its screenshots here
    steps, notes = [], []
    t_start = time.perf_counter()

    def step(what, seconds, shot=None, detail=""):
        steps.append((what, seconds, shot, detail))
        print(f"{what}: {seconds:.2f} s {detail}", flush=True)

    with tempfile.TemporaryDirectory() as tmp, \
            tb.serve_process(Path(tmp) / "runs", Path(tmp) / "streamlit.log") as (url, proc), \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(tb.CHROMIUM), args=tb.CHROMIUM_ARGS)
        tab = tb.Tab(browser, url)
        page = tab.page
        t0 = time.perf_counter()
        page.goto(url)
        tab.title("LiteDiff Lab", timeout_s=300)
        paint = time.perf_counter() - t0
        tab.idle(timeout_s=600, settle=False)
        step("Home: first paint, cold server", paint)
        tab.idle()
        tab.check("1-home.png")
        step("Home: complete, cold server", time.perf_counter() - t0, "1-home.png")

        t0 = time.perf_counter()
        tab.nav("Explore")
        tab.title("Explore")
        tab.idle(settle=False)
        step("switch to Explore", time.perf_counter() - t0)
        tab.idle()
        slider = page.get_by_role("slider").first  # Prune ratio
        for ratio, text in ((0.3, "structured l1 30% + FT 400"),
                            (0.5, "structured l1 50% + FT 400"),
                            (0.7, "structured l1 70% + FT 400")):
            slider.focus()
            t0 = time.perf_counter()
            for _ in range(3 if ratio == 0.3 else 2):
                page.keyboard.press("ArrowRight")
            page.locator("p", has_text="Stored result").filter(has_text=text).first \
                .wait_for(timeout=60_000)
            shown = time.perf_counter() - t0
            tab.idle()
            shot = f"2-explore-{ratio:.1f}.png"
            tab.check(shot)
            step(f"Explore: ratio slider to {ratio:.1f}, stored result shown", shown, shot,
                 f"({text})")
        slider.focus()
        for _ in range(7):  # back to 0: the dense model
            page.keyboard.press("ArrowLeft")
        tab.idle()
        t0 = time.perf_counter()
        page.locator('[data-testid="stRadio"]').filter(has_text="Sampling steps") \
            .get_by_text("10", exact=True).click()
        page.locator("p", has_text="Stored result").filter(has_text="· ddim 10").first \
            .wait_for(timeout=60_000)
        shown = time.perf_counter() - t0
        tab.idle()
        tab.check("3-explore-ddim10.png")
        step("Explore: 10 sampling steps, stored result shown", shown, "3-explore-ddim10.png")
        page.locator('[data-testid="stRadio"]').filter(has_text="Sampling steps") \
            .get_by_text("50", exact=True).click()
        tab.idle()

        # an off-grid recipe: structured L1 30 % with a short training budget
        slider.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        tab.idle()
        t0 = time.perf_counter()
        tab.fill("Training steps", args.train_steps)
        page.get_by_text("Estimated run time").first.wait_for(timeout=120_000)
        tab.idle()
        body = page.inner_text("body")
        eta = re.search(r"Estimated run time\s*≈\s*(\d+)\s*min", body)
        warned = "Too little recovery training" in body
        tab.check("4-explore-off-grid.png")
        step("Explore: off-grid setting, estimate shown", time.perf_counter() - t0,
             "4-explore-off-grid.png", f"(estimate: {'≈ ' + eta.group(1) + ' min' if eta else 'none'}; "
             f"budget warning: {'yes' if warned else 'no'})")
        t0 = time.perf_counter()
        page.get_by_role("button", name="Run", exact=True).click()
        page.locator("p", has_text="Stored result").first.wait_for(timeout=1800_000)
        ran = time.perf_counter() - t0
        tab.idle()
        tab.check("5-explore-fresh-run.png")
        step(f"Explore: the fresh run ({args.train_steps} training steps) until its result shows",
             ran, "5-explore-fresh-run.png",
             f"(estimate before it started: {eta.group(1) + ' min' if eta else 'none'})")
        if eta:
            notes.append(f"ETA given before the run: ≈ {eta.group(1)} min; measured: "
                         f"{ran / 60:.1f} min (ratio measured/estimated "
                         f"{ran / 60 / int(eta.group(1)):.2f}).")

        for label, title, must in (("Pareto", "Pareto", "One point per finished run"),
                                   ("Layers", "Layers", "Per-layer table")):
            t0 = time.perf_counter()
            tab.nav(label)
            tab.title(title)
            tab.idle(settle=False)
            took = time.perf_counter() - t0
            tab.idle()
            assert must in page.inner_text("body"), label
            shot = f"6-{label.lower()}.png"
            tab.check(shot)
            step(f"switch to {label}, complete", took, shot)

        tab.nav("Samples & samplers")
        tab.title("Samples & samplers")
        tab.idle()
        t0 = time.perf_counter()
        page.get_by_role("button", name="Generate").click()
        tab.idle(timeout_s=600)  # the run that samples every cell
        tab.check("7-samplers.png")
        step("Samples: compare every sampler at 10 and 25 steps (8 images each)",
             time.perf_counter() - t0, "7-samplers.png")

        tab.nav("Runs")
        tab.title("Runs")
        tab.idle()
        t0 = time.perf_counter()
        with page.expect_download() as download:
            page.get_by_role("button", name="LaTeX document").click()
        tex = Path(tmp) / "runs-table.tex"
        download.value.save_as(tex)
        step("Runs: LaTeX document downloaded", time.perf_counter() - t0, None)
        tab.check("8-runs.png")
        if shutil.which("pdflatex"):
            out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                                  tex.name], cwd=tmp, capture_output=True, text=True)
            ok = out.returncode == 0 and (Path(tmp) / "runs-table.pdf").exists()
            notes.append("The downloaded LaTeX document " + (
                "compiles with pdflatex." if ok else f"does NOT compile: {out.stdout[-400:]}"))
        else:
            notes.append("pdflatex not installed: the LaTeX export was not compiled.")
        errors = tab.errors
        browser.close()
    total = time.perf_counter() - t_start
    cpu = cpu_model()
    flags = sorted(set(re.findall(r"\b(avx512_vnni|avx512_bf16|amx_int8)\b",
                                  open("/proc/cpuinfo").read())))
    flags = ", ".join(flags) or "none of avx512_vnni / avx512_bf16 / amx_int8"
    lines = ["# A 10-minute class demo, timed in Chromium", "",
             f"Command: `python benchmarks/demo_walk.py {' '.join(argv or sys.argv[1:])}`  ",
             f"Machine: {cpu}, {os.cpu_count()} CPUs, flags {flags}; "
             f"load average {os.getloadavg()[0]:.1f} at the end; cached_results/ as shipped, an "
             f"empty user run store; written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             f"Whole walk: {total / 60:.1f} min.", "",
             "| step | seconds | screenshot |", "|---|---:|---|"]
    for what, seconds, shot, detail in steps:
        lines.append(f"| {what} {detail} | {seconds:.2f} | "
                     f"{f'`test-artifacts/demo/{shot}`' if shot else ''} |")
    lines += [""] + [f"- {n}" for n in notes]
    lines += [f"- Browser console errors: {len(errors)}" + (": " + "; ".join(errors[:3])
                                                          if errors else ".")]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
