#!/usr/bin/env python3
"""Writes the container recipes of a geops cluster from one layout.

The layout is the seed's (GeoMX's manual deployment): one party per host,
the central party (global scheduler, scheduler, global server, master
worker) on the first host, each training party (scheduler, server,
workers) on its own host, every party's containers on a bridge network of
their own, with routes between the hosts. Outputs, under --out:

  compose/<party>.compose.yaml   one compose file per host (docker compose
                                 -f ... up), static container addresses
  hosts/<party>-network.sh       the host's routes to the other parties'
                                 bridge subnets, and forwarding rules
  k8s/geops.yaml                 the same cluster on Kubernetes: per party a
                                 headless scheduler Service and Jobs for the
                                 scheduler, servers and workers; the global
                                 scheduler in the central party
  envs.json                      every container's DMLC_* environment (what
                                 the tests feed `geops --check-config`)

    python3 deploy/containers/geops_deploy.py --out deploy/containers/seed

regenerates the checked-in files for the seed's three hosts. Every option
has the seed's value as its default.
"""

import argparse
import json
import os

IMAGE = "geops:latest"


def layout(args):
    """[(party, host address, bridge subnet prefix 'a.b.c')] central first."""
    names = ["central"] + [chr(ord("A") + i) for i in range(len(args.hosts) - 1)]
    return list(zip(names, args.hosts, args.subnets))


def plan(args):
    """Every container: (party, name, address or None, env, command or None)."""
    parties = layout(args)
    training = len(parties) - 1
    all_workers = training * args.workers
    g_host = parties[0][2] + ".10" if not args.rdma else parties[0][1]
    common = {
        "DMLC_PS_GLOBAL_ROOT_URI": g_host,
        "DMLC_PS_GLOBAL_ROOT_PORT": "9092",
        "DMLC_NUM_GLOBAL_SERVER": "1",
        "DMLC_NUM_GLOBAL_WORKER": str(training),
        "DMLC_NUM_ALL_WORKER": str(all_workers),
        "DMLC_ENABLE_CENTRAL_WORKER": "0",
    }
    for kv in args.env:
        k, v = kv.split("=", 1)
        common[k] = v
    out = []
    shard = 0
    for index, (party, host, subnet) in enumerate(parties):
        central = index == 0
        port = str(9093 + index)
        # Container addresses on the party's bridge: .10 the global
        # scheduler, .11 the scheduler, .12 the server, .21+ workers. With
        # --rdma every container uses the host's network (its RDMA netdev).
        def addr(last):
            return host if args.rdma else f"{subnet}.{last}"
        local = dict(common)
        local.update({
            "DMLC_PS_ROOT_URI": addr(11),
            "DMLC_PS_ROOT_PORT": port,
            "DMLC_NUM_SERVER": "1",
            "DMLC_NUM_WORKER": "1" if central else str(args.workers),
            "GEOPS_PARTY": party,
        })
        if args.rdma:
            local["DMLC_ENABLE_RDMA"] = "1"

        def add(name, last, env, cmd=None):
            env = dict(env)
            env["DMLC_NODE_HOST"] = addr(last)
            out.append({"party": party, "name": name, "address": addr(last), "env": env,
                        "command": cmd})

        if central:
            add("global-scheduler", 10, dict(common, DMLC_ROLE_GLOBAL="global_scheduler"))
        add("scheduler", 11, dict(local, DMLC_ROLE="scheduler"))
        if central:
            add("global-server", 12, dict(local, DMLC_ROLE="server",
                                          DMLC_ROLE_GLOBAL="global_server"))
            add("master-worker", 21, dict(local, DMLC_ROLE="worker",
                                          DMLC_ROLE_MASTER_WORKER="1"),
                args.worker_cmd)
        else:
            add("server", 12, dict(local, DMLC_ROLE="server"))
            for w in range(args.workers):
                add(f"worker{w}", 21 + w,
                    dict(local, DMLC_ROLE="worker", GEOPS_SHARD=f"{shard}/{all_workers}"),
                    args.worker_cmd)
                shard += 1
    return out


