"""The Valkey Cluster the Redis Cluster tests of issue 16 run against: 3 masters, 3 replicas,
every slot served, keys spread over the masters, and a killed master failed over to its replica."""

from __future__ import annotations

import pytest
import redis as redis_lib
from redis.cluster import RedisCluster

from tests import services
from tests.redis_cluster import ValkeyCluster


@pytest.fixture
def cluster() -> ValkeyCluster:
    return services.session_cluster()  # type: ignore[no-any-return]


def test_three_masters_and_three_replicas_serve_every_slot(cluster: ValkeyCluster) -> None:
    nodes = cluster.nodes()
    assert sorted(n["role"] for n in nodes) == ["master"] * 3 + ["slave"] * 3
    assert all(n["slots"] for n in nodes if n["role"] == "master")
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)
    try:
        for i in range(300):
            client.set(f"ctest-cluster:{i}", i)
        assert [int(client.get(f"ctest-cluster:{i}") or -1) for i in range(300)] == list(range(300))
        # the keys spread over every master
        by_master = [redis_lib.Redis(host=host, port=int(port)).dbsize()
                     for host, port in (n["address"].split(":") for n in nodes if n["role"] == "master")]
        assert all(count > 0 for count in by_master), by_master
        client.delete(*[f"ctest-cluster:{i}" for i in range(300)])
    finally:
        client.close()


def test_a_killed_master_is_failed_over_to_its_replica(cluster: ValkeyCluster) -> None:
    victim = cluster.victim()
    cluster.kill(victim)
    try:
        cluster.wait_failed_over(victim)  # its replica took its slots
        after = cluster.nodes()
        live_masters = [n for n in after if n["role"] == "master" and n["slots"]]  # the dead one lost its slots
        assert len(live_masters) == 3 and f"127.0.0.1:{victim}" not in {n["address"] for n in live_masters}
        client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)
        try:
            client.set("ctest-cluster:after", "yes")
            assert client.get("ctest-cluster:after") == "yes"
            client.delete("ctest-cluster:after")
        finally:
            client.close()
    finally:
        cluster.restart(victim)  # back as a replica: the session's cluster stays whole
    assert sorted(n["role"] for n in cluster.nodes()) == ["master"] * 3 + ["slave"] * 3
