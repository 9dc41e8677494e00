"""Training throughput (images/s) and peak memory of paper models.

    python benchmarks/train_speed.py [--device cuda] [--batch 64] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import resource
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
    mem = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"params": count_params(model), "images_per_s": round(batch * steps / dt, 1), "peak_mem_MiB": round(mem, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    for name in args.models.split(","):
        rows[name] = measure(MODELS[name], args.device, args.batch, args.steps, args.channels_last)
        print(json.dumps({"model": name, "device": args.device, "batch": args.batch, **rows[name]}), flush=True)


if __name__ == "__main__":
    main()
