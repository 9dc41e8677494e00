"""Images/s and peak memory on a GPU: fp32 vs bf16 + channels-last, plain vs memory-efficient units.

    python benchmarks/gpu_bench.py --device cuda [--out results.jsonl]
    python benchmarks/gpu_bench.py --device cpu --quick          # checks that it runs, nothing more

Also the helpers of benchmarks/gpu.sh's second section (trials per hour on a shared GPU):

    python benchmarks/gpu_bench.py --make-image-folder DIR [--images 5000]
    python benchmarks/gpu_bench.py --trials-per-hour STORAGE_URL STUDY

Training steps are the ones ``rknas.train.fit`` takes (autocast, the loss in fp32, SGD), on
synthetic CIFAR-shaped batches (3x32x32, 10 classes) that stay on the device, so the figures
are the model's, not the data pipeline's. Memory is the peak allocated by PyTorch during the
steps (CUDA), or the process's peak RSS (CPU, not comparable between rows).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F

from rknas import build_network
from rknas.train import autocast

MODELS = {
    "RKCNN-I-5_5_5 k80": {"strategy": "I", "stages": [5, 5, 5], "k": 80},
    "RKCNN-I-2_2_2 k32": {"strategy": "I", "stages": [2, 2, 2], "k": 32},
}
# (precision, channels_last)
VARIANTS = [("fp32", False), ("bf16", True)]


def measure(cfg: dict, device: str, batch: int, precision: str, channels_last: bool, memory_efficient: bool,
            warmup: int, steps: int) -> dict:
    """Training images/s and peak memory of one configuration.

    Args:
        cfg: network config (dict) without ``memory_efficient``.
        device: "cuda" or "cpu".
        batch: images per step.
        precision: "fp32" or "bf16" (autocast, as in ``fit``).
        channels_last: NHWC model and batches.
        memory_efficient: recompute the units' bottlenecks in backward.
        warmup: untimed steps first (cuDNN autotuning, allocations).
        steps: timed steps.

    Returns:
        One result row (a dict of plain values).
    """
    torch.manual_seed(0)
    model = build_network({**cfg, "memory_efficient": memory_efficient}).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    cuda = device.startswith("cuda")

    def step():
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    row = {"images_per_s": round(batch * steps / dt, 1), "step_ms": round(1000 * dt / steps, 2)}
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        row.update(peak_MiB=round(peak / 2**20, 1), step_mem_MiB=round((peak - base) / 2**20, 1))
    else:
        row.update(peak_rss_MiB=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    return row


def run_matrix(device: str, batch: int, warmup: int, steps: int, out: str | None) -> list[dict]:
    """Every model x precision variant x (plain, memory-efficient); prints JSON lines and a table."""
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        print(json.dumps({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                          "cudnn": torch.backends.cudnn.version(), "batch": batch, "steps": steps}), flush=True)
    rows = []
    for name, cfg in MODELS.items():
        for precision, cl in VARIANTS:
            for me in (False, True):
                row = {"model": name, "batch": batch, "precision": precision, "channels_last": cl, "memory_efficient": me}
                try:
                    row.update(measure(cfg, device, batch, precision, cl, me, warmup, steps))
                except torch.cuda.OutOfMemoryError as exc:  # report it and go on with the next row
                    row["error"] = f"out of memory: {str(exc).splitlines()[0]}"
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()  # the next row's peak starts from its own model
                print(json.dumps(row), flush=True)
                rows.append(row)
    mem_key = "step_mem_MiB" if device.startswith("cuda") else "peak_rss_MiB"
    print(f"\n| model | precision | channels_last | memory-efficient | images/s | {mem_key} |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['precision']} | {r['channels_last']} | {r['memory_efficient']} | "
              f"{r.get('images_per_s', '-')} | {r.get(mem_key, r.get('error', '-'))} |")
    if out:
        with open(out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def make_image_folder(root: str, images: int, classes: int = 10, seed: int = 0) -> None:
    """A CIFAR-shaped (32x32 RGB, 10 classes) ImageFolder data set that is quick to learn a little.

    Each class has its own mean colour and stripe orientation, plus noise, so that trials reach
    different accuracies and the search behaves as on real data, at the same cost per image.
    """
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 215, (classes, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    for split, n in (("train", images), ("test", max(classes, images // 5))):
        for i in range(n):
            c = i % classes
            angle = np.pi * c / classes
            stripes = 40 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 2.0)
            img = colours[c][None, None, :] + stripes[..., None] + rng.normal(0, 40, (32, 32, 3))
            d = Path(root) / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i}.png")


def trials_per_hour(storage: str, study: str) -> dict:
    """Completed trials per hour of a study, from its first trial's start to its last trial's end.

    Ray's start-up before the first trial is left out, so the figure is the steady rate.
    """
    import optuna

    trials = optuna.load_study(study_name=study, storage=storage).trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return {"study": study, "complete": 0, "trials_per_hour": 0.0}
    start = min(t.datetime_start for t in trials if t.datetime_start)
    end = max(t.datetime_complete for t in done)
    hours = (end - start).total_seconds() / 3600
    return {"study": study, "complete": len(done), "all": len(trials), "span_s": round(hours * 3600, 1),
            "trials_per_hour": round(len(done) / hours, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="batch 4, 1 warm-up and 2 timed steps: does it run?")
    ap.add_argument("--out", help="also write the rows as JSON lines here")
    ap.add_argument("--make-image-folder", metavar="DIR")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--trials-per-hour", nargs=2, metavar=("STORAGE", "STUDY"))
    args = ap.parse_args()
    if args.make_image_folder:
        make_image_folder(args.make_image_folder, args.images)
    elif args.trials_per_hour:
        print(json.dumps(trials_per_hour(*args.trials_per_hour)))
    elif args.quick:
        run_matrix(args.device, 4, 1, 2, args.out)
    else:
        run_matrix(args.device, args.batch, args.warmup, args.steps, args.out)


if __name__ == "__main__":
    main()
