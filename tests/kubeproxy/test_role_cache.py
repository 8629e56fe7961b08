"""The proxy keeps a user's roles between requests (lab.labd.identity.rolecache): a change made
through labd reaches the very next request, whatever the cache's lifetime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import trio
import trio.testing

from lab.labd.identity.rolecache import RoleCache
from lab.model import Role
from tests.kube.kmock_server import KubeAPI
from tests.kubeproxy.conftest import recording_api  # noqa: F401 - the fixture
from tests.kubeproxy.rig import ProxyRig, proxy_rig, raw_request
from tests.labd.harness import Credentials

PODS = "/k8s/home/api/v1/namespaces/default/pods"
READ = [("allow", "kube:list", "cluster/home/namespace/default/pods")]


async def status_of(rig: ProxyRig, who: Credentials) -> int:
    answer = await raw_request(rig.labd, who, "GET", PODS)
    return answer.status


async def post(rig: ProxyRig, path: str, json: Mapping[str, object]) -> None:
    async with rig.labd.client(rig.admin) as http:
        resp = await http.post(path, json=json)
    assert resp.status_code < 300, resp.text


async def test_a_revoked_grant_is_refused_on_the_next_request(
    tmp_path: Path,
    recording_api: KubeAPI,  # noqa: F811
) -> None:
    with trio.fail_after(120):
        async with proxy_rig(tmp_path, {"home": recording_api}) as rig:
            assert rig.labd.context is not None
            cache = rig.labd.context.identities.role_cache
            cache.ttl = 3600.0  # only the changes themselves may empty it here
            await rig.role("podreader", READ)
            await rig.role("other", [])
            vera = await rig.user("vera", "podreader")
            assert [await status_of(rig, vera) for _ in range(2)] == [200, 200]

            # A rule removed from the role.
            rule = {"effect": "allow", "action": "kube:list", "resource": READ[0][2]}
            await post(rig, "/api/roles/podreader/rules/remove", rule)
            assert await status_of(rig, vera) == 403
            await post(rig, "/api/roles/podreader/rules", rule)
            assert await status_of(rig, vera) == 200

            # The role taken from the user.
            await post(rig, "/api/users/vera/grant", {"roles": ["other"]})
            await post(rig, "/api/users/vera/ungrant", {"roles": ["podreader"]})
            assert await status_of(rig, vera) == 403
            await post(rig, "/api/users/vera/grant", {"roles": ["podreader"]})
            assert await status_of(rig, vera) == 200

            # The user disabled (its certificates are revoked too: 401 either way).
            await post(rig, "/api/users/vera/disable", {})
            assert await status_of(rig, vera) in (401, 403)


def role(name: str) -> Role:
    return Role(name=name)


async def test_a_read_under_way_when_roles_change_is_not_kept() -> None:
    loads: list[str] = []
    release = trio.Event()
    answers = {"old": (role("old"),), "new": (role("new"),)}
    current = ["old"]

    async def load(name: str) -> tuple[Role, ...]:
        loads.append(name)
        got = answers[current[0]]
        await release.wait()
        return got

    cache = RoleCache(load, ttl=3600.0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            seen: list[tuple[Role, ...]] = []

            async def read() -> None:
                seen.append(await cache.roles("vera"))

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            current[0] = "new"
            cache.forget()  # the change lands while the old read is under way
            release.set()
        assert seen == [answers["old"]]
        assert await cache.roles("vera") == answers["new"]
        assert await cache.roles("vera") == answers["new"]
    assert loads == ["vera", "vera"]


async def test_roles_are_read_again_after_the_ttl_and_refusals_are_not_kept() -> None:
    now = [0.0]
    calls: list[str] = []
    refuse = {"ghost"}

    async def load(name: str) -> tuple[Role, ...]:
        calls.append(name)
        await trio.lowlevel.checkpoint()
        if name in refuse:
            raise PermissionError(name)
        return (role(f"r{len(calls)}"),)

    cache = RoleCache(load, ttl=5.0, clock=lambda: now[0])
    first = await cache.roles("vera")
    now[0] = 4.9
    assert await cache.roles("vera") == first
    now[0] = 5.0
    assert await cache.roles("vera") != first
    for _ in range(2):
        with pytest.raises(PermissionError):
            await cache.roles("ghost")
    assert calls == ["vera", "vera", "ghost", "ghost"]


async def test_the_oldest_user_is_forgotten_past_the_size() -> None:
    calls: list[str] = []

    async def load(name: str) -> tuple[Role, ...]:
        calls.append(name)
        await trio.lowlevel.checkpoint()
        return (role(name),)

    cache = RoleCache(load, ttl=3600.0, size=2)
    for name in ("a", "b", "c", "b", "a"):
        await cache.roles(name)
    assert calls == ["a", "b", "c", "a"]
