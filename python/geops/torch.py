"""geops.torch: data-parallel PyTorch training on a geops cluster.

    import geops.torch as gt
    model = Net()
    gt.broadcast_parameters(model.named_parameters())   # everyone starts from
    if not gt.trains():                                  # the master's weights
        return                                           # (master worker, see below)
    opt = gt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                  model.named_parameters())
    for x, y in shard_of_the_data:
        opt.zero_grad()
        loss_fn(model(x), y).backward()   # gradients leave as backward produces them
        opt.step()                        # waits for the averaged gradients, steps

The mapping onto geops (as BytePS and Horovod do it): every tensor is one
key; the master worker sets the `sum` rule and pushes the initial values
(round 0 of every key); every worker pulls round 0 into its parameters.
During backward a hook pushes each gradient, divided by the number of
training workers, as soon as autograd has accumulated it, and asks for that
round's result into the same tensor, so communication overlaps the rest of
backward; step() waits for every key and runs the wrapped optimizer on the
averaged gradients. All replicas apply the same averaged gradient to the
same weights, so they stay identical. Keys are numbered in the order of
`named_parameters` (forward order): with ENABLE_P3=1 the party servers send
the first layers first, which the next forward needs first.

The master worker (DMLC_ROLE_MASTER_WORKER=1) pushes the initial values and
the rule; it trains only when DMLC_ENABLE_CENTRAL_WORKER=1 (as in GeoMX).
`trains()` is False for it otherwise: a program returns after
broadcast_parameters there.
"""

import torch

import geops as _geops

__all__ = ["DistributedOptimizer", "broadcast_parameters", "trains", "is_master", "num_workers",
           "shard", "shutdown"]


def geops_worker():
    """This process's geops.Worker (joining the cluster on first use)."""
    return _geops.worker()


def trains():
    return _geops.worker().trains


def is_master():
    return _geops.worker().is_master


def num_workers():
    return _geops.worker().num_workers


def shard():
    """(i, N): this worker's share of the data (GEOPS_SHARD), (0, 1) when unset."""
    return _geops.worker().shard or (0, 1)


def shutdown():
    _geops.shutdown()


class _Keys:
    """Tensor name -> key, the same in every worker of the cluster.

    The first list of names seen fixes the numbering: key i of n is
    spread_key(i, n), so that the tensors spread over every server in
    order. Names seen later get keys of their own past the last one.
    """

    def __init__(self):
        self._by_name = {}
        self._next = None

    def __call__(self, names):
        names = list(names)
        if not self._by_name:
            for i, n in enumerate(names):
                if n in self._by_name:
                    raise ValueError(f"tensor name {n!r} appears twice")
                self._by_name[n] = _geops.spread_key(i, len(names))
            self._next = max(self._by_name.values()) + 1
        for n in names:
            if n not in self._by_name:
                self._by_name[n] = self._next
                self._next += 1
        return [self._by_name[n] for n in names]


_keys = _Keys()


def _named(params):
    if isinstance(params, dict):
        params = params.items()
    out = []
    for i, p in enumerate(params):
        if isinstance(p, tuple):
            out.append((p[0], p[1]))
        else:
            out.append((f"param.{i}", p))
    return out


def broadcast_parameters(params, rule="sum", **policy):
    """Every worker's `params` become the master worker's.

    `params`: model.named_parameters(), model.state_dict() or (name, tensor)
    pairs, in the same order on every worker. The master worker sets the
    rule (and any WAN policy arguments of geops.Worker.set_rule; without
    them the GEOPS_WAN_* variables of its environment) and pushes its
    values as round 0 of each tensor's key; every worker then pulls them
    in place.
    """
    w = _geops.worker()
    named = _named(params)
    keys = _keys([n for n, _ in named])
    tensors = []
    for (name, t) in named:
        t = t.data if isinstance(t, torch.nn.Parameter) else t
        if not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError(f"{name}: geops broadcasts contiguous CPU tensors")
        tensors.append(t)
    if w.is_master:
        w.wait(w.set_rule(rule, **policy))
        for k, t in zip(keys, tensors):
            w.wait(w.init([k], t.view(-1)))
        if not w.trains:
            # Its values are the initial ones; and a pull of a worker that
            # pushes nothing may be answered with a later round's result.
            return
    pending = [w.pull([k], t.view(-1)) for k, t in zip(keys, tensors)]
    for ts in pending:
        w.wait(ts)


