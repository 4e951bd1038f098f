"""Python tests of geops: the module, its errors, exact results on a real
local cluster (geops-launch --worker-cmd), DistributedOptimizer replicas,
and a short Fashion-MNIST epoch across two parties.

Run by ctest (python_tests) with PYTHONPATH=<build>/python and
GEOPS_BUILD_DIR=<build>; by hand: PYTHONPATH=build/python
GEOPS_BUILD_DIR=build /usr/bin/python3 -m pytest tests/python
"""
import os
import re
import subprocess
import sys

import pytest

import geops

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("GEOPS_BUILD_DIR", os.path.join(ROOT, "build"))
LAUNCH = os.path.join(BUILD, "geops-launch")
DATA = "/usr/share/datasets/fashion-mnist"


def launch(cmd, *args, timeout=240):
    """Runs `cmd` as every worker of a local cluster; returns (rc, stdout)."""
    p = subprocess.run([LAUNCH, "--timeout", str(timeout - 10), *args,
                        "--worker-cmd", f"{sys.executable} {cmd}"],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def test_import():
    assert callable(geops.worker) and callable(geops.spread_key)
    assert geops.spread_key(0, 2) < geops.spread_key(1, 2)
    assert issubclass(geops.ConfigError, ValueError)
    assert issubclass(geops.GeopsError, RuntimeError)


def test_import_torch():
    pytest.importorskip("torch")
    import geops.torch as gt
    assert callable(gt.DistributedOptimizer) and callable(gt.broadcast_parameters)


@pytest.fixture
def clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith(("DMLC_", "PS_", "GEOPS_")):
            monkeypatch.delenv(k)
    return monkeypatch


def test_bad_variable_is_named(clean_env):
    clean_env.setenv("DMLC_ROLE", "worker")
    clean_env.setenv("DMLC_PS_ROOT_URI", "127.0.0.1")
    clean_env.setenv("DMLC_PS_ROOT_PORT", "notaport")
    clean_env.setenv("DMLC_NUM_SERVER", "1")
    clean_env.setenv("DMLC_NUM_WORKER", "1")
    with pytest.raises(geops.ConfigError, match="DMLC_PS_ROOT_PORT"):
        geops.Worker()
    with pytest.raises(geops.ConfigError, match="DMLC_PS_ROOT_PORT"):
        geops.config_check()
    clean_env.setenv("DMLC_PS_ROOT_PORT", "9000")
    clean_env.setenv("DMLC_NUM_WORKER", "-3")
    with pytest.raises(ValueError, match="DMLC_NUM_WORKER"):
        geops.Worker()


def test_server_role_is_refused(clean_env):
    for k, v in dict(DMLC_ROLE="server", DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT="9000",
                     DMLC_NUM_SERVER="1", DMLC_NUM_WORKER="1").items():
        clean_env.setenv(k, v)
    with pytest.raises(geops.ConfigError, match="DMLC_ROLE"):
        geops.Worker()


def test_exact_results_on_a_cluster():
    rc, out = launch(os.path.join(HERE, "exact_worker.py"))
    assert rc == 0, out
    ok = re.findall(r"exact-worker shard=\d+/4 ok", out)
    assert len(ok) == 4, out
    assert "check=every worker's command exited 0" in out


def test_a_failing_worker_stops_the_cluster():
    rc, out = launch("-c 'import geops, sys; geops.worker(); sys.exit(3)'", "--parties", "1",
                     "--workers", "1", timeout=120)
    assert rc != 0, out
    assert "check=FAILED" in out


@pytest.mark.parametrize("topology,trainers", [([], 4), (["--central-workers", "1"], 6)])
def test_optimizer_keeps_replicas_identical(topology, trainers):
    # With central workers the master worker trains too (DMLC_ENABLE_CENTRAL_WORKER=1).
    pytest.importorskip("torch")
    rc, out = launch(os.path.join(HERE, "optimizer_worker.py") + " $$",  # a seed per worker
                     *topology)
    assert rc == 0, out
    lines = re.findall(rf"replica shard=\d+/{trainers} moved=([0-9.]+) sha256=(\w+)", out)
    assert len(lines) == trainers, out
    assert all(float(m) > 0 for m, _ in lines), out
    assert len({h for _, h in lines}) == 1, out


@pytest.mark.skipif(not os.path.isdir(DATA), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_short_epoch_two_parties():
    pytest.importorskip("torch")
    example = os.path.join(ROOT, "examples", "fashion_mnist_cnn.py")
    rc, out = launch(f"{example} --epochs 1 --train-examples 12000 --test-examples 2000",
                     "--parties", "2", "--workers", "2")
    assert rc == 0, out
    acc = re.search(r"summary: command workers=5/5 .*test_accuracy=([0-9.]+)", out)
    assert acc, out
    assert float(acc.group(1)) >= 0.6, out  # chance is 0.1
