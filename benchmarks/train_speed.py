"""Training throughput (images/s) and peak memory of paper models.

    python benchmarks/train_speed.py [--device cuda] [--batch 64] [--steps 20]

Plain against memory-efficient units (``NetworkConfig.memory_efficient``), each measurement
in a fresh process so that one's peak memory cannot hide another's:

    python benchmarks/train_speed.py --compare-memory-efficient --threads 2 [--repeats 2]

It reports the median step time (wall clock and process CPU time) and the training-step
memory: on CPU the peak RSS during the steps minus the RSS before the first step (glibc may
keep freed blocks, so run it also with ``MALLOC_MMAP_THRESHOLD_=65536`` to make RSS follow the
live tensors; step times under that setting are dominated by page faults, do not use them); on
CUDA the peak allocated memory above what was allocated before the first step. On a machine
shared with other jobs, compare CPU times with ``--threads 1``: one thread's CPU time counts
neither waiting for a core nor OpenMP threads spinning for each other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from rknas import build_network, count_params

MODELS = {
    "RKCNN-I-2 k32 (mnist)": {"framework": "mnist", "strategy": "I", "stages": 2, "k": 32},
    "RKCNN-E-2_2_2 k120": {"strategy": "E", "stages": [2, 2, 2], "k": 120},
    "RKCNN-I-2_2_2 k78,78,80": {"strategy": "I", "stages": [2, 2, 2], "k": [78, 78, 80]},
    "RKCNN-I-5_5_5 k80": {"strategy": "I", "stages": [5, 5, 5], "k": 80},
}

# Plain vs memory-efficient: (label, network, batch size).
MEMORY_CASES = [
    ("RKCNN-I-5_5_5 k80", {"strategy": "I", "stages": [5, 5, 5], "k": 80}, 32),
    ("RKCNN-I-2_2_2 k32", {"strategy": "I", "stages": [2, 2, 2], "k": 32}, 64),
]


def measure(cfg: dict, device: str, batch: int, steps: int, channels_last: bool) -> dict:
    model = build_network(cfg).to(device)
    c = model.config
    x = torch.randn(batch, c.in_channels, c.image_size, c.image_size, device=device)
    y = torch.randint(0, c.classes, (batch,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 3):
        if i == 3:  # warm-up excluded
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if device == "cuda":
        mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"params": count_params(model), "images_per_s": round(batch * steps / dt, 1), "peak_mem_MiB": round(mem, 1),
            "memory_efficient": [c.memory_efficient_in(p) for p in range(c.periods)]}


def measure_step(cfg: dict, device: str, batch: int, steps: int, memory_efficient: bool, warmup: int = 2) -> dict:
    """Median step time and the memory the training steps add, measured in this process.

    Meant for a fresh process (see ``compare_memory_efficient``): the CPU figure is a
    process-wide high-water mark.
    """
    model = build_network({**cfg, "memory_efficient": memory_efficient}).to(device)
    c = model.config
    x = torch.randn(batch, c.in_channels, c.image_size, c.image_size, device=device)
    y = torch.randint(0, c.classes, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wall, cpu = [], []
    for _ in range(warmup + steps):  # the first steps allocate gradients and momentum: counted in memory, not time
        t0, c0 = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "step_s": round(statistics.median(wall[warmup:]), 3),
        "cpu_s": round(statistics.median(cpu[warmup:]), 3),
        "step_mem_MiB": round((peak - base) / 2**20, 1),
        "peak_MiB": round(peak / 2**20, 1),
    }


def _child(job: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(job)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def compare_memory_efficient(device: str, steps: int, threads: int, repeats: int, cases: list | None = None,
                             selective: bool = True) -> list[dict]:
    """Plain vs memory-efficient for MEMORY_CASES: ``repeats`` alternating pairs of runs, each
    in a fresh process; prints JSON lines, then a table of the medians. ``selective=False``
    measures the fallback of torch < 2.4 (the bottleneck recomputed, conv1x1 included)."""
    rows = []
    cases = cases or MEMORY_CASES
    for label, cfg, batch in cases:
        job = {"cfg": cfg, "device": device, "batch": batch, "steps": steps, "threads": threads, "selective": selective}
        for rep in range(repeats):
            for me in (False, True):
                row = {"model": label, "batch": batch, "memory_efficient": me, "repeat": rep,
                       **_child({**job, "memory_efficient": me})}
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"\nmedians over {repeats} fresh-process run(s) per path, {steps} timed steps each; device {device}; "
          f"threads {threads or 'default'}; selective checkpointing {selective}; torch {torch.__version__}; "
          f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}")
    print("| model | batch | path | step s (wall) | step s (CPU) | training-step memory MiB "
          "| time ratio (wall / CPU) | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for label, _, batch in cases:
        med = {}
        for me in (False, True):
            sel = [r for r in rows if r["model"] == label and r["memory_efficient"] == me]
            med[me] = {k: statistics.median(r[k] for r in sel) for k in ("step_s", "cpu_s", "step_mem_MiB")}
        for me in (False, True):
            m, p = med[me], med[False]
            ratios = (f"{m['step_s'] / p['step_s']:.2f} / {m['cpu_s'] / p['cpu_s']:.2f}",
                      f"{m['step_mem_MiB'] / p['step_mem_MiB']:.2f}") if me else ("1", "1")
            print(f"| {label} | {batch} | {'memory-efficient' if me else 'plain'} | {m['step_s']:.3f} | {m['cpu_s']:.3f} "
                  f"| {m['step_mem_MiB']:.0f} | {ratios[0]} | {ratios[1]} |")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--compare-memory-efficient", action="store_true",
                    help="plain vs memory-efficient units on MEMORY_CASES, a fresh process per measurement")
    ap.add_argument("--repeats", type=int, default=2, help="runs per case and path with --compare-memory-efficient")
    ap.add_argument("--case", action="append",
                    help='instead of MEMORY_CASES: {"label": .., "cfg": {..}, "batch": ..} (repeatable)')
    ap.add_argument("--no-selective", action="store_true",
                    help="ablation: memory-efficient units without selective checkpointing (as on torch < 2.4)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        job = json.loads(args.child)
        if job["threads"]:
            torch.set_num_threads(job["threads"])
        if not job.get("selective", True):
            from rknas.models import blocks

            blocks.SELECTIVE_CHECKPOINTING = False
        print(json.dumps(measure_step(job["cfg"], job["device"], job["batch"], job["steps"], job["memory_efficient"])))
        return
    if args.compare_memory_efficient:
        cases = [(c["label"], c["cfg"], c["batch"]) for c in map(json.loads, args.case)] if args.case else None
        compare_memory_efficient(args.device, args.steps, args.threads, args.repeats, cases, not args.no_selective)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    for name in args.models.split(","):
        rows[name] = measure(MODELS[name], args.device, args.batch, args.steps, args.channels_last)
        print(json.dumps({"model": name, "device": args.device, "batch": args.batch, **rows[name]}), flush=True)


if __name__ == "__main__":
    main()