class _DistributedOptimizer(torch.optim.Optimizer):
    def __init__(self, params, named_parameters):
        super(self.__class__, self).__init__(params)
        self._w = _geops.worker()
        if not self._w.trains:
            raise _geops.GeopsError(
                "this worker does not train (the master worker without "
                "DMLC_ENABLE_CENTRAL_WORKER=1): return after broadcast_parameters()")
        if named_parameters is None:
            named_parameters = [(f"param.{i}", p) for i, p in
                                enumerate(p for g in self.param_groups for p in g["params"])]
        named = list(named_parameters)
        ours = {id(p) for g in self.param_groups for p in g["params"]}
        named = [(n, p) for n, p in named if id(p) in ours]
        if len(named) != len(ours):
            raise ValueError("named_parameters must name every parameter of the optimizer")
        self._scale = 1.0 / self._w.num_workers
        self._key = dict(zip((id(p) for _, p in named), _keys([n for n, _ in named])))
        self._name = {id(p): n for n, p in named}
        self._params = [p for _, p in named if p.requires_grad]
        self._pending = {}  # id(param) -> timestamp of its push_pull this step
        self._registered = {}  # id(param) -> its gradient, registered with geops
        self._hooks = []
        for p in self._params:
            # The hook of the parameter's AccumulateGrad node runs once p.grad
            # holds this backward's gradient (Horovod's approach).
            acc = p.expand_as(p).grad_fn.next_functions[0][0]
            acc.register_hook(self._make_hook(p))
            self._hooks.append(acc)  # keeps the node, and so the hook, alive

    def _make_hook(self, p):
        def hook(*_):
            self._send(p)
        return hook

    def _send(self, p):
        pid = id(p)
        if pid in self._pending:
            raise _geops.GeopsError(
                f"{self._name[pid]}: a second backward before step(); geops.torch sends each "
                "gradient once per step (no gradient accumulation across backward passes)")
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        g = p.grad
        if not g.is_contiguous():
            p.grad = g = g.contiguous()
        old = self._registered.get(pid)
        if old is None or old.data_ptr() != g.data_ptr():
            # Registered once (RDMA: pinned once), not per step; again only
            # when autograd gives the parameter a new gradient tensor.
            if old is not None:
                self._w.unregister(old.view(-1))
            self._w.register(g.view(-1))
            self._registered[pid] = g
        g.mul_(self._scale)
        # The sum of every worker's share lands in the gradient itself.
        self._pending[pid] = self._w.push_pull([self._key[pid]], g.view(-1), g.view(-1))

    def synchronize(self):
        """Waits for every gradient of this step (pushing zeros for unused ones)."""
        for p in self._params:
            if id(p) not in self._pending:
                self._send(p)
        try:
            for p in self._params:
                self._w.wait(self._pending[id(p)])
        finally:
            self._pending.clear()

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("geops.torch.DistributedOptimizer.step takes no closure")
        self.synchronize()
        return super(self.__class__, self).step()

    def zero_grad(self, set_to_none=False):
        if self._pending:
            raise _geops.GeopsError("zero_grad() with gradients in flight: call step() first")
        return super(self.__class__, self).zero_grad(set_to_none=set_to_none)


def DistributedOptimizer(optimizer, named_parameters=None):
    """Wraps any torch optimizer for data-parallel training on geops.

    Returns an optimizer of the same class, over the same parameter
    groups, whose step() first waits for the averaged gradients of every
    training worker (pushed during backward). Call broadcast_parameters
    first, so that every replica starts from the same weights.
    """
    cls = type(optimizer.__class__.__name__, (optimizer.__class__,),
               dict(_DistributedOptimizer.__dict__))
    return cls(optimizer.param_groups, named_parameters)
