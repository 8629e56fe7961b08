"""The /dispatch fast path and the caches behind it answer exactly what the store says."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from lab.bastion.app import DispatchFastPath, create_app
from lab.bastion.cache import MISS, BoundedLRU, MachineCache
from lab.bastion.service import Bastion
from lab.bastion.templates import Templates
from lab.errors import Unavailable
from lab.model import Machine, MachineState
from lab.store import MachineRepository, open_store
from tests.bastion.conftest import Running

MAC = "52:54:00:ab:cd:ef"
OTHER = "52:54:00:ab:cd:01"


def _templates() -> Templates:
    return Templates(base_url="http://10.0.0.1:8080", repo="http://m.test/os")


# --- the caches, pure ---------------------------------------------------------------------------


def test_lru_forgets_the_least_recently_used() -> None:
    lru: BoundedLRU[str, int] = BoundedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "b" is now the oldest
    lru.put("c", 3)
    assert lru.get("b") is MISS
    assert (lru.get("a"), lru.get("c"), len(lru)) == (1, 3, 2)


def test_a_read_that_overlapped_a_write_is_not_kept() -> None:
    cache = MachineCache()
    row = Machine(mac=MAC)
    ticket = cache.ticket()
    with cache.writing(OTHER):
        assert cache.ticket() is None  # no read may fill while a write is in flight
        cache.committed(OTHER, None)
    cache.fill(MAC, row, ticket)
    assert cache.get(MAC) is MISS
    cache.fill(MAC, row, cache.ticket())
    assert cache.get(MAC) == row


def test_a_write_of_unknown_outcome_forgets_the_row_and_the_names() -> None:
    cache = MachineCache()
    named = Machine(mac=MAC, hostname="n1")
    cache.load_names([named], cache.ticket())
    cache.fill(MAC, named, cache.ticket())
    assert cache.hostname_owners("n1") == {MAC}
    with pytest.raises(RuntimeError), cache.writing(MAC):
        raise RuntimeError("the thread died mid-commit")
    assert cache.get(MAC) is MISS
    assert cache.hostname_owners("n1") is None


def test_committed_writes_move_hostnames() -> None:
    cache = MachineCache()
    cache.load_names([], cache.ticket())
    with cache.writing(MAC):
        cache.committed(MAC, Machine(mac=MAC, hostname="n1"))
    with cache.writing(MAC):
        cache.committed(MAC, Machine(mac=MAC, hostname="n2"))
    assert (cache.hostname_owners("n1"), cache.hostname_owners("n2")) == (set(), {MAC})
    with cache.writing(MAC):
        cache.committed(MAC, None)
    assert cache.hostname_owners("n2") == set()
    assert cache.get(MAC) is None  # known absent


# --- the bastion over a real store, with a repository that can fail at the seam ---------------


@attrs.define
class Flaky:
    """The real repository, except that the next ``upsert`` raises after it committed."""

    inner: MachineRepository
    fail_after_commit: bool = False
    reads: int = 0

    async def upsert(self, machine: Machine) -> Machine:
        saved = await self.inner.upsert(machine)
        if self.fail_after_commit:
            self.fail_after_commit = False
            raise Unavailable("the commit went through, but nobody heard")
        return saved

    async def get(self, mac: str) -> Machine:
        self.reads += 1
        return await self.inner.get(mac)

    async def list(self, *, state: MachineState | None = None) -> list[Machine]:
        return await self.inner.list(state=state)

    async def delete(self, mac: str) -> None:
        await self.inner.delete(mac)


async def test_dispatch_reads_the_store_once_per_machine_and_after_a_lost_write(
    tmp_path: Path,
) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'b.db'}") as store:
        machines = Flaky(store.machines)
        b = Bastion(machines, store.settings, _templates())
        await b.start()
        for _ in range(3):
            assert "discovering" in await b.dispatch(MAC)
        assert machines.reads == 1
        await b.install({"mac": MAC, "hostname": "n1", "role": "worker"})
        script = await b.dispatch(MAC)
        token = script.split("token=")[1].split()[0]
        machines.fail_after_commit = True
        with pytest.raises(Unavailable):
            await b.progress({"mac": MAC, "phase": "post", "percent": 100}, token)
        # The write's outcome was unknown to the bastion: the store is asked, and it says
        # the install finished.
        reads = machines.reads
        assert "is installed, booting from local disk" in await b.dispatch(MAC)
        assert machines.reads == reads + 1


async def test_hostnames_stay_unique_across_forget_and_lost_writes(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'b.db'}") as store:
        machines = Flaky(store.machines)
        b = Bastion(machines, store.settings, _templates())
        await b.start()
        await b.install({"mac": MAC, "hostname": "n1", "role": "worker"})
        with pytest.raises(Exception, match=f"already used by {MAC}"):
            await b.install({"mac": OTHER, "hostname": "n1", "role": "worker"})
        machines.fail_after_commit = True
        with pytest.raises(Unavailable):
            await b.install({"mac": OTHER, "hostname": "n2", "role": "worker"})
        # Committed although it raised: n2 is taken, and the bastion finds out from the store.
        with pytest.raises(Exception, match=f"already used by {OTHER}"):
            await b.install({"mac": "52:54:00:ab:cd:02", "hostname": "n2", "role": "worker"})
        await b.forget(MAC)
        assert (
            await b.install({"mac": OTHER, "hostname": "n1", "role": "worker"})
        ).hostname == "n1"


# --- the ASGI fast path -------------------------------------------------------------------------


async def test_quart_still_answers_what_the_fast_path_leaves(bastion: Running) -> None:
    c = bastion.client
    get = await c.get(f"{bastion.url}/dispatch?mac={MAC}")
    head = await c.head(f"{bastion.url}/dispatch?mac={MAC}")
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(get.content)))
    assert head.headers["content-type"] == get.headers["content-type"]
    # Like request.args: the first "mac" counts, whether it is good or bad.
    first_good = await c.get(f"{bastion.url}/dispatch?mac={MAC}&mac=zz")
    assert first_good.status_code == 200 and f"mac={MAC}&" in first_good.text
    first_bad = await c.get(f"{bastion.url}/dispatch?mac=zz&mac={MAC}")
    assert first_bad.status_code == 400 and first_bad.json()["error"]["code"] == "invalid"
    assert (await c.get(f"{bastion.url}/dispatch?mac=")).status_code == 400
    assert (await c.post(f"{bastion.url}/dispatch?mac={MAC}")).status_code == 405


@attrs.define
class Broken:
    error: Exception

    async def get(self, mac: str) -> Machine:
        raise self.error

    async def upsert(self, machine: Machine) -> Machine:
        raise self.error

    async def list(self, *, state: MachineState | None = None) -> list[Machine]:
        raise self.error

    async def delete(self, mac: str) -> None:
        raise self.error


async def _asgi_get(app: Any, target: str) -> tuple[int, dict[bytes, bytes], bytes]:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"bastion")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
        "extensions": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (Unavailable("database is locked"), 503, "unavailable"),
        (RuntimeError("bug"), 500, "internal"),
    ],
)
async def test_fast_path_errors_are_the_apps_envelopes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: Exception, status: int, code: str
) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'b.db'}") as store:
        b = Bastion(Broken(error), store.settings, _templates())
        app = create_app(b, admin_token="t", wheelhouse=tmp_path / "wh")
        with trio.fail_after(10), caplog.at_level(logging.ERROR, "lab.bastion.http"):
            got, headers, body = await _asgi_get(DispatchFastPath(app, b), f"/dispatch?mac={MAC}")
        assert (got, headers[b"content-type"]) == (status, b"application/json")
        assert headers[b"content-length"] == str(len(body)).encode()
        assert f'"code":"{code}"'.encode() in body
        assert ("unhandled error" in caplog.messages) is (status == 500)
