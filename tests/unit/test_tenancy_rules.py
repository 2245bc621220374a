"""The pure rules of tenancy: key format and digests, limit overrides, the webhook address
policy, and the tenant checks of validation."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from conveyor import keys, limits, netpolicy
from conveyor.config import Config
from conveyor.handlers import build_registry
from conveyor.validation import Forbidden, Invalid, parse_batch, parse_list_query, parse_submission


def test_keys_are_random_well_formed_and_stored_as_digests() -> None:
    key_id, key, digest = keys.new_key()
    other = keys.new_key()
    assert key.startswith(f"cvk_{key_id}_") and keys.key_id_of(key) == key_id
    assert other[0] != key_id and other[1] != key
    assert digest == hashlib.sha256(key.encode()).hexdigest() and key not in digest
    assert keys.matches(key, digest) and not keys.matches(other[1], digest)
    for bad in ("", "cvk_", key[:-1], key + "x", key.replace("cvk", "xyz"), f"cvk_{key_id}"):
        assert keys.key_id_of(bad) is None, bad


def test_bearer_header() -> None:
    assert keys.bearer("Bearer abc") == "abc"
    assert keys.bearer("bearer   abc ") == "abc"
    for bad in (None, "", "Bearer", "Basic abc", "abc"):
        assert keys.bearer(bad) is None


def test_tenant_ids() -> None:
    for good in ("a", "acme", "team-1.prod_x", "A" * 100):
        assert keys.valid_tenant_id(good)
    for bad in ("", "-a", "a b", "a/b", "é", "A" * 101, 7, None):
        assert not keys.valid_tenant_id(bad)


def test_limits_resolve_overrides_over_defaults() -> None:
    config = Config(tenant_max_running=0, tenant_submit_rate=100.0, tenant_max_queued=1000)
    row = {"max_running": 5, "submit_rate": None, "submit_burst": None, "max_queued": 0,
           "max_websockets": None}
    resolved = limits.resolve(config, row)
    assert resolved.max_running == 5 and resolved.submit_rate == 100.0 and resolved.max_queued == 0
    assert limits.resolve(config, None) == limits.defaults(config)


def test_limit_overrides_are_checked() -> None:
    values, errors = limits.parse_overrides({"maxRunning": 3, "submitRate": 0.5, "maxQueued": None})
    assert values == {"max_running": 3, "submit_rate": 0.5, "max_queued": None} and not errors
    for bad in ({"maxRunning": -1}, {"maxRunning": 1.5}, {"maxRunning": True}, {"submitBurst": 0},
                {"submitRate": "1"}, {"maxQueued": 2**31}, {"maxQueued": 10**400}, {"submitRate": 10**400},
                {"maxRunning": float("nan")}, {"submitRate": float("inf")}):
        _, errors = limits.parse_overrides(bad)
        assert [e.field for e in errors] == list(bad), bad


def test_refusals_have_retry_after_except_an_oversized_batch() -> None:
    lim = limits.defaults(Config())
    assert limits.refusal("rate", "t", 1, lim, 0).retry_after_ms == 1
    assert limits.refusal("queue", "t", 1, lim, 1000).retry_after_ms == 1000
    assert limits.refusal("burst", "t", 10_000, lim, 0).retry_after_ms is None


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "0.0.0.0", "::",
     "169.254.169.254", "fe80::1", "10.0.0.1", "172.16.5.4", "192.168.0.1", "100.64.0.1",
     "100.127.255.255", "fd00::1", "fc00::1", "224.0.0.1", "ff02::1", "255.255.255.255",
     "2002:7f00:1::1", "2001::1", "64:ff9b::7f00:1", "198.18.0.1", "240.0.0.1", "192.0.0.8"],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert netpolicy.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2a00:1450::1"])
def test_public_addresses_pass(address: str) -> None:
    assert netpolicy.refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_let_a_trusted_internal_service_through() -> None:
    allowed = netpolicy.networks(["10.1.0.0/16", "fd00::/8"])
    assert netpolicy.refusal(ipaddress.ip_address("10.1.2.3"), allowed) is None
    assert netpolicy.refusal(ipaddress.ip_address("fd00::5"), allowed) is None
    assert netpolicy.refusal(ipaddress.ip_address("10.2.0.1"), allowed) is not None
    assert netpolicy.refusal(ipaddress.ip_address("127.0.0.1"), allowed) is not None


JOB = {"type": "sleep", "payload": {"delayMs": 0}}


def test_an_authenticated_submission_takes_the_keys_tenant() -> None:
    config, registry = Config(), build_registry(Config())
    assert parse_submission(JOB, registry, config, "acme").tenant_id == "acme"
    assert parse_submission({**JOB, "tenantId": "acme"}, registry, config, "acme").tenant_id == "acme"
    with pytest.raises(Forbidden, match="tenantId 'other'"):
        parse_submission({**JOB, "tenantId": "other"}, registry, config, "acme")
    with pytest.raises(Forbidden, match=r"jobs\[1\].tenantId"):
        parse_batch({"jobs": [JOB, {**JOB, "tenantId": "other"}]}, registry, config, "acme")
    with pytest.raises(Invalid):  # without auth, tenantId stays required
        parse_submission(JOB, registry, config)


def test_an_authenticated_listing_is_of_the_keys_tenant() -> None:
    assert parse_list_query({}, "acme").tenant == "acme"
    assert parse_list_query({"tenantId": "acme"}, "acme").tenant == "acme"
    with pytest.raises(Forbidden):
        parse_list_query({"tenantId": "other"}, "acme")
    with pytest.raises(Invalid):
        parse_list_query({})
