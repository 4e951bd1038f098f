"""A worker of the Python tests' cluster: exact push/pull/push_pull results
with NumPy arrays and torch tensors, checked in place (zero-copy)."""
import sys

import numpy as np

import geops

w = geops.worker()
n = w.num_workers
K = [geops.spread_key(i, 3) for i in range(3)]
lens = [5, 1000, 70000]  # the last one above the 64 KiB of a small message
total = sum(lens)


def fail(msg):
    print(f"CHECK FAILED: {msg}", flush=True)
    w.abort(msg)
    sys.exit(1)


if w.is_master:
    w.wait(w.set_rule("sum"))
    w.wait(w.init(K, np.arange(total, dtype=np.float32), lens=lens))
    w.wait(w.init([1 << 40], np.arange(8, dtype=np.int64)))

if not w.trains:
    # The master worker (no central training) is done: its pushes would be
    # ignored, and its pull of round 0 may already be answered with a later
    # round's sum of the trainers (a pull returns the latest result).
    geops.shutdown()
    sys.exit(0)

# Round 0: the master's values, landing in the caller's own array.
out = np.full(total, -1, np.float32)
before = out.__array_interface__["data"][0]
w.wait(w.pull(K, out, lens=lens))
if out.__array_interface__["data"][0] != before or not np.array_equal(out, np.arange(total)):
    fail(f"round 0 did not land in the caller's array: {out[:6]} {out[-3:]} moved={out.__array_interface__['data'][0] != before}")
i64 = np.zeros(8, np.int64)
w.wait(w.pull([1 << 40], i64))
if not np.array_equal(i64, np.arange(8)):
    fail(f"int64 init {i64}")

if True:
    me, shards = w.shard
    # A registered destination (RDMA: pinned once) is reused by every round.
    w.register(out)
    for r in range(1, 4):
        vals = np.arange(total, dtype=np.float32) * r + me
        w.wait(w.push_pull(K, vals, out, lens=lens))
        expect = np.arange(total, dtype=np.float32) * r * n + sum(range(n))
        if not np.array_equal(out, expect):
            fail(f"numpy round {r}: {out[:4]} != {expect[:4]}")
    w.unregister(out)
    # A push and a later pull of the same round (separate calls).
    vals = np.full(total, float(me + 1), np.float32)
    w.wait(w.push(K, vals, lens=lens))
    w.wait(w.pull(K, out, lens=lens))
    if not np.array_equal(out, np.full(total, float(n * (n + 1) // 2))):
        fail(f"push then pull: {out[:4]}")
    # int64 values.
    w.wait(w.push_pull([1 << 40], np.full(8, 1 << 33, np.int64), i64))
    if not np.array_equal(i64, np.full(8, n << 33)):
        fail(f"int64 sum {i64}")
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        t = torch.arange(total, dtype=torch.float32)
        res = torch.zeros(total)
        ptr = res.data_ptr()
        w.wait(w.push_pull(K, t, res, lens=lens))
        if res.data_ptr() != ptr or not torch.equal(res, torch.arange(total, dtype=torch.float32) * n):
            fail(f"torch push_pull: {res[:4]}")
        # In place: the result replaces the pushed values in the same tensor.
        t2 = torch.ones(total)
        w.wait(w.push_pull(K, t2, t2, lens=lens))
        if not torch.equal(t2, torch.full((total,), float(n))):
            fail(f"torch in place: {t2[:4]}")
    # Misuse is refused with a Python exception, before anything is sent.
    for bad, kind in [(np.zeros((total, 2), np.float32)[:, 0], ValueError),
                      (np.zeros(total, np.uint8), TypeError),
                      ([1.0] * total, TypeError)]:
        try:
            w.push(K, bad, lens=lens)
            fail(f"{type(bad)} accepted")
        except kind:
            pass
    try:
        w.push([K[1], K[0]], np.zeros(2, np.float32))
        fail("decreasing keys accepted")
    except ValueError as e:
        if "increasing" not in str(e):
            fail(str(e))
    print(f"exact-worker shard={me}/{shards} ok copied={w.bytes_copied}", flush=True)
geops.shutdown()
