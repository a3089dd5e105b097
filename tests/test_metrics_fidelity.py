"""FID / KID / precision-recall on small synthetic sets, with a seeded random classifier as the
feature extractor (the shipped one may not exist yet; a random CNN still separates these sets)."""

import importlib
import math
import re
import time

import pytest
import torch

from litediff_core.errors import MetricError
from litediff_core.metrics import FMNIST_EXTRACTOR, FidelityResult, fidelity
from litediff_core.models.classifier import FashionClassifier, save_classifier

# ``litediff_core.metrics.fidelity`` is the function; its module is ``metrics._fidelity``.
fidelity_module = importlib.import_module("litediff_core.metrics._fidelity")


def blobs(n, seed):
    """Noisy Gaussian blobs of random position and radius."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cx, cy = 14 + 4 * torch.randn(2, n, 1, 1, generator=g)
    r = 4 + 2 * torch.rand(n, 1, 1, generator=g)
    img = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))
    img = img + 0.1 * torch.randn(n, 28, 28, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).unsqueeze(1)


def stripes(n, seed):
    """Noisy vertical stripes of random frequency: clearly not blobs."""
    g = torch.Generator().manual_seed(seed)
    xx = torch.arange(28.0).view(1, 1, 28).expand(n, 28, 28)
    img = 0.5 + 0.5 * torch.sin((0.5 + torch.rand(n, 1, 1, generator=g)) * xx)
    img = img + 0.1 * torch.randn(n, 28, 28, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).unsqueeze(1)


@pytest.fixture(scope="module")
def sets():
    return {"A": blobs(200, 1), "A2": blobs(200, 2), "B": stripes(200, 3)}


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_classifier(FashionClassifier(), tmp_path_factory.mktemp("clf"), {"note": "random"})


def run(gen, ref, clf_dir, **kw):
    kw.setdefault("bootstrap", 50)
    return fidelity(gen, ref, extractor_weights=clf_dir, reference_name="blobs", **kw)


def test_self_and_ordering(sets, clf_dir):
    same = run(sets["A"], sets["A"], clf_dir)
    near = run(sets["A2"], sets["A"], clf_dir)
    far = run(sets["B"], sets["A"], clf_dir)
    assert isinstance(same, FidelityResult) and same.extractor == FMNIST_EXTRACTOR
    assert abs(same.fid) < 1e-6 * far.fid
    assert same.precision == same.recall == 1.0
    assert abs(same.kid_mean) < 1e-2 * far.kid_mean  # unbiased KID: ≈ 0, may be slightly < 0
    assert far.fid > 10 * near.fid > 0
    assert far.kid_mean > 10 * abs(near.kid_mean)
    assert far.precision < near.precision and far.recall < near.recall
    assert (near.n_generated, near.n_reference, near.kid_subset_size) == (200, 200, 200)


def test_matches_torch_fidelity_calculate_metrics(sets, clf_dir):
    import torch_fidelity

    ours = run(sets["A2"], sets["A"], clf_dir, seed=3, kid_subset_size=100)
    theirs = torch_fidelity.calculate_metrics(
        input1=fidelity_module.Uint8Images(sets["A2"]), input2=fidelity_module.Uint8Images(sets["A"]),
        fid=True, kid=True, prc=True, feature_extractor=FMNIST_EXTRACTOR, litediff_classifier=clf_dir,
        cuda=False, cache=False, verbose=False, batch_size=100, kid_subset_size=100, rng_seed=3,
        save_cpu_ram=True)
    assert ours.fid == pytest.approx(theirs[torch_fidelity.KEY_METRIC_FID], rel=1e-6)
    assert ours.kid_mean == pytest.approx(theirs[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-5)
    assert ours.kid_std == pytest.approx(theirs[torch_fidelity.KEY_METRIC_KID_STD], rel=1e-5)
    assert ours.precision == theirs[torch_fidelity.KEY_METRIC_PRECISION]
    assert ours.recall == theirs[torch_fidelity.KEY_METRIC_RECALL]


def test_deterministic_and_batch_size_independent(sets, clf_dir):
    a = run(sets["A2"], sets["A"], clf_dir, batch_size=32, cache=False).to_dict()
    b = run(sets["A2"], sets["A"], clf_dir, batch_size=32, cache=False).to_dict()
    assert a == b
    c = run(sets["A2"], sets["A"], clf_dir, batch_size=100, cache=False)
    assert c.fid == pytest.approx(a["fid"], rel=1e-6)
    assert c.precision == a["precision"] and c.recall == a["recall"]


def test_bootstrap_interval(sets, clf_dir):
    for gen in (sets["A2"], sets["B"]):
        r = run(gen, sets["A"], clf_dir, bootstrap=100)
        lo, hi = r.fid_ci95
        assert 0 <= lo <= r.fid <= hi and lo < hi
        assert hi - lo < r.fid + 1e-3  # a spread, not an arbitrary range
        assert r.fid_bootstrap_bias > 0  # resampling with replacement inflates FID
    none = run(sets["A2"], sets["A"], clf_dir, bootstrap=0)
    assert none.fid_ci95 == (none.fid, none.fid)


def test_reference_cache(sets, clf_dir, monkeypatch, tmp_path):
    calls = []
    real_extract = fidelity_module._extract
    monkeypatch.setattr(fidelity_module, "_extract",
                        lambda fe, images, *a, **k: calls.append(len(images)) or real_extract(fe, images, *a, **k))
    first = run(sets["A2"], sets["A"], clf_dir)
    files = sorted((tmp_path / "cache" / "fidelity").glob("*.safetensors"))
    assert len(files) == 1 and files[0].name.startswith("blobs-litediff-fmnist-cnn-v1-")
    assert not first.reference_from_cache and calls == [200, 200]
    mtime = files[0].stat().st_mtime_ns

    calls.clear()
    second = run(sets["A2"], sets["A"], clf_dir)
    assert second.reference_from_cache and calls == [200]  # generated only
    assert files[0].stat().st_mtime_ns == mtime
    assert second.to_dict() == {**first.to_dict(), "reference_from_cache": True}

    changed = sets["A"].clone()
    changed[0, 0, 0, 0] ^= 1  # one pixel, one bit
    calls.clear()
    third = run(sets["A2"], changed, clf_dir)
    assert not third.reference_from_cache and calls == [200, 200]
    assert len(list((tmp_path / "cache" / "fidelity").glob("*.safetensors"))) == 2
    assert not list((tmp_path / "cache" / "fidelity").glob("*.tmp"))  # atomic writes leave none


def test_cache_key_includes_weights_name_and_size(sets, clf_dir, tmp_path):
    run(sets["A2"], sets["A"], clf_dir)
    torch.manual_seed(1)
    other = FashionClassifier()
    assert not run(sets["A2"], sets["A"], other).reference_from_cache         # other weights
    assert not fidelity(sets["A2"], sets["A"], extractor_weights=clf_dir, bootstrap=0,
                        reference_name="other name").reference_from_cache
    sub = run(sets["A2"], sets["A"], clf_dir, reference_size=150)
    assert not sub.reference_from_cache and sub.n_reference == 150
    assert run(sets["A2"], sets["A"], clf_dir, reference_size=150).reference_from_cache
    assert run(sets["A2"], sets["A"], clf_dir).reference_from_cache           # still there


def test_corrupt_cache_is_recomputed(sets, clf_dir, tmp_path):
    first = run(sets["A2"], sets["A"], clf_dir)
    (path,) = (tmp_path / "cache" / "fidelity").glob("*.safetensors")
    path.write_bytes(b"garbage")
    again = run(sets["A2"], sets["A"], clf_dir)
    assert not again.reference_from_cache and again.fid == first.fid
    assert run(sets["A2"], sets["A"], clf_dir).reference_from_cache


def test_label_and_dict(sets, clf_dir):
    r = run(sets["A2"][:50], sets["A"], clf_dir, setup={"sampler": "DDIM", "steps": 50})
    assert r.kid_subset_size == 50  # clamped to the smaller set
    assert re.fullmatch(r"FID \S+ \[\S+, \S+\] \(50 samples, DDIM 50 steps, "
                        r"litediff-fmnist-cnn-v1 features\)", r.label()), r.label()
    d = r.to_dict()
    assert d["setup"] == {"sampler": "DDIM", "steps": 50} and len(d["fid_ci95"]) == 2
    assert all(math.isfinite(d[k]) for k in ("fid", "kid_mean", "kid_std", "precision", "recall"))


def test_progress_reports(sets, clf_dir):
    seen = []
    run(sets["A2"], sets["A"], clf_dir, batch_size=64, progress=lambda d, t, m: seen.append((d, t, m)))
    assert seen[-1][0] == seen[-1][1] == 200 + 200 + 50
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert {m for _, _, m in seen} == {"reference features", "generated features", "FID bootstrap"}


def test_input_errors(sets, clf_dir):
    with pytest.raises(MetricError, match="uint8"):
        run(sets["A"].float() / 127.5 - 1, sets["A"], clf_dir)
    with pytest.raises(MetricError, match="reference"):
        run(sets["A"], sets["A"][:, :, :16, :16], clf_dir)
    with pytest.raises(MetricError, match="at least"):
        run(sets["A"][:5], sets["A"], clf_dir)
    with pytest.raises(MetricError, match="unknown feature extractor"):
        run(sets["A"], sets["A"], clf_dir, extractor="vgg")
    with pytest.raises(MetricError, match="classifier"):
        fidelity(sets["A"], sets["A"], extractor_weights=clf_dir / "missing")


def test_rgb_and_other_sizes_through_classifier(clf_dir):
    """3-channel images become gray (luma), other sizes are resized to 28×28."""
    from litediff_core.metrics.extractor import uint8_to_classifier_input

    gray = blobs(20, 4)
    rgb = gray.expand(-1, 3, -1, -1)
    assert torch.allclose(uint8_to_classifier_input(rgb), uint8_to_classifier_input(gray), atol=1e-5)
    big = torch.nn.functional.interpolate(gray.float(), size=32).round().to(torch.uint8)
    assert uint8_to_classifier_input(big).shape == (20, 1, 28, 28)
    r = fidelity(rgb, stripes(20, 5).expand(-1, 3, -1, -1), extractor="fmnist",
                 extractor_weights=clf_dir, bootstrap=0)
    assert r.extractor == FMNIST_EXTRACTOR and r.fid > 0


def test_inception_without_weights_fails_fast(monkeypatch, tmp_path):
    import litediff_core.metrics.extractor as extractor_module

    monkeypatch.delenv("LITEDIFF_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))       # empty hub cache
    monkeypatch.setattr(extractor_module, "URL_INCEPTION_V3", "http://127.0.0.1:9/inception.pth")
    rgb = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    start = time.monotonic()
    with pytest.raises(MetricError, match="LITEDIFF_INCEPTION_WEIGHTS"):
        fidelity(rgb, rgb)                                            # auto → Inception for RGB
    assert time.monotonic() - start < 15
    with pytest.raises(MetricError, match="does not exist"):
        fidelity(rgb, rgb, extractor_weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"not": "inception"}, bad)
    with pytest.raises(MetricError, match="Inception-v3 weights"):
        fidelity(rgb, rgb, extractor_weights=str(bad))


def test_default_bootstrap_for_small_features(sets, clf_dir):
    r = fidelity(sets["A2"], sets["A"], extractor_weights=clf_dir)
    assert r.bootstrap == 200 and r.fid_ci95[0] < r.fid_ci95[1]


# ----------------------------------------------------------------------------- batched bootstrap

def _features(n, d, seed, shift=0.0):
    """ReLU features of a random linear map (a few dead units, as a CNN's penultimate layer)."""
    g = torch.Generator().manual_seed(seed)
    mixing = 0.3 * torch.randn(d, d, generator=torch.Generator().manual_seed(99))
    return torch.relu(torch.randn(n, d, generator=g) @ mixing + 0.5 + shift).float()


def _reference_fids(features, ref_stats, indices):
    """The former loop: torch-fidelity's statistics and FID of each resample, one at a time."""
    from torch_fidelity.metric_fid import (KEY_METRIC_FID, fid_features_to_statistics,
                                           fid_statistics_to_metric)

    return [fid_statistics_to_metric(fid_features_to_statistics(features[torch.from_numpy(i)]),
                                     ref_stats, False)[KEY_METRIC_FID] for i in indices]


def test_bootstrap_indices_are_the_former_loops_stream():
    import numpy as np

    rng = np.random.default_rng(7)
    loop = [rng.integers(0, 37, 37) for _ in range(5)]  # odd n: the stream must not be batched
    assert (fidelity_module.bootstrap_indices(37, 5, 7) == np.stack(loop)).all()
    assert fidelity_module.bootstrap_indices(37, 0, 7).shape == (0, 37)


@pytest.mark.parametrize("n, chunk_bytes", [(200, None), (60, None), (60, 1)])
def test_batched_bootstrap_matches_the_one_at_a_time_computation(n, chunk_bytes, monkeypatch):
    """Same resamples, same FIDs (1e-6 relative), with full rank (n > d), rank-deficient
    resample covariances (n < d) and one resample per chunk."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    if chunk_bytes:
        monkeypatch.setattr(fidelity_module, "BOOTSTRAP_CHUNK_BYTES", chunk_bytes)
    d = 128
    gen, ref = _features(n, d, 1, shift=0.05), _features(1000, d, 2)
    ref_stats = fid_features_to_statistics(ref)
    indices = fidelity_module.bootstrap_indices(n, 12, 0)
    seen = []
    fast = fidelity_module.bootstrap_fids(gen, ref_stats, indices, progress=seen.append)
    assert fast == pytest.approx(_reference_fids(gen, ref_stats, indices), rel=1e-6)
    assert seen[-1] == 12 and seen == sorted(seen)
    assert len(seen) == (12 if chunk_bytes else 1)


def test_batched_bootstrap_at_inception_dimension():
    """2048-d (Inception) features, n < d: checked against the n × n route
    tr √(Σ_b Σ_r) = Σ √eig(X_c Σ_r X_cᵀ / (n − 1)) (same non-zero eigenvalues, no square root of
    Σ_r, no SVD), with torch-fidelity's own statistics for the means and traces."""
    import numpy as np
    from torch_fidelity.metric_fid import fid_features_to_statistics

    n, d = 40, 2048
    gen, ref = _features(n, d, 3, shift=0.05), _features(300, d, 4)
    ref_stats = fid_features_to_statistics(ref)
    indices = fidelity_module.bootstrap_indices(n, 2, 0)
    fast = fidelity_module.bootstrap_fids(gen, ref_stats, indices)
    for got, idx in zip(fast, indices):
        sample = gen[torch.from_numpy(idx)].double().numpy()
        stats = fid_features_to_statistics(gen[torch.from_numpy(idx)])
        xc = sample - sample.mean(axis=0)
        small = np.linalg.eigvalsh(xc @ ref_stats["sigma"] @ xc.T / (n - 1))
        diff = stats["mu"].astype(np.float64) - ref_stats["mu"]
        want = (diff @ diff + np.trace(stats["sigma"]) + np.trace(ref_stats["sigma"])
                - 2 * np.sqrt(small.clip(min=0)).sum())
        assert got == pytest.approx(want, rel=1e-6)


def test_bootstrap_of_200_samples_takes_seconds_not_minutes():
    """200 resamples of 200 × 128-d features: the batched path took ~0.9 s on the project's
    2-core CPU while busy (the former loop ~37 s, minutes inside the dashboard). Generous."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    gen, ref = _features(200, 128, 5, shift=0.05), _features(1000, 128, 6)
    ref_stats = fid_features_to_statistics(ref)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    fids = fidelity_module.bootstrap_fids(gen, ref_stats,
                                          fidelity_module.bootstrap_indices(200, 200, 0))
    elapsed = time.perf_counter() - start
    assert len(fids) == 200 and all(math.isfinite(f) and f > 0 for f in fids)
    assert elapsed < 10, f"{elapsed:.1f} s"
    assert torch.get_num_threads() == threads  # the thread count is restored


def test_quality_metrics_load_on_first_use():
    """The compression stages measure size only: importing them leaves torch-fidelity (and the
    torchvision models it imports) unloaded; the first read of ``metrics.fidelity`` loads it,
    and it is the function, not its module."""
    import subprocess
    import sys

    code = ("import sys, litediff_core.compress, litediff_core.metrics as m; "
            "print('torch_fidelity' in sys.modules); f = m.fidelity; "
            "print('torch_fidelity' in sys.modules, callable(f), type(f).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["False", "True True function"]
    import litediff_core.metrics as m  # here the module was imported before: still the function

    assert m.fidelity is fidelity and m.FidelityResult is FidelityResult