def yaml_scalar(v):
    return json.dumps(v)  # a JSON string is a valid YAML scalar


def emit(obj, indent=0):
    """A small YAML writer (block style, JSON scalars): no PyYAML needed."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.extend(emit(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {yaml_scalar(v) if not isinstance(v, (dict, list)) else ('{}' if isinstance(v, dict) else '[]')}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                sub = emit(v, indent + 1)
                lines.append(f"{pad}- {sub[0].strip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {yaml_scalar(v)}")
    return lines


def compose_files(args, containers):
    files = {}
    for party, host, subnet in layout(args):
        services = {}
        for c in containers:
            if c["party"] != party:
                continue
            svc = {
                "image": args.image,
                "container_name": f"geops-{party.lower()}-{c['name']}",
                "environment": c["env"],
                "restart": "no",
            }
            if c["command"]:
                svc["entrypoint"] = ["/bin/sh", "-c", c["command"]]
            if args.rdma:
                # RDMA in a container: the verbs devices, pinned memory, and
                # a network namespace that holds the RDMA netdev (the host's).
                svc["network_mode"] = "host"
                svc["devices"] = ["/dev/infiniband:/dev/infiniband"]
                svc["cap_add"] = ["IPC_LOCK"]
                svc["ulimits"] = {"memlock": {"soft": -1, "hard": -1}}
            else:
                svc["networks"] = {"geops": {"ipv4_address": c["address"]}}
            services[f"{c['name']}"] = svc
        # Version 2.4: static addresses, ulimits and devices, and a schema
        # that both docker-compose 1.29 (Debian) and compose v2 accept.
        doc = {"version": "2.4", "services": services}
        if not args.rdma:
            doc["networks"] = {"geops": {
                "driver": "bridge",
                "driver_opts": {"com.docker.network.bridge.name": "geops0"},
                "ipam": {"config": [{"subnet": f"{subnet}.0/24"}]},
            }}
        header = (f"# geops, party {party}, on host {host}:\n"
                  f"#   docker compose -p geops-{party.lower()} -f {party}.compose.yaml up\n"
                  f"# Generated by deploy/containers/geops_deploy.py; run hosts/{party}-network.sh "
                  "first.\n")
        files[f"compose/{party}.compose.yaml"] = header + "\n".join(emit(doc)) + "\n"
    return files


def network_scripts(args):
    files = {}
    parties = layout(args)
    everything = ",".join(f"{s}.0/24" for _, _, s in parties)
    for party, host, subnet in parties:
        lines = [
            "#!/bin/sh",
            f"# Host {host} (party {party}): routes to the other parties' container",
            "# subnets through their hosts, as the seed's `route add` lines, and",
            "# forwarding between the bridges without address translation (each",
            "# geops node advertises its container address, which must be reachable).",
            "set -e",
            "sysctl -qw net.ipv4.ip_forward=1",
        ]
        for other, ohost, osub in parties:
            if other != party:
                lines.append(f"ip route replace {osub}.0/24 via {ohost}")
        lines += [
            f"for net in {everything.replace(',', ' ')}; do",
            "  iptables -C DOCKER-USER -s \"$net\" -j ACCEPT 2>/dev/null || "
            "iptables -I DOCKER-USER -s \"$net\" -j ACCEPT",
            f"  iptables -t nat -C POSTROUTING -s {subnet}.0/24 -d \"$net\" -j RETURN 2>/dev/null || "
            f"iptables -t nat -I POSTROUTING -s {subnet}.0/24 -d \"$net\" -j RETURN",
            "done",
        ]
        files[f"hosts/{party}-network.sh"] = "\n".join(lines) + "\n"
    return files


def k8s_manifests(args, containers):
    ns = args.namespace
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]
    # Scheduler addresses become headless Services (DNS names that resolve
    # to the scheduler pod's own address, published before it is ready);
    # every node advertises its pod IP.
    global_svc = f"geops-global-scheduler.{ns}.svc.cluster.local"

    def svc_name(party):
        return f"geops-{party.lower()}-scheduler"

    for party, _, _ in layout(args):
        party_label = party.lower()
        docs.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc_name(party), "namespace": ns},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {"app": "geops", "party": party_label, "role": "scheduler"},
                     "ports": [{"name": "geops", "port": 9093, "protocol": "TCP"}]},
        })
    docs.append({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "geops-global-scheduler", "namespace": ns},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {"app": "geops", "party": "central", "role": "global-scheduler"},
                 "ports": [{"name": "geops", "port": 9092, "protocol": "TCP"}]},
    })
    for c in containers:
        party = c["party"]
        role = c["name"].rstrip("0123456789")
        env = []
        for k, v in c["env"].items():
            if k == "DMLC_NODE_HOST":
                continue
            if k == "DMLC_PS_GLOBAL_ROOT_URI":
                v = global_svc
            if k == "DMLC_PS_ROOT_URI":
                v = f"{svc_name(party)}.{ns}.svc.cluster.local"
            if k == "DMLC_PS_ROOT_PORT":
                v = "9093"
            env.append({"name": k, "value": v})
        env.append({"name": "DMLC_NODE_HOST",
                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        container = {"name": "geops", "image": args.image, "env": env}
        if c["command"]:
            container["command"] = ["/bin/sh", "-c", c["command"]]
        if args.rdma:
            container["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"]}}
            container["resources"] = {"limits": {args.rdma_resource: 1}}
        labels = {"app": "geops", "party": party.lower(), "role": role}
        docs.append({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"geops-{party.lower()}-{c['name']}", "namespace": ns,
                         "labels": labels},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"restartPolicy": "Never", "containers": [container]},
                },
            },
        })
    body = "\n---\n".join("\n".join(emit(d)) for d in docs)
    return {"k8s/geops.yaml": "# geops on Kubernetes (generated by deploy/containers/geops_deploy.py):\n"
            "#   kubectl apply -f geops.yaml\n" + body + "\n"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--hosts", default="10.1.1.34,10.1.1.29,10.1.1.33",
                    help="one host per party, the central party first (the seed's)")
    ap.add_argument("--subnets", default="172.20.34,172.20.29,172.20.33",
                    help="each party's bridge subnet (a /24, given as a.b.c)")
    ap.add_argument("--workers", type=int, default=2, help="workers per training party")
    ap.add_argument("--image", default=IMAGE)
    ap.add_argument("--namespace", default="geops")
    ap.add_argument("--worker-cmd", default=None,
                    help="workers run this (sh -c) instead of geops, e.g. "
                         "'python3 /usr/share/geops/examples/fashion_mnist_cnn.py'")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for every container")
    ap.add_argument("--rdma", action="store_true",
                    help="local tiers over RDMA: host network, /dev/infiniband, IPC_LOCK, "
                         "unlimited memlock")
    ap.add_argument("--rdma-resource", default="rdma/hca_shared_devices_a",
                    help="Kubernetes extended resource of the RDMA device plugin")
    args = ap.parse_args()
    args.hosts = args.hosts.split(",")
    args.subnets = args.subnets.split(",")
    if len(args.hosts) < 2 or len(args.hosts) != len(args.subnets):
        ap.error("--hosts and --subnets: one per party, at least two parties")
    containers = plan(args)
    files = {}
    files.update(compose_files(args, containers))
    files.update(network_scripts(args))
    files.update(k8s_manifests(args, containers))
    files["envs.json"] = json.dumps(
        [{"party": c["party"], "name": c["name"], "env": c["env"]} for c in containers],
        indent=1) + "\n"
    for path, text in files.items():
        full = os.path.join(args.out, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
        if path.endswith(".sh"):
            os.chmod(full, 0o755)
    print(f"wrote {len(files)} files under {args.out}")


if __name__ == "__main__":
    main()
