#!/usr/bin/env python3
"""A small CNN on Fashion-MNIST, data-parallel on geops (or in one process).

As the workers of a geops cluster (geops-launch sets DMLC_* and GEOPS_SHARD):

    build/geops-launch --worker-cmd '/usr/bin/python3 examples/fashion_mnist_cnn.py --epochs 8'

In one process, for comparison (no DMLC_ROLE in the environment, or --local):

    /usr/bin/python3 examples/fashion_mnist_cnn.py --local --epochs 8

Every epoch the training set is shuffled the same way everywhere and cut
into global batches of --batch images; worker i of N trains on the i-th
N-th of each global batch, so N workers take exactly the steps one process
takes with the same global batch (the servers average the gradients).
Worker 0 prints the test accuracy after every epoch. Data: the Debian
package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
"""

import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load(data_dir, train):
    prefix = "train" if train else "t10k"
    with gzip.open(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x = torch.from_numpy(x.astype(np.float32) / 255.0)
    x = (x - 0.2860) / 0.3530  # the training set's mean and deviation
    return x, torch.from_numpy(y.astype(np.int64))


class Net(nn.Module):
    """Two 3x3 convolutions (8 and 16 channels), 2x2 pooling, two dense layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def accuracy(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            correct += (model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
    model.train()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128, help="global batch (all workers)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--train-examples", type=int, default=60000)
    ap.add_argument("--test-examples", type=int, default=10000)
    ap.add_argument("--data-dir", default=os.environ.get("GEOPS_DATA_DIR",
                                                         "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--local", action="store_true", help="one process, no geops")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    distributed = not args.local and "DMLC_ROLE" in os.environ
    model = Net()
    if distributed:
        import geops.torch as gt
        gt.broadcast_parameters(model.named_parameters())
        if not gt.trains():
            # The master worker: it set the rule and the initial weights.
            print("geops-train master worker: initial parameters sent; not training "
                  "(DMLC_ENABLE_CENTRAL_WORKER=0)", flush=True)
            gt.shutdown()
            return 0
        shard, shards = gt.shard()
    else:
        shard, shards = 0, 1
    if args.batch % shards:
        sys.exit(f"--batch {args.batch} does not split over {shards} workers")
    per_worker = args.batch // shards

    x, y = load(args.data_dir, True)
    x, y = x[:args.train_examples], y[:args.train_examples]
    if shard == 0:
        tx, ty = load(args.data_dir, False)
        tx, ty = tx[:args.test_examples], ty[:args.test_examples]
    steps = len(x) // args.batch

    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    if distributed:
        opt = gt.DistributedOptimizer(opt, model.named_parameters())
    # The rate falls linearly to a tenth by the last epoch.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: 1.0 - 0.9 * e / max(1, args.epochs - 1))

    rounds, train_seconds, acc = 0, 0.0, -1.0
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        perm = torch.randperm(len(x), generator=g)
        t0 = time.time()
        loss_sum = 0.0
        for step in range(steps):
            idx = perm[step * args.batch + shard * per_worker:
                       step * args.batch + (shard + 1) * per_worker]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            rounds += 1
        sched.step()
        seconds = time.time() - t0
        train_seconds += seconds
        images_per_s = steps * args.batch / seconds
        if shard == 0:
            acc = accuracy(model, tx, ty)
            print(f"geops-train epoch={epoch}/{args.epochs} model=cnn workers={shards} "
                  f"test_accuracy={acc:.4f} train_loss={loss_sum / steps:.4f} "
                  f"images_per_s={images_per_s:.0f} seconds={time.time() - start:.1f}",
                  flush=True)
    # The launcher's summary reads this line (as the C++ trainer's).
    print(f"geops-train-worker shard={shard}/{shards} trained=1 epochs={args.epochs} "
          f"steps_per_epoch={steps} rounds={rounds} "
          f"test_accuracy={f'{acc:.4f}' if shard == 0 else '-'} "
          f"images_per_s={steps * args.batch * args.epochs / train_seconds:.0f} "
          f"seconds={time.time() - start:.1f}"
          + (f" pulls_in_place={int(gt.geops_worker().lands_in_place)}"
             f" bytes_copied={gt.geops_worker().bytes_copied}" if distributed else ""),
          flush=True)
    if distributed:
        gt.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
