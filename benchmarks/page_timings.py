"""Dashboard speed in a real browser: first paint and page switches, with cached_results/.

    python benchmarks/page_timings.py --rounds 5      # writes benchmarks/page_timings.md

Starts ``streamlit run app.py`` on loopback (as the browser test does) and drives Debian's
Chromium with Playwright:

- first paint: ``goto`` until the home title is visible; "cold" is the first visit to a fresh
  server (it imports torch/diffusers and loads the model), "warm" a new tab afterwards;
- home complete: until the script run is over (model card, latency, sample grid drawn);
- page switch: sidebar click until the page's title is visible, and until its run is over;
  once on the cold server right after Home (Home's background warm-up may still be importing
  torch), then in every warm round.

- reading time: after each page has run, ``--read-seconds`` pass (a student looking at it)
  before the next click, so a switch is not charged with the previous page's drawing still in
  progress (plotly.js, loaded by the first chart of a tab, takes 1-2.5 s to compile here); the
  cold row right after Home keeps no pause: the worst case.

- server share: the server logs how long each script run took (``LITEDIFF_PAGE_TIMES``, see
  ``app.run_page``); the rest of a switch is the browser's (drawing, and waiting for a core
  on a 2-core machine) and the websocket's.

- idle CPU: with exactly one tab open on Home and nothing happening, the CPU time the server
  process (``/proc/<pid>/stat``) and Chromium's processes use over ``--idle-seconds``, as a
  share of one core. ``--watcher auto`` measures it once more with Streamlit's file watcher on
  (what the shipped ``.streamlit/config.toml`` turns off) for comparison.

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
    """The browser test's server and tab helpers (loaded by path: ``tests`` is no package;
    its own imports, e.g. ``tiny``, come from that folder)."""
    import importlib.util

    sys.path.insert(0, str(REPO / "tests"))
    spec = importlib.util.spec_from_file_location("test_browser",
                                                  REPO / "tests" / "test_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_bt = _browser_test()
CHROMIUM, CHROMIUM_ARGS, PAGES, Tab, serve_process = (_bt.CHROMIUM, _bt.CHROMIUM_ARGS, _bt.PAGES,
                                                      _bt.Tab, _bt.serve_process)
cpu_seconds, cpu_share = _bt.cpu_seconds, _bt.cpu_share


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def chromium_pids() -> list:
    """This script's Chromium processes (browser, renderers, utilities): those named chromium
    that descend from this process (through Playwright's driver), not other users' browsers."""
    me, out = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if "chromium" not in Path(cmd).name:
                continue
            pid = int(d.name)
            while pid > 1 and pid != me:
                pid = _parent(pid)
        except (OSError, ValueError, IndexError):
            continue
        if pid == me:
            out.append(int(d.name))
    return out


def _cpu_total(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):  # a renderer that went away
            pass
    return total


def idle_cpu(browser, url: str, server_pid: int, seconds: float) -> dict:
    """One tab on Home, loaded and left alone; CPU shares of one core over ``seconds``."""
    tab, _, _ = visit_home(browser, url)
    tab.page.wait_for_timeout(3000)  # let the last messages and images arrive
    # a fresh server imports torch and the stages after Home's first paint (app.warm_up, ~10 s
    # of one core): idle is what follows, once 2 s pass with the server under 10% of a core
    deadline = time.monotonic() + 40  # (a file watcher never settles)
    while cpu_share(server_pid, 2.0) > 0.10 and time.monotonic() < deadline:
        pass
    browser_pids = chromium_pids()
    s0, b0, t0 = cpu_seconds(server_pid), _cpu_total(browser_pids), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    result = {"server": (cpu_seconds(server_pid) - s0) / wall,
              "chromium": (_cpu_total(browser_pids) - b0) / wall, "seconds": wall,
              "errors": list(tab.errors)}
    tab.page.close()
    return result


def measure_idle(url_pid, seconds: float) -> dict:
    from playwright.sync_api import sync_playwright

    url, pid = url_pid
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            return idle_cpu(browser, url, pid, seconds)
        finally:
            browser.close()


def visit_home(browser, url):
    tab = Tab(browser, url)
    t0 = time.perf_counter()
    tab.page.goto(url)
    tab.title("LiteDiff Lab", timeout_s=300)
    paint = time.perf_counter() - t0
    tab.idle(timeout_s=900, settle=False)  # a cold server on a busy machine can take minutes
    done = time.perf_counter() - t0
    tab.idle(timeout_s=900)  # nothing left to paint before the next action
    return tab, paint, done


def last_server_time(log: Path, title: str) -> float:
    """The seconds of the server's latest script run of page ``title`` (``app.run_page``)."""
    import json

    runs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    runs = [r for r in runs if r["page"] == title]
    return runs[-1]["seconds"] if runs else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--idle-seconds", type=float, default=30.0,
                   help="window of the idle-CPU measurement (0: skip it)")
    p.add_argument("--watcher", choices=["auto", "poll", "watchdog"], default=None,
                   help="also measure idle CPU with this file watcher (the shipped config: none)")
    p.add_argument("--read-seconds", type=float, default=3.0,
                   help="pause on each page before the next switch (a student reading it)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "page_timings.md"))
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    rows, server, errors, idle = {}, {}, [], {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, \
            serve_process(Path(tmp) / "runs", Path(tmp) / "streamlit.log",
                          env={"LITEDIFF_PAGE_TIMES": str(Path(tmp) / "times.jsonl")}
                          ) as (url, proc), \
            sync_playwright() as pw:
        times = Path(tmp) / "times.jsonl"
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab, paint, done = visit_home(browser, url)
        rows["first paint, cold server"] = [paint]
        rows["home complete, cold server"] = [done]
        server["home complete, cold server"] = [last_server_time(times, "Home")]
        # what a student does next: the first switch, while Home's warm-up may still import
        # torch and the compression stages in the background
        t0 = time.perf_counter()
        tab.nav("Explore")
        tab.title("Explore", timeout_s=300)
        tab.idle(timeout_s=300, settle=False)
        rows["first switch to Explore, cold server (right after Home)"] = [
            time.perf_counter() - t0]
        server["first switch to Explore, cold server (right after Home)"] = [
            last_server_time(times, "Explore")]
        tab.idle()
        errors += tab.errors
        tab.page.close()
        for _ in range(args.rounds):
            tab, paint, done = visit_home(browser, url)
            rows.setdefault("first paint, warm (new tab)", []).append(paint)
            rows.setdefault("home complete, warm", []).append(done)
            server.setdefault("home complete, warm", []).append(last_server_time(times, "Home"))
            for label, title, _ in PAGES:
                tab.page.wait_for_timeout(args.read_seconds * 1000)
                t0 = time.perf_counter()
                tab.nav(label)
                tab.title(title)
                rows.setdefault(f"switch to {label}: title shown", []).append(
                    time.perf_counter() - t0)
                tab.idle(settle=False)
                rows.setdefault(f"switch to {label}: run complete", []).append(
                    time.perf_counter() - t0)
                server.setdefault(f"switch to {label}: run complete", []).append(
                    last_server_time(times, title))
                tab.idle()
            errors += tab.errors
            tab.page.close()
        browser.close()
    if args.idle_seconds > 0:
        with tempfile.TemporaryDirectory() as tmp, \
                serve_process(Path(tmp) / "runs", Path(tmp) / "streamlit.log") as (url, proc):
            idle["shipped config (fileWatcherType none)"] = measure_idle((url, proc.pid),
                                                                         args.idle_seconds)
        if args.watcher:
            with tempfile.TemporaryDirectory() as tmp, \
                    serve_process(Path(tmp) / "runs", Path(tmp) / "streamlit.log",
                                  [f"--server.fileWatcherType={args.watcher}"]) as (url, proc):
                idle[f"file watcher {args.watcher} (not shipped)"] = measure_idle(
                    (url, proc.pid), args.idle_seconds)
        for what in idle.values():
            errors += what.pop("errors")

    command = " ".join(["python benchmarks/page_timings.py", *(argv if argv is not None
                                                               else sys.argv[1:])])
    lines = ["# Dashboard timings in a real browser", "",
             f"Command: `{command.strip()}`  ",
             f"Machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs (1-minute load "
             f"average {load_before:.1f} before the start, {os.getloadavg()[0]:.1f} at the end "
             f"with this benchmark's own server and browser); "
             f"Chromium {CHROMIUM}; cached_results/ as shipped; written "
             f"{time.strftime('%Y-%m-%d %H:%M')}.", "",
             "| what | median s | min s | max s | n | of it on the server (median s) |",
             "|---|---|---|---|---|---|"]
    for what, xs in rows.items():
        own = f"{statistics.median(server[what]):.2f}" if what in server else ""
        lines.append(f"| {what} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} "
                     f"| {len(xs)} | {own} |")
    if idle:
        lines += ["", "Idle CPU: one tab open on Home, loaded, then left alone (from when the "
                  "warm-up's imports are over: 2 s under 10% of a core); CPU time "
                  "(`/proc/<pid>/stat` utime + stime) per wall second, as a share of one core.",
                  "", "| server setup | streamlit server | Chromium (all processes) | window s |",
                  "|---|---|---|---|"]
        for what, r in idle.items():
            lines.append(f"| {what} | {r['server']:.1%} | {r['chromium']:.1%} "
                         f"| {r['seconds']:.0f} |")
    lines += ["", f"Browser console errors: {len(errors)}" + (": " + "; ".join(errors[:5])
                                                              if errors else ".")]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
