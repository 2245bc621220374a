"""The shard rules: hash tags spread over the slot ranges, a tenant's shard is stable, and the
claim rotation is fair between tenants across shards."""

from __future__ import annotations

from collections import Counter

import pytest
from redis.crc import key_slot as redis_key_slot

from conveyor.shards import SLOTS, Rotation, ShardMap, key_slot


def test_key_slot_is_the_clusters() -> None:
    for key in ("a", "conveyor:{s1.3}:job:x", "{}x", "x{}y{z}", "{a}{b}", "p:{s0.10}"):
        assert key_slot(key) == redis_key_slot(key.encode())
    assert key_slot("p:{s0.10}:ready:t") == key_slot("{s0.10}")  # the tag alone counts


@pytest.mark.parametrize("count", [3, 6, 12, 16, 1024])
def test_shard_i_lives_in_the_i_th_slot_range(count: int) -> None:
    bases = ShardMap("conveyor", count).bases()
    assert len(set(bases)) == count
    for i, base in enumerate(bases):
        assert i * SLOTS // count <= key_slot(base + ":ready:t") < (i + 1) * SLOTS // count
    # three masters with even slot ranges hold count/3 shards each
    if count % 3 == 0:
        per_master = Counter(key_slot(b) * 3 // SLOTS for b in bases)
        assert set(per_master.values()) == {count // 3}


def test_one_shard_keeps_the_keys_of_earlier_versions() -> None:
    shards = ShardMap("conveyor")
    assert shards.tenant_base("anyone") == "conveyor" and shards.of("x") == 0


def test_a_tenant_always_belongs_to_the_same_shard_and_tenants_spread() -> None:
    shards = ShardMap("p", 12)
    assert shards.of("acme") == ShardMap("other-prefix", 12).of("acme")  # by the tenant alone
    assert shards.of("acme") == shards.of("acme")
    spread = Counter(shards.of(f"tenant-{i}") for i in range(1200))
    assert len(spread) == 12 and min(spread.values()) > 50
    assert shards.of("\ud800 lone surrogate") in range(12)  # any str a tenant could be


def test_bad_counts_are_refused() -> None:
    for count in (0, 1025):
        with pytest.raises(ValueError, match="shard count"):
            ShardMap("p", count)


def run_rounds(
    rotation: Rotation, ready: dict[int, list[str]], rounds: int, n: int, endless: bool = True
) -> list[str]:
    """Claim rounds against fake shards whose ready tenants take turns (as claim.lua does), with
    endless work or only the jobs in `ready`."""
    order: list[str] = []
    for _ in range(rounds):
        remaining = n
        while remaining > 0 and rotation.hot:
            for index in rotation.order(remaining):
                if remaining <= 0:
                    break
                asked = rotation.ask(index, remaining)
                got = []
                for _ in range(asked):
                    if ready[index]:
                        tenant = ready[index].pop(0)
                        got.append(tenant)
                        if endless:
                            ready[index].append(tenant)
                order += got
                remaining -= len(got)
                rotation.claimed(index, asked, len(got), len(set(ready[index])))
    return order


def test_two_tenants_on_two_shards_alternate() -> None:
    rotation = Rotation(12)
    order = run_rounds(rotation, {i: [] for i in range(12)} | {2: ["a"], 9: ["b"]}, 40, 1)
    # the first round finds which shards are dry; from then on one each per turn
    assert order[2:] == ["a", "b"] * 19 or order[2:] == ["b", "a"] * 19, order


def test_each_tenant_gets_its_turn_whatever_shard_it_is_on() -> None:
    rotation = Rotation(4)
    ready = {0: ["a", "b", "c"], 1: ["d"], 2: [], 3: []}
    order = run_rounds(rotation, ready, 400, 1)
    counts = Counter(order[20:])
    assert max(counts.values()) <= 1.1 * min(counts.values()), counts


def test_a_dry_shard_is_asked_again_once_woken() -> None:
    rotation = Rotation(3)
    ready: dict[int, list[str]] = {0: ["a"], 1: [], 2: []}
    assert run_rounds(rotation, ready, 3, 4, endless=False) == ["a"]
    assert rotation.hot == set()  # every shard filled less than it was asked
    ready[1] = ["b"]
    rotation.wake({1})
    assert run_rounds(rotation, ready, 1, 1, endless=False) == ["b"]
    rotation.wake(None)
    assert rotation.hot == {0, 1, 2}
