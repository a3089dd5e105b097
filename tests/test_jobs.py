"""The background job registry (litediff_core.jobs): progress, ETA, loss curve, cancel, errors."""

import threading

import pytest

from litediff_core.errors import LiteDiffError
from litediff_core.jobs import CANCELLED, DONE, FAILED, Cancelled, Job, JobRegistry
from litediff_core.progress import Event, data_of, prefixed


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_progress_events_carry_data_through_prefixes_and_plain_text_carries_none():
    e = prefixed("finetune", Event("loss 0.0412", loss=0.0412, step=3))
    assert e == "finetune: loss 0.0412" and isinstance(e, str)  # a bar shows the text
    assert data_of(e) == {"loss": 0.0412, "step": 3}
    assert data_of("finetune: loss 0.0412") == {}  # text is never parsed for numbers
    job = Job("j")
    job.progress(1, 2, "finetune: loss 0.5")
    assert job.snapshot()["losses"] == []
    job.progress(2, 2, prefixed("distill", Event("step 2: curve FID 90.0",
                                                   curve_point={"step": 2, "fid": 90.0})))
    assert job.snapshot()["curve"] == [{"step": 2, "fid": 90.0, "stage": "distill"}]


def test_progress_eta_and_loss_curve():
    clock = FakeClock()
    job = Job("j", label="demo", clock=clock)
    job.progress(0, 100, "structured-prune: ranking")
    assert job.snapshot()["eta_s"] is None  # no rate yet
    clock.t += 10
    job.progress(10, 100, Event("finetune: loss 0.5", loss=0.5))
    clock.t += 10
    job.progress(20, 100, Event("finetune: loss 0.25", loss=0.25))
    snap = job.snapshot()
    assert snap["fraction"] == pytest.approx(0.2)
    assert snap["eta_s"] == pytest.approx(80.0)  # finetune: 10 units in 10 s, 80 left
    assert snap["elapsed_s"] == pytest.approx(20)
    assert [p["loss"] for p in snap["losses"]] == [0.5, 0.25]
    assert snap["losses"][-1] == {"step": 2, "loss": 0.25, "stage": "finetune",
                                  "elapsed_s": 20.0}
    assert snap["last_loss"] == 0.25 and snap["message"] == "finetune: loss 0.25"
    # a new stage (message prefix) restarts the estimate from its own rate
    clock.t += 10
    job.progress(30, 100, "evaluating: batch 1")
    assert job.snapshot()["eta_s"] is None
    clock.t += 1
    job.progress(40, 100, "evaluating: batch 2")
    assert job.snapshot()["eta_s"] == pytest.approx(60 * 1 / 10)
    # so does a new total
    clock.t += 5
    job.progress(0, 10, "evaluating")
    assert job.snapshot()["eta_s"] is None
    clock.t += 2
    job.progress(5, 10, "evaluating")
    assert job.snapshot()["eta_s"] == pytest.approx(2.0)


def test_a_job_runs_in_a_thread_and_keeps_its_result():
    jobs = JobRegistry()
    seen = threading.Event()

    def work(x, y, progress, scale=1):
        assert threading.current_thread() is not threading.main_thread()
        for i in range(3):
            progress(i + 1, 3, Event(f"loss {1 / (i + 1):.3f}", loss=1 / (i + 1)))
        seen.set()
        return (x + y) * scale

    job_id = jobs.start(work, 2, 3, scale=10, label="adder")
    snap = jobs.wait(job_id, timeout=10)
    assert seen.is_set() and snap["state"] == DONE and snap["result"] == 50
    assert snap["fraction"] == 1.0 and snap["eta_s"] is None and len(snap["losses"]) == 3
    assert jobs.jobs()[0]["label"] == "adder" and not jobs.running()
    assert jobs.snapshot("nope") is None and jobs.cancel("nope") is False


def test_cancel_raises_inside_the_progress_callback():
    jobs = JobRegistry()
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow(progress):
        progress(0, 100, "start")
        started.set()
        release.wait(10)
        for i in range(1, 100):
            calls.append(i)
            progress(i, 100, f"step {i}")
        return "finished"

    job_id = jobs.start(slow)
    assert started.wait(10)
    assert jobs.snapshot(job_id)["state"] == "running"
    assert jobs.cancel(job_id) is True
    release.set()
    snap = jobs.wait(job_id, timeout=10)
    assert snap["state"] == CANCELLED and snap["result"] is None
    assert snap["error"] == "cancelled by user" and calls == [1]
    assert jobs.cancel(job_id) is False  # already over


def test_errors_are_kept_as_messages_without_traceback():
    jobs = JobRegistry()

    def user_error(progress):
        raise LiteDiffError("ratio 0.95 leaves no channels")

    def bug(progress):
        raise ValueError("boom\nsecond line")

    a, b = jobs.start(user_error), jobs.start(bug)
    assert jobs.wait(a, 10)["state"] == FAILED
    assert jobs.snapshot(a)["error"] == "ratio 0.95 leaves no channels"
    jobs.wait(b, 10)
    assert jobs.snapshot(b)["state"] == FAILED and jobs.snapshot(b)["error"] == "ValueError: boom"


