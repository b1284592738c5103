"""A Ray cluster of several nodes on this machine that listens on the loopback only, for the tests and benchmarks.

`ray start --node-ip-address=127.0.0.1` swaps that address for the machine's routable one (its servers then listen
on every interface), and in Ray's single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, where it keeps
127.0.0.1) `ray start --address` refuses to add a node. So the nodes are started here with
ray.cluster_utils.Cluster in that mode, in a process of their own:

    python -m benchmarks.ray_cluster --port 6390 --nodes 2 --info cluster.json

With RAY_AUTH_MODE=token in the environment and a token in ~/.ray/auth_token, every node requires it, as a cluster
of `ray start --head` does where a token exists. `--info` is written once every node is up: the head's address and,
per node, its node id and the process ids of its Ray processes (kill them to lose the node). The process then waits
until it is killed; run it in a process group of its own and kill the group (benchmarks.app_load.kill_group)."""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.app_load import kill_group

SINGLE_MACHINE = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def serve(port: int, nodes: int, info: Path) -> None:
    os.environ.update(SINGLE_MACHINE)  # before Ray is imported: it reads the mode once
    from ray.cluster_utils import Cluster

    head = {"gcs_server_port": port, "num_cpus": 1, "num_gpus": 0, "include_dashboard": False,
            "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, shutdown_at_exit=True, head_node_args=head)
    members = [cluster.head_node] + [cluster.add_node(num_cpus=1, num_gpus=0, node_ip_address="127.0.0.1")
                                     for _ in range(nodes - 1)]
    cluster.wait_for_nodes()

    def pids(node) -> list[int]:
        return [p.process.pid for procs in node.all_processes.values() for p in procs if p.process is not None]

    tmp = info.with_suffix(".tmp")
    tmp.write_text(json.dumps({"address": cluster.address,
                               "nodes": [{"node_id": n.node_id, "pids": pids(n)} for n in members]}))
    tmp.replace(info)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


def listening(pgid: int) -> set[str]:
    """The addresses (ip:port; IPv4 for an IPv4-mapped IPv6 one) on which the processes of process group `pgid`
    listen for TCP connections (Linux: read from /proc)."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    found = set()
    for table, width in (("tcp", 4), ("tcp6", 16)):
        try:
            rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            host, port = cols[1].split(":")
            raw = bytes.fromhex(host)
            # /proc/net writes each 32-bit word of the address in host (little-endian) order
            ip = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            addr = ipaddress.ip_address(ip)
            addr = getattr(addr, "ipv4_mapped", None) or addr
            found.add(f"{addr}:{int(port, 16)}")
    return found


class LoopbackCluster:
    """The cluster above started in a subprocess (a process group of its own, its log in `root`/cluster.log), in
    `env` (default: this process's) with Ray's single-machine mode added; a process that joins it needs the same
    mode and Ray temp dir."""

    def __init__(self, root: Path, port: int, nodes: int = 2, env: dict[str, str] | None = None,
                 timeout_s: float = 300) -> None:
        env = {**(env if env is not None else os.environ), **SINGLE_MACHINE}
        self.address = f"127.0.0.1:{port}"
        info = root / "cluster.json"
        log = root / "cluster.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.ray_cluster", f"--port={port}",
                                      f"--nodes={nodes}", f"--info={info}"], env=env, stdout=log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=Path(__file__).resolve().parents[1])
        deadline = time.monotonic() + timeout_s  # only catches a cluster that never comes up
        while not info.is_file():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the loopback Ray cluster did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.nodes: list[dict] = json.loads(info.read_text())["nodes"]

    def kill_node(self, index: int) -> None:
        """SIGKILL every Ray process of node `index` at once, as a crash of that machine does (not its workers:
        they are the raylet's children and go with it, or are the caller's to kill)."""
        for pid in self.nodes[index]["pids"]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        kill_group(self.proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the head's GCS port, on 127.0.0.1")
    parser.add_argument("--nodes", type=int, default=2, help="nodes in all, the head included, one core each")
    parser.add_argument("--info", type=Path, required=True, help="JSON written once the nodes are up")
    args = parser.parse_args()
    serve(args.port, args.nodes, args.info)


if __name__ == "__main__":
    main()
