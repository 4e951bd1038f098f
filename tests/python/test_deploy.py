"""The container and Kubernetes recipes (deploy/containers): in sync with
their generator, structurally valid, and every container's environment
accepted by `geops --check-config` as the role it is meant to be.

No Kubernetes API server is reachable here, and kubeconform is not in
Debian, so the manifests are checked against the fields of the Kubernetes
API they use (a subset of the schema, written out below); the compose files
are checked by docker-compose (Debian's, 1.29) when it is installed.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("GEOPS_BUILD_DIR", os.path.join(ROOT, "build"))
GEOPS = os.path.join(BUILD, "geops")
GEN = os.path.join(ROOT, "deploy", "containers", "geops_deploy.py")
SEED = os.path.join(ROOT, "deploy", "containers", "seed")
yaml = pytest.importorskip("yaml")


def generate(tmp_path, *args):
    out = tmp_path / "out"
    subprocess.run([sys.executable, GEN, "--out", str(out), *args], check=True,
                   capture_output=True)
    return out


def files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


def test_checked_in_recipes_match_the_generator(tmp_path):
    out = generate(tmp_path)
    assert files(out) == files(SEED)
    for f in files(out):
        with open(out / f) as a, open(os.path.join(SEED, f)) as b:
            assert a.read() == b.read(), f"{f}: run geops_deploy.py --out deploy/containers/seed"


def check_config(env, expect_role):
    """geops --check-config with exactly `env` (plus PATH)."""
    env = dict(env, PATH=os.environ.get("PATH", "/usr/bin"))
    p = subprocess.run([GEOPS, "--check-config"], env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"{env}: {p.stdout}{p.stderr}"
    assert f"configuration ok: {expect_role}" in p.stdout, p.stdout


def expected_role(env):
    if env.get("DMLC_ROLE_GLOBAL") == "global_scheduler":
        return "global_scheduler"
    if env.get("DMLC_ROLE_GLOBAL") == "global_server":
        return "global_server"
    if env.get("DMLC_ROLE_MASTER_WORKER") == "1":
        return "master_worker"
    return env["DMLC_ROLE"]


@pytest.mark.parametrize("variant", [[], ["--rdma"], ["--workers", "3", "--hosts",
                                                      "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4",
                                                      "--subnets", "172.30.1,172.30.2,172.30.3,172.30.4"]])
def test_compose_files(tmp_path, variant):
    out = generate(tmp_path, *variant)
    envs = json.load(open(out / "envs.json"))
    seen = 0
    for f in files(out / "compose"):
        path = out / "compose" / f
        doc = yaml.safe_load(open(path))
        assert doc["version"] == "2.4"
        party = f.split(".")[0]
        for name, svc in doc["services"].items():
            assert svc["image"]
            if "--rdma" in variant:
                assert svc["network_mode"] == "host" and "IPC_LOCK" in svc["cap_add"]
                assert svc["ulimits"]["memlock"]["hard"] == -1
                if "DMLC_ROLE" in svc["environment"]:  # local tiers only
                    assert svc["environment"]["DMLC_ENABLE_RDMA"] == "1"
            else:
                addr = svc["networks"]["geops"]["ipv4_address"]
                subnet = doc["networks"]["geops"]["ipam"]["config"][0]["subnet"]
                assert addr.rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0]
                assert svc["environment"]["DMLC_NODE_HOST"] == addr
            match = [e for e in envs if e["party"] == party and e["name"] == name]
            assert len(match) == 1 and match[0]["env"] == svc["environment"]
            # --rdma needs verbs devices to start, not to parse.
            check_config(svc["environment"], expected_role(svc["environment"]))
            seen += 1
        if shutil.which("docker-compose"):
            p = subprocess.run(["docker-compose", "-f", str(path), "config", "-q"],
                               capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
    assert seen == len(envs)


# The subset of the Kubernetes API the manifests use: for each object path,
# the fields allowed there ("*": any key, labels) and their types.
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENVNAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
SCHEMA = {
    "Namespace": {"apiVersion": str, "kind": str, "metadata": {"name": str}},
    "Service": {"apiVersion": str, "kind": str,
                "metadata": {"name": str, "namespace": str},
                "spec": {"clusterIP": str, "publishNotReadyAddresses": bool,
                         "selector": {"*": str},
                         "ports": [{"name": str, "port": int, "protocol": str}]}},
    "Job": {"apiVersion": str, "kind": str,
            "metadata": {"name": str, "namespace": str, "labels": {"*": str}},
            "spec": {"backoffLimit": int,
                     "template": {"metadata": {"labels": {"*": str}},
                                  "spec": {"restartPolicy": str, "containers": [{
                                      "name": str, "image": str, "command": [str],
                                      "env": [{"name": str, "value": str, "valueFrom": {
                                          "fieldRef": {"fieldPath": str}}}],
                                      "securityContext": {"capabilities": {"add": [str]}},
                                      "resources": {"limits": {"*": int}}}]}}}},
}
API = {"Namespace": "v1", "Service": "v1", "Job": "batch/v1"}


def conform(obj, schema, where):
    if isinstance(schema, dict):
        assert isinstance(obj, dict), f"{where}: expected an object"
        for k, v in obj.items():
            sub = schema.get(k, schema.get("*"))
            assert sub is not None, f"{where}.{k}: not a field of the Kubernetes API here"
            conform(v, sub, f"{where}.{k}")
    elif isinstance(schema, list):
        assert isinstance(obj, list), f"{where}: expected a list"
        for i, v in enumerate(obj):
            conform(v, schema[0], f"{where}[{i}]")
    else:
        assert isinstance(obj, schema) and not (schema is int and isinstance(obj, bool)), \
            f"{where}: expected {schema.__name__}, got {obj!r}"


@pytest.mark.parametrize("variant", [[], ["--rdma"]])
def test_kubernetes_manifests(tmp_path, variant):
    out = generate(tmp_path, *variant)
    docs = list(yaml.safe_load_all(open(out / "k8s" / "geops.yaml")))
    names = set()
    jobs, services = [], []
    for d in docs:
        kind = d["kind"]
        assert d["apiVersion"] == API[kind]
        conform(d, SCHEMA[kind], kind)
        name = d["metadata"]["name"]
        assert DNS1123.match(name) and len(name) <= 63, name
        assert (kind, name) not in names
        names.add((kind, name))
        (jobs if kind == "Job" else services if kind == "Service" else []).append(d)
    # Every Service selects exactly one Job's pods; every scheduler address
    # a pod is given is one of the Services.
    svc_ip = {}
    for i, s in enumerate(services):
        sel = s["spec"]["selector"]
        hits = [j for j in jobs
                if all(j["spec"]["template"]["metadata"]["labels"].get(k) == v
                       for k, v in sel.items())]
        assert len(hits) == 1, s["metadata"]["name"]
        assert s["spec"]["clusterIP"] == "None" and s["spec"]["publishNotReadyAddresses"]
        svc_ip[f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local"] = \
            f"10.96.0.{10 + i}"
    roles = []
    for n, j in enumerate(jobs):
        spec = j["spec"]["template"]["spec"]
        assert spec["restartPolicy"] in ("Never", "OnFailure")
        (c,) = spec["containers"]
        env = {}
        for e in c["env"]:
            assert ENVNAME.match(e["name"])
            assert ("value" in e) != ("valueFrom" in e), e
            if "valueFrom" in e:
                assert e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
                env[e["name"]] = f"10.244.0.{n + 2}"  # the pod's address
            else:
                env[e["name"]] = svc_ip.get(e["value"], e["value"])
        assert env["DMLC_PS_GLOBAL_ROOT_URI"] in svc_ip.values()
        if "DMLC_PS_ROOT_URI" in env:
            assert env["DMLC_PS_ROOT_URI"] in svc_ip.values()
        check_config(env, expected_role(env))
        roles.append(expected_role(env))
    assert roles.count("global_scheduler") == 1 and roles.count("global_server") == 1
    assert roles.count("scheduler") == 3 and roles.count("worker") == 4
    assert roles.count("master_worker") == 1


def test_the_dockerfile_builds_what_the_recipes_run():
    text = open(os.path.join(ROOT, "deploy", "containers", "Dockerfile")).read()
    assert text.startswith("#") and "FROM debian:12" in text
    assert 'ENTRYPOINT ["geops"]' in text
    assert "pybind11-dev" in text and "_geops" in text
    for flag in ("--device /dev/infiniband", "IPC_LOCK", "memlock=-1"):
        assert flag in text
