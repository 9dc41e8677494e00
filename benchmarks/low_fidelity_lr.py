"""The low-fidelity trap: how far the paper's model gets in a short trial at a given learning rate.

RKCNN-I-2 k=32 (mnist framework) on 6,000 Fashion-MNIST images for 3 epochs, warm-up 0.5 epoch
then cosine, batch 128, crop padding 2, BN statistics recomputed before evaluation.

    python benchmarks/low_fidelity_lr.py --lr 0.1 0.3
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rknas.config import NetworkConfig, TrainConfig
from rknas.data import split
from rknas.data.loaders import fashion_mnist
from rknas.train import fit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, _ = fashion_mnist()
    tr, val = split(train, 0.05, 0, 6000)
    for lr in args.lr:
        t0 = time.time()
        _, hist, _ = fit(NetworkConfig(framework="mnist", strategy="I", stages=2, k=32),
                         TrainConfig(epochs=args.epochs, batch_size=128, lr=lr, warmup_epochs=0.5, crop_pad=2), tr, val)
        print(json.dumps({"lr": lr, "train_loss": [round(h["train_loss"], 3) for h in hist],
                          "val_accuracy": [round(h["val_accuracy"], 3) for h in hist], "wall_s": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
