"""geops: the worker API of the geops parameter server for Python.

A program started as a worker of a geops cluster (DMLC_ROLE=worker and the
rest of the DMLC_* environment, as geops-launch or a GeoMX launch script
sets it) joins the cluster with::

    import geops
    w = geops.worker()               # joins on first use; geops.shutdown() leaves
    w.wait(w.init([0, 1], params))   # master worker: round 0 of keys 0 and 1
    w.wait(w.pull([0, 1], params))   # every worker: the initial values
    w.wait(w.push_pull([0, 1], grads, out))   # one synchronous round

Values are NumPy arrays or CPU torch tensors (float32, float64, int32,
int64, C-contiguous), never copied: a push sends a view of the caller's
array, which must stay unchanged until wait(); a pull's values land in the
caller's `out`. A request for several keys splits the array evenly over
them, or by `lens` (elements per key). Every push of a key opens its next
round; a pull returns the result of the latest round this worker pushed.

Errors raise ConfigError (a ValueError: a bad DMLC_*/GEOPS_* value, named
in the message) or GeopsError (a RuntimeError: a failed request or cluster).
"""

import atexit
import sys

from ._geops import ConfigError, GeopsError, config_check, spread_key
from ._geops import Worker as _Worker

__all__ = [
    "ConfigError", "GeopsError", "Worker", "config_check", "spread_key", "worker", "shutdown", "abort",
    "push", "pull", "push_pull", "init", "set_rule", "wait", "rank", "is_master", "trains",
    "num_workers", "shard",
]


def _array(x, what):
    """The buffer-protocol object for `x`: itself, or a CPU tensor's NumPy view."""
    if hasattr(x, "__array_interface__") or isinstance(x, memoryview):
        return x
    mod = type(x).__module__
    if mod.startswith("torch"):
        if x.device.type != "cpu":
            raise TypeError(f"{what}: geops takes CPU tensors, got one on {x.device}")
        if not x.is_contiguous():
            raise ValueError(f"{what}: the tensor is not contiguous; pass tensor.contiguous()")
        # Shares the tensor's storage: nothing is copied.
        return x.detach().numpy()
    return x


def _keys(keys):
    if isinstance(keys, int):
        return [keys]
    return [int(k) for k in keys]


