"""The best trial of a study against a paper RKCNN trained with the same budget.

Both are trained from scratch on the study's training split with the best trial's training
settings and epochs, then evaluated on the validation split and on the test set (which the
search never saw). The paper model defaults to RKCNN-I-2 k=32 in the mnist framework.

    python benchmarks/search_vs_paper.py --study fashion_mnist_default --storage sqlite:///studies/rknas.db
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rknas.config import NetworkConfig, TrainConfig
from rknas.data.core import load_dataset
from rknas.models.counting import count_flops, count_params
from rknas.search.runner import load_data
from rknas.search.space import parse_space
from rknas.storage import choose, load_study, open_storage
from rknas.train import evaluate, fit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", required=True)
    ap.add_argument("--storage", default="sqlite:///studies/rknas.db")
    ap.add_argument("--paper", default='{"framework": "mnist", "strategy": "I", "stages": 2, "k": 32}')
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1, help="repeat each training with this many seeds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    study = load_study(open_storage(args.storage, create=False), args.study)
    best = choose(study)
    space = parse_space(study.user_attrs["space"], "study")
    train, val = load_data(space)
    _, test = load_dataset(space.data)
    found = NetworkConfig.model_validate(best.user_attrs["network"])
    paper = NetworkConfig.model_validate(
        {**json.loads(args.paper), "classes": found.classes, "in_channels": found.in_channels, "image_size": found.image_size}
    )
    settings = TrainConfig.model_validate(best.user_attrs["training"])
    report = {"study": args.study, "trial": best.number, "epochs": settings.epochs, "train_images": len(train)}
    for label, net in (("searched", found), ("paper", paper)):
        runs = []
        for seed in range(args.seeds):
            t0 = time.time()
            cfg = settings.model_copy(update={"seed": seed})
            model, hist, (mean, std) = fit(net, cfg, train, val)
            runs.append(
                {
                    "val": hist[-1]["val_accuracy"],
                    "test": evaluate(model, test, mean, std)["accuracy"],
                    "train_s": round(time.time() - t0, 1),
                }
            )
        model = model.cpu()
        report[label] = {
            "name": net.name,
            "k": net.k,
            "params": count_params(model),
            "flops": count_flops(model, net),
            "runs": runs,
        }
        print(json.dumps({label: report[label]}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
