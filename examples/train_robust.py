"""Train the zoo's CIFAR-10 SmallCNN: adversarially (FGSM-RS) with --robust, else normally.

    python examples/train_robust.py --robust -o smallcnn-robust.safetensors
"""

import argparse
import logging

import torch

from igdefense.train import TrainConfig, train

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--robust", action="store_true")
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    train(TrainConfig(robust=args.robust, epochs=args.epochs, seed=args.seed), args.out)