class Worker:
    """This process as a worker of the cluster DMLC_* describes.

    Creating it joins the cluster (blocks until every node registered);
    shutdown() leaves it in order, abort(reason) stops the whole cluster.
    Every request returns a timestamp for wait(); the arrays given must
    stay alive and unchanged until then (geops holds references to them).
    """

    def __init__(self):
        self._w = _Worker()

    def push(self, keys, values, lens=None):
        """Pushes `values` (split over `keys`): opens each key's next round."""
        return self._w.push(_keys(keys), _array(values, "values"), lens)

    def pull(self, keys, out, lens=None):
        """Pulls the latest result of `keys` into `out`."""
        return self._w.pull(_keys(keys), _array(out, "out"), lens)

    def push_pull(self, keys, values, out, lens=None):
        """Pushes `values` and pulls that round's result into `out` (may be `values`)."""
        return self._w.push_pull(_keys(keys), _array(values, "values"), _array(out, "out"), lens)

    def init(self, keys, values, lens=None):
        """Master worker: the initial values (round 0) of `keys`."""
        return self._w.init(_keys(keys), _array(values, "values"), lens)

    def set_rule(self, rule="sum", lr=0.0, average_over=0, wan_dtype=None, wan_topk=None,
                 wan_topk_min=None, wan_sync=None, wan_staleness=None):
        """Master worker: the update rule every server applies, and the WAN policy.

        rule: "sum" (a pull returns the sum of every training worker's push),
        "sgd" (the servers hold the weights: w -= lr * sum), or "average".
        The policy starts from this process's GEOPS_WAN_* / MXNET_KVSTORE_*
        variables; the arguments override them: wan_dtype "fp16" | "bf16" |
        "fp32", wan_topk a fraction (0.01 for 1 %), wan_topk_min the smallest
        key compressed (elements), wan_sync "sync" | "mixed", wan_staleness.
        """
        return self._w.set_rule(rule, lr, average_over, wan_dtype, wan_topk, wan_topk_min,
                                wan_sync, wan_staleness)

    def register(self, array):
        """Registers `array` once for the transport (RDMA: pinned memory), so
        that requests on it, or on any part of it, do not register it again.
        Holds a reference until unregister() or shutdown. Over tcp it only
        remembers the array."""
        self._w.register(_array(array, "array"))

    def unregister(self, array):
        self._w.unregister(_array(array, "array"))

    def wait(self, ts):
        """Blocks until request `ts` completes; raises GeopsError if it failed."""
        self._w.wait(ts)

    def shutdown(self, print_stats=True):
        """Leaves the cluster in order (waits for the tier's other nodes)."""
        self._w.shutdown(print_stats)

    def abort(self, reason, print_stats=True):
        """Stops the whole cluster, naming `reason` in every process's log."""
        self._w.abort(str(reason), print_stats)

    rank = property(lambda self: self._w.rank, doc="rank among this party's workers")
    is_master = property(lambda self: self._w.is_master, doc="DMLC_ROLE_MASTER_WORKER=1")
    trains = property(lambda self: self._w.trains,
                      doc="whether this worker's pushes count (False for the master worker "
                          "unless DMLC_ENABLE_CENTRAL_WORKER=1)")
    num_workers = property(lambda self: self._w.num_workers,
                           doc="training workers in the whole cluster (DMLC_NUM_ALL_WORKER)")
    shard = property(lambda self: self._w.shard,
                     doc="(i, N) from GEOPS_SHARD: this worker's share of the data, or None")
    party = property(lambda self: self._w.party, doc="GEOPS_PARTY")
    lands_in_place = property(lambda self: self._w.lands_in_place,
                              doc="pulls are written into `out` by the transport (rdma)")
    bytes_copied = property(lambda self: self._w.bytes_copied,
                            doc="pulled bytes copied into `out` on arrival (tcp)")
    running = property(lambda self: self._w.running)


_default = None
_hooked = False


def _on_exit():
    if _default is not None and _default.running:
        _default.shutdown()


def _on_exception(kind, value, tb):
    # An uncaught exception stops the whole cluster at once, naming it,
    # instead of leaving the other workers waiting for this one's pushes.
    if _default is not None and _default.running:
        try:
            _default.abort(f"{kind.__name__}: {value}")
        except Exception:  # the cluster may already be gone
            pass
    _previous_hook(kind, value, tb)


_previous_hook = sys.excepthook


def worker():
    """This process's Worker, joining the cluster on the first call."""
    global _default, _hooked
    if _default is None or not _default.running:
        _default = Worker()
        if not _hooked:
            _hooked = True
            atexit.register(_on_exit)
            sys.excepthook = _on_exception
    return _default


def shutdown():
    """Leaves the cluster in order (also done at exit)."""
    if _default is not None and _default.running:
        _default.shutdown()


def abort(reason):
    if _default is not None and _default.running:
        _default.abort(reason)


def push(keys, values, lens=None):
    return worker().push(keys, values, lens)


def pull(keys, out, lens=None):
    return worker().pull(keys, out, lens)


def push_pull(keys, values, out, lens=None):
    return worker().push_pull(keys, values, out, lens)


def init(keys, values, lens=None):
    return worker().init(keys, values, lens)


def set_rule(rule="sum", **kwargs):
    return worker().set_rule(rule, **kwargs)


def wait(ts):
    worker().wait(ts)


def rank():
    return worker().rank


def is_master():
    return worker().is_master


def trains():
    return worker().trains


def num_workers():
    return worker().num_workers


def shard():
    return worker().shard
