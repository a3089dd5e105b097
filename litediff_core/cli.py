"""The ``litediff`` command line: info, sample, eval, train-base, train-classifier, compress,
runs, sweep.

Errors meant for the user (bad model source, missing data, impossible options, an output path
that cannot be written) print one line ``litediff: error: ...`` and exit with status 2, before
any work is done; never a traceback. Heavy libraries (torch, diffusers, pandas) are imported
inside the commands, so ``litediff --help`` answers at once (benchmarks/cli_startup.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from .errors import LiteDiffError
from .progress import TqdmProgress

MODEL_HELP = "embedded[:name], a local diffusers folder, or a hub id such as google/ddpm-cifar10-32"


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line ``litediff: error: ...`` (exit status 2)."""

    def error(self, message):
        self.exit(2, f"litediff: error: {message} (see {self.prog} --help)\n")


def _writable(path, folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written: a file (or, with ``folder``, a
    folder) whose nearest existing parent is a writable folder."""
    path = Path(path).expanduser()
    if path.is_dir() and not folder:
        raise LiteDiffError(f"{path} is a folder; give a file name inside it")
    if path.exists() and folder and not path.is_dir():
        raise LiteDiffError(f"{path} is a file, not a folder")
    start = path if folder else path.parent
    parent = next(p for p in (start, *start.parents) if p.exists())
    if not parent.is_dir():
        raise LiteDiffError(f"cannot write {path}: {parent} is not a folder")
    try:  # the one sure test (root passes os.access everywhere; /proc, read-only mounts)
        tempfile.NamedTemporaryFile(dir=parent, prefix=".litediff-check-").close()
    except OSError as e:
        raise LiteDiffError(f"cannot write {path}: {parent} is not writable "
                            f"({e.strerror or e})") from None
    return path


def _image_format(path: Path) -> str:
    """The Pillow format that saves ``path``, from its suffix."""
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt not in Image.SAVE:
        raise LiteDiffError(f"cannot save an image as {path.name!r}: give a .png, .jpg or .webp "
                            f"file name")
    return fmt


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _load(args):
    from .models import load_base

    base = load_base(args.model)
    if getattr(args, "dataset", None):
        base.meta.dataset = args.dataset
    return base


def cmd_info(args) -> dict:
    from .metrics import size_report

    base = _load(args)
    return {"model": base.meta.to_dict() | {"card": None},
            "size": size_report(base.unet),
            "scheduler": {k: v for k, v in dict(base.scheduler.config).items()
                          if not k.startswith("_")},
            "training": base.meta.card.get("training", {}).get("command")}


def _sampling(args) -> dict:
    """The sampler options beyond sampler and steps, checked before any work."""
    if not 0.0 <= args.eta <= 1.0:
        raise LiteDiffError(f"--eta must be between 0 and 1, not {args.eta:g}")
    if args.eta and args.sampler not in ("ddim", "ams"):
        raise LiteDiffError(f"--eta applies to ddim and ams only, not {args.sampler}")
    if args.cache is not None and not 2 <= args.cache < args.steps:
        raise LiteDiffError(f"--cache must be at least 2 and below --steps ({args.steps}), "
                            f"not {args.cache}")
    return {"eta": args.eta} if args.eta else {}


def _cached(unet, args):
    """``unet`` wrapped in DeepCache when ``--cache`` is given (refused where the architecture
    cannot honour it)."""
    if args.cache is None:
        return unet
    from .compress import DeepCacheUNet

    return DeepCacheUNet(unet, args.cache, args.cache_branch).eval()


def cmd_sample(args) -> dict:
    import time

    from .device import resolve_device
    from .fileio import atomic_file

    out = _writable(args.out)
    fmt = _image_format(out)
    kwargs = _sampling(args)
    from .samplers import generate, grid

    base = _load(args)
    device = resolve_device(args.device)
    unet = _cached(base.unet.to(device), args)
    t0 = time.perf_counter()
    images = generate(unet, dict(base.scheduler.config), sampler=args.sampler,
                      steps=args.steps, n=args.n, seed=args.seed, batch_size=args.batch_size,
                      device=device, progress=TqdmProgress("sampling"), **kwargs)
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        grid(images, nrow=args.nrow).save(tmp, format=fmt)
    return {"out": str(out), "n": args.n, "sampler": args.sampler, "steps": args.steps,
            **kwargs, **({"cache": args.cache, "cache_branch": args.cache_branch}
                         if args.cache else {}),
            "seed": args.seed, "device": device, "seconds": round(seconds, 3)}


def cmd_eval(args) -> dict:
    from .evaluate import EvalConfig, evaluate
    from .fileio import write_json_atomic

    out = _writable(args.json_out)
    _sampling(args)
    base = _load(args)
    if args.card and base.meta.kind == "hub":
        raise LiteDiffError("--card writes into a local model folder; a hub id has none")
    if args.card and args.cache:
        raise LiteDiffError("--card records the model's own figures: drop --cache")
    base.unet = _cached(base.unet, args)
    cfg = EvalConfig(n=args.n, sampler=args.sampler, steps=args.steps, eta=args.eta,
                     seed=args.seed, batch_size=args.batch_size, device=args.device)
    result = evaluate(base, cfg, progress=TqdmProgress("eval"))
    if args.card:
        from .model_card import write_card

        result["card"] = str(write_card(Path(base.meta.path).parent
                                        if Path(base.meta.path).name == "unet"
                                        else Path(base.meta.path), result, base))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    return result


def cmd_train_base(args) -> dict:
    _writable(args.out, folder=True)
    from .train.base import TrainBaseConfig, train_base

    cfg = TrainBaseConfig(out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, checkpoint_every=args.checkpoint_every,
                          threads=args.threads)
    folder = train_base(cfg, progress=TqdmProgress("train-base"))
    return {"model": str(folder)}


def cmd_train_classifier(args) -> dict:
    _writable(args.out, folder=True)
    from .train.classifier import TrainClassifierConfig, train_classifier

    cfg = TrainClassifierConfig(out=args.out, epochs=args.epochs, seed=args.seed,
                                threads=args.threads)
    return train_classifier(cfg, progress=TqdmProgress("train-classifier"))


def _store(args, writing: bool = False):
    from .runs import RunStore

    store = RunStore(args.store)
    if writing:
        _writable(store.root, folder=True)
    return store


def cmd_compress(args) -> dict:
    from .recipes import Recipe
    from .runs import run_recipe

    if bool(args.recipe) == bool(args.preset):
        raise LiteDiffError("give a recipe file or --preset NAME (one of the two)")
    if args.preset:
        from .presets import preset_recipe

        ev = {k: v for k, v in (("n", args.n), ("steps", args.eval_steps)) if v}
        recipe = preset_recipe(args.preset, base=args.base, p=args.p, steps=args.steps, eval=ev)
    else:
        recipe = Recipe.load(args.recipe)
    store = _store(args, writing=True)
    unfinished = store.checkpoints().get(store.run_dir(recipe).name)
    if unfinished and not (args.restart or args.force):
        print(f"resuming an unfinished run: {', '.join(f'{k} at step {v}' for k, v in unfinished.items())}"
              " (--restart starts afresh)", file=sys.stderr)
    run = run_recipe(recipe, store, progress=TqdmProgress("compress"), device=args.device,
                     force=args.force, restart=args.restart,
                     checkpoint_every_steps=args.checkpoint_every)
    result = store.load(run.name)["result"]
    fidelity = result.fidelity.to_dict() if result.fidelity else {}
    return {"run": str(run), **fidelity, "speedup": result.speedup}


def cmd_runs(args) -> dict:
    if args.delete:
        _store(args).delete(args.delete)
        return {"deleted": args.delete}
    if args.clean:
        return {"removed": _store(args).clean()}
    table = _store(args).table()
    if args.remeasure:
        from .runs import remeasure_latency

        ids = list(table.loc[table["status"] == "done", "id"]) if args.remeasure == "all" \
            else [args.remeasure]
        timed, bases = {}, {}
        for run_id in ids:
            try:
                timed[run_id] = round(remeasure_latency(_store(args), run_id, args.device,
                                                        bases=bases).speedup, 3)
            except LiteDiffError as e:
                if args.remeasure != "all":
                    raise
                print(f"{run_id}: skipped: {e}", file=sys.stderr)
        return {"remeasured": timed}
    cols = ["id", "name", "status", "params", "macs", "latency_ms", "speedup", "fid", "ssim_to_base"]
    print(table[cols].to_string(index=False) if len(table) else "no runs in " + str(_store(args).root),
          file=sys.stderr)
    return {"runs": len(table), "store": str(_store(args).root)}


def cmd_sweep(args) -> dict:
    from .recipes import sweep_recipes
    from .runs import run_recipe

    recipes = sweep_recipes(args.sweep)  # every recipe checked before the first one runs
    store = _store(args, writing=True)
    if args.ray:
        from .distributed import run_on_ray

        out = run_on_ray(recipes, str(store.root), address=args.ray,
                         cpus_per_task=args.ray_cpus_per_task,
                         gpus_per_task=args.ray_gpus_per_task, device=args.device,
                         local_cpus=args.ray_cpus, progress=TqdmProgress("sweep"))
        return {"store": str(store.root), **out}
    done, failed = [], []
    for i, recipe in enumerate(recipes):
        print(f"[{i + 1}/{len(recipes)}] {recipe.name}", file=sys.stderr)
        try:
            done.append(run_recipe(recipe, store, progress=TqdmProgress(recipe.name[:30]),
                                   device=args.device).name)
        except LiteDiffError as e:
            failed.append({"recipe": recipe.name, "error": str(e)})
    return {"store": str(store.root), "runs": done, "failed": failed}


def build_parser() -> argparse.ArgumentParser:
    from .presets import PRESETS  # plain data: no torch
    from .recipes import SAMPLER_NAMES

    p = Parser(prog="litediff", description="LiteDiff Lab: explore the "
               "compression of small diffusion models.")
    sub = p.add_subparsers(dest="command", required=True)

    def model_cmd(name, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("model", nargs="?", default="embedded", help=MODEL_HELP)
        sp.add_argument("--dataset", help="dataset the model belongs to, when the model "
                        "does not say (fashion-mnist, mnist, cifar10, folder:<path>)")
        return sp

    def sampling(sp, n_default):
        sp.add_argument("--sampler", default="ddim", choices=sorted(SAMPLER_NAMES))
        sp.add_argument("--steps", type=_positive(int), default=50)
        sp.add_argument("--n", type=_positive(int), default=n_default)
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--batch-size", type=_positive(int), default=100)
        sp.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
        sp.add_argument("--eta", type=float, default=0.0,
                        help="DDIM's η for ddim and ams (0 deterministic … 1 DDPM-like)")
        sp.add_argument("--cache", type=int, metavar="N",
                        help="DeepCache: run the whole UNet every N steps, reuse its deep "
                             "features in between (N ≥ 2, below --steps)")
        sp.add_argument("--cache-branch", type=int, default=0, metavar="B",
                        help="DeepCache skip branch recomputed on cached steps (0 = top level)")

    model_cmd("info", "show a model's source, config, size and MACs").set_defaults(fn=cmd_info)

    sp = model_cmd("sample", "draw a sample grid PNG")
    sampling(sp, 16)
    sp.add_argument("--out", default="grid.png")
    sp.add_argument("--nrow", type=_positive(int), default=8)
    sp.set_defaults(fn=cmd_sample)

    sp = model_cmd("eval", "FID/KID/precision-recall with intervals, size, MACs, latency")
    sampling(sp, 1000)
    sp.add_argument("--json-out", default="eval.json", help="also write the JSON here")
    sp.add_argument("--card", action="store_true",
                    help="write the metrics into the model folder's card (README.md)")
    sp.set_defaults(fn=cmd_eval)

    sp = sub.add_parser("train-base", help="train (or resume) the embedded Fashion-MNIST DDPM")
    sp.add_argument("--out", default="runs/train-base")
    sp.add_argument("--steps", type=_positive(int), default=4000)
    sp.add_argument("--batch-size", type=_positive(int), default=128)
    sp.add_argument("--lr", type=_positive(float), default=1e-3)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--checkpoint-every", type=_positive(int), default=250)
    sp.add_argument("--threads", type=_positive(int))
    sp.set_defaults(fn=cmd_train_base)

    sp = sub.add_parser("train-classifier", help="train the Fashion-MNIST feature classifier")
    sp.add_argument("--out", default="runs/classifier")
    sp.add_argument("--epochs", type=_positive(int), default=6)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--threads", type=_positive(int))
    sp.set_defaults(fn=cmd_train_classifier)
    def store_opt(sp):
        sp.add_argument("--store", help="run store folder (default: $LITEDIFF_RUNS or "
                        "~/.local/share/litediff/runs)")

    sp = sub.add_parser("compress", help="run a compression recipe (YAML/JSON) into the run store")
    sp.add_argument("recipe", nargs="?", help="recipe file, e.g. recipe.yaml")
    sp.add_argument("--preset", choices=sorted(PRESETS), help="a seed paper's configuration")
    sp.add_argument("--base", default="embedded", help="base model of the preset; " + MODEL_HELP)
    sp.add_argument("--p", type=float, help="preset prune ratio")
    sp.add_argument("--steps", type=_positive(int), help="preset fine-tune / KD steps")
    sp.add_argument("--n", type=_positive(int), help="preset evaluation samples (default 1000)")
    sp.add_argument("--eval-steps", type=_positive(int), help="preset evaluation sampler steps")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--force", action="store_true", help="recompute even if already run")
    sp.add_argument("--restart", action="store_true", help="discard the checkpoints of an "
                    "unfinished run of this recipe instead of resuming from them")
    sp.add_argument("--checkpoint-every", type=_positive(int), metavar="STEPS",
                    help="training checkpoint every STEPS steps (default: every 60 s)")
    store_opt(sp)
    sp.set_defaults(fn=cmd_compress)

    sp = sub.add_parser("runs", help="list the runs of the store")
    sp.add_argument("--delete", metavar="ID", help="delete one run")
    sp.add_argument("--clean", action="store_true", help="remove the temporary folders of "
                    "interrupted runs (whose process is gone)")
    sp.add_argument("--remeasure", metavar="ID|all", help="time a run (or every finished run) "
                    "against its base again, e.g. once the machine is quiet; updates its metrics")
    sp.add_argument("--device", default="cpu", help="device of --remeasure (default cpu)")
    store_opt(sp)
    sp.set_defaults(fn=cmd_runs)

    sp = sub.add_parser("sweep", help="run a grid of recipes (a sweep YAML) into the store")
    sp.add_argument("sweep", help="sweep file: a recipe plus a grid of stage options")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--ray", metavar="ADDRESS", help="run one Ray task per recipe: local (a "
                    "Ray on this machine), auto, or host:port of a cluster (needs "
                    "pip install 'litediff-lab[ray]'; the store must be on a shared disk)")
    sp.add_argument("--ray-cpus", type=_positive(int), help="--ray local: CPUs Ray may use "
                    "(default: all)")
    sp.add_argument("--ray-cpus-per-task", type=_positive(int), default=1,
                    help="CPUs (PyTorch threads) of each recipe's task (default 1)")
    sp.add_argument("--ray-gpus-per-task", type=float, default=0.0,
                    help="GPUs of each recipe's task (default 0)")
    store_opt(sp)
    sp.set_defaults(fn=cmd_sweep)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.fn(args)
    except LiteDiffError as e:
        print(f"litediff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("litediff: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("litediff: error: out of memory; lower --n or --batch-size", file=sys.stderr)
        return 2
    except Exception as e:  # last resort: one line, the traceback only on request
        if os.environ.get("LITEDIFF_DEBUG"):
            raise
        if "out of memory" in str(e).lower():
            print("litediff: error: out of memory; lower --batch-size or --n", file=sys.stderr)
        else:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            print(f"litediff: error: unexpected {type(e).__name__}: {first} "
                  f"(set LITEDIFF_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
