"""How the dispatch index is cut into shards: which shard a tenant belongs to, and the key prefix
of each shard. Pure rules, no I/O (the Redis store uses them).

A shard is everything one tenant-fair queue needs at once: its tenant ring, ready queues, delayed
set, leases, running sets, envelopes, feeds and counters. Every script touches one shard only. On
a Redis Cluster a shard's keys share a hash tag, so they live in one hash slot on one master, and
the tags are chosen so that shard i's slot lies in the i-th of `count` equal slot ranges: with
`redis-cli --cluster create`'s even split over m masters and a count that is a multiple of m,
every master holds count/m shards. A tenant belongs to one shard by a stable hash of its id
(CRC32), the same on every node and every start; changing the count moves tenants, which is why
it takes a rebuild (docs/deployment.md, "Scaling out").

One shard on a single Redis keeps the keys of earlier versions: `<prefix>:ready:<tenant>` and so
on, no hash tag.
"""

from __future__ import annotations

import zlib
from functools import cache

import attrs
from redis.crc import key_slot as redis_key_slot

SLOTS = 16384
MAX_SHARDS = 1024
CLUSTER_DEFAULT_SHARDS = 6  # even over 1, 2, 3 or 6 masters; more shards cost more calls (bench/cluster.py)


def key_slot(key: str) -> int:
    """The hash slot of a key, by the cluster's rule (redis-py's own function: only the part in
    the first non-empty {…} counts when there is one)."""
    return int(redis_key_slot(key.encode()))


@cache
def shard_tag(index: int, count: int) -> str:
    """The hash tag of shard `index` of `count`: the first of s<index>.0, s<index>.1, … whose slot
    lies in the index-th of `count` equal slot ranges."""
    low, high = index * SLOTS // count, (index + 1) * SLOTS // count
    attempt = 0
    while True:
        tag = f"s{index}.{attempt}"
        if low <= key_slot("{" + tag + "}") < high:
            return tag
        attempt += 1


@attrs.frozen
class ShardMap:
    prefix: str
    count: int = 1

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"shard count must be 1 to {MAX_SHARDS}, got {self.count}")

    def of(self, tenant: str) -> int:
        """The shard a tenant belongs to."""
        if self.count == 1:
            return 0
        return zlib.crc32(tenant.encode("utf-8", "surrogatepass")) % self.count

    def base(self, index: int) -> str:
        """The key prefix of a shard: `<prefix>` alone for the single shard, else
        `<prefix>:{<tag>}`."""
        if self.count == 1:
            return self.prefix
        return f"{self.prefix}:{{{shard_tag(index, self.count)}}}"

    def bases(self) -> list[str]:
        return _bases(self.prefix, self.count)

    def tenant_base(self, tenant: str) -> str:
        return self.base(self.of(tenant))

    def index_of_base(self, base: str) -> int | None:
        """Which shard a key prefix names (None: none of this map's)."""
        return _indexes(self.prefix, self.count).get(base)


@cache
def _bases(prefix: str, count: int) -> list[str]:
    return [ShardMap(prefix, count).base(i) for i in range(count)]


@cache
def _indexes(prefix: str, count: int) -> dict[str, int]:
    return {base: i for i, base in enumerate(_bases(prefix, count))}


class Rotation:
    """Which shards a claim round asks, in what order and for how many jobs: a smooth weighted
    round robin over the shards that may have ready work, weighted by how many tenants with ready
    work each has, so that across shards each tenant gets about one turn per round of all tenants,
    as claim.lua gives within one. Pure bookkeeping, no I/O.

    A shard is `hot` until it fills less than it was asked (dry: nothing ready, or its tenants
    at their running caps); a wake-up naming it makes it hot again (`wake`)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.hot = set(range(count))
        self.tenants = [1] * count  # tenants with ready work, as each shard's last claim said
        self.credit = [0.0] * count  # jobs owed to each shard's tenants

    def wake(self, indexes: set[int] | None) -> None:
        """These shards may have ready work; None: any may."""
        self.hot |= set(range(self.count)) if indexes is None else indexes

    def order(self, n: int) -> list[int]:
        """The hot shards, most owed first, after crediting each its share of n slots."""
        total = sum(max(1, self.tenants[i]) for i in self.hot)
        for i in self.hot:
            self.credit[i] += n * max(1, self.tenants[i]) / total
        return sorted(self.hot, key=lambda i: (-self.credit[i], i))

    def ask(self, index: int, remaining: int) -> int:
        """How many to ask a shard for: what it is owed (at least one), at most what is left."""
        return min(remaining, max(1, -int(-self.credit[index] // 1)))

    def claimed(self, index: int, asked: int, got: int, tenants_left: int) -> None:
        self.credit[index] = max(-1.0, self.credit[index] - got)
        self.tenants[index] = tenants_left
        if got < asked:
            self.hot.discard(index)
            self.credit[index] = 0.0