def test_a_running_key_is_reused_and_old_finished_jobs_are_forgotten():
    jobs = JobRegistry(keep=2)
    release = threading.Event()

    def wait(progress):
        release.wait(10)

    first = jobs.start(wait, key="recipe-a")
    assert jobs.start(wait, key="recipe-a") == first  # same recipe still running: reused
    other = jobs.start(wait, key="recipe-b")
    assert other != first
    release.set()
    jobs.wait(first, 10)
    jobs.wait(other, 10)
    again = jobs.start(lambda progress: None, key="recipe-a")
    assert again != first  # the first one has finished: a new job
    jobs.wait(again, 10)
    for _ in range(3):
        jobs.wait(jobs.start(lambda progress: None), 10)
    assert len(jobs.jobs()) == 2


def test_cancelled_exception_carries_a_message():
    assert str(Cancelled()) == "cancelled by user"


def test_cancelling_run_recipe_stores_the_run_as_failed_cancelled(tmp_path, ddpm_scheduler,
                                                                  fashion_mnist):
    """A real (tiny) run cancelled during its fine-tune: the store keeps it as failed with the
    cancellation as its error, and no model is left behind."""
    import torch
    from diffusers import UNet2DModel

    from litediff_core.models import save_model
    from litediff_core.recipes import Recipe
    from litediff_core.runs import RunStore, run_recipe

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
                       norm_num_groups=4).eval()
    base = str(save_model(unet, ddpm_scheduler, tmp_path / "base", {"dataset": "fashion-mnist"}))
    recipe = Recipe(base=base, stages=[{"stage": "finetune",
                                        "config": {"steps": 100_000, "batch_size": 4}}],
                    eval={"n": 16, "steps": 2, "latency_batch": 2})
    store = RunStore(tmp_path / "runs")
    jobs = JobRegistry()
    job_id = jobs.start(run_recipe, recipe, store, device="cpu", key=recipe.key())
    job = jobs.get(job_id)
    try:
        for _ in range(2400):  # wait for the first training loss, then cancel
            if job.snapshot()["losses"] or job.snapshot()["state"] != "running":
                break
            threading.Event().wait(0.05)
        assert job.snapshot()["losses"], job.snapshot()
    finally:
        jobs.cancel(job_id)
    snap = jobs.wait(job_id, timeout=60)
    assert snap["state"] == CANCELLED
    status = RunStore.status(store.run_dir(recipe))
    assert status["status"] == "failed" and status["error"] == "Cancelled: cancelled by user"
    assert not (store.run_dir(recipe) / "model").exists()
    row = store.table().set_index("id").loc[store.run_dir(recipe).name]
    assert row["status"] == "failed" and "Cancelled" in row["error"]


def test_with_one_slot_later_jobs_queue_and_can_be_cancelled_before_starting():
    jobs = JobRegistry(max_running=1)
    release = threading.Event()
    ran = []

    def first(progress):
        progress(0, 1, "busy")
        release.wait(10)
        ran.append("first")

    def second(progress):
        ran.append("second")

    a = jobs.start(first)
    b, c = jobs.start(second), jobs.start(second)
    for _ in range(100):
        if jobs.snapshot(a)["state"] == "running":
            break
        threading.Event().wait(0.02)
    assert jobs.snapshot(a)["state"] == "running"
    assert jobs.snapshot(b)["state"] == "queued" and jobs.snapshot(c)["state"] == "queued"
    assert {s["id"] for s in jobs.running()} == {a, b, c}
    assert jobs.cancel(b)
    assert jobs.wait(b, 10)["state"] == CANCELLED  # left the queue without running
    release.set()
    assert jobs.wait(a, 10)["state"] == DONE and jobs.wait(c, 10)["state"] == DONE
    assert ran == ["first", "second"]


def test_a_cancel_request_shows_at_once_as_cancelling():
    """Between Cancel and the worker's next progress report the job is still running: the
    snapshot says so (``cancelling``, seconds waited) and stops saying it once the job ends."""
    clock = FakeClock()
    jobs = JobRegistry(clock=clock)
    started, release = threading.Event(), threading.Event()

    def quiet(progress):
        progress(1, 10, Event("finetune: loss 0.5", loss=0.5))
        started.set()
        release.wait(10)  # a long step that reports nothing
        progress(2, 10, Event("finetune: loss 0.4", loss=0.4))

    job_id = jobs.start(quiet)
    assert started.wait(10)
    snap = jobs.snapshot(job_id)
    assert not snap["cancelling"] and snap["cancel_wait_s"] is None
    assert jobs.cancel(job_id)
    snap = jobs.snapshot(job_id)
    assert snap["state"] == "running" and snap["cancelling"] and snap["cancel_requested"]
    assert snap["cancel_wait_s"] == 0.0
    clock.t += 4
    assert jobs.cancel(job_id)  # asking again keeps the first request's time
    assert jobs.snapshot(job_id)["cancel_wait_s"] == pytest.approx(4.0)
    release.set()
    snap = jobs.wait(job_id, timeout=10)
    assert snap["state"] == CANCELLED and not snap["cancelling"] and snap["cancel_wait_s"] is None
    assert snap["cancel_requested"]
