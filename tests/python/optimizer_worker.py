"""A worker of the Python tests' cluster: DistributedOptimizer keeps every
replica identical while each worker trains on different data."""
import hashlib
import sys

import torch

import geops.torch as gt

torch.manual_seed(int(sys.argv[1]) if len(sys.argv) > 1 else 0)  # different on purpose
model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
gt.broadcast_parameters(model.named_parameters())
if not gt.trains():
    gt.shutdown()
    sys.exit(0)
me, n = gt.shard()
start = [p.detach().clone() for p in model.parameters()]
opt = gt.DistributedOptimizer(torch.optim.Adam(model.parameters(), lr=0.01), model.named_parameters())
g = torch.Generator().manual_seed(100 + me)
for step in range(20):
    x = torch.randn(8, 20, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
moved = sum((p.detach() - s).abs().sum().item() for p, s in zip(model.parameters(), start))
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
print(f"replica shard={me}/{n} moved={moved:.4f} sha256={h}", flush=True)
gt.shutdown()
