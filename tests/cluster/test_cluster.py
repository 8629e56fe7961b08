"""Two labd replicas on one PostgreSQL, agents on each, labctl on one: the cluster story."""

from __future__ import annotations

import time

import pytest

from tests.cluster.rig import ClusterRig

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REVOCATION_BOUND = 5.0
FAILOVER_BOUND = 30.0


def test_two_replicas_forward_propagate_and_fail_over(rig: ClusterRig) -> None:
    rig.start_replica("a")
    rig.start_replica("b")
    rig.login("a")
    replicas = rig.labctl_json("get", "servers")  # the admin works against A
    assert replicas == []

    # A token created on A enrolls on B (both replicas read the same database and CA).
    rig.start_agent("n1", rig.agent_token(), enroll_on="a", servers=["a", "b"])
    rig.start_agent("n2", rig.agent_token(), enroll_on="b", servers=["b", "a"])
    rig.wait_held("n1", "a")
    rig.wait_held("n2", "b")

    # labctl talks to A; n2's connection is on B: A forwards the stream to B.
    out = rig.labctl("exec", "server/n2", "--", "sh", "-c", "echo forwarded from $(hostname)")
    assert "forwarded from" in out
    done = rig.run(
        [*_labctl(), "exec", "server/n2", "--", "sh", "-c", "echo err >&2; exit 7"],
        rig.env(),
        expect=7,
    )
    assert "err" in done.stderr
    big = rig.labctl(
        "exec", "server/n2", "--", "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"
    )
    assert len(big) == 3_000_000 and set(big) == {"x"}
    # Those three streams ended cleanly one after the other: A kept its link to B for the next.
    links = rig.daemons.logs["labd-b"].read_text().count("forwarding link from replica/a opened")
    assert links == 1, rig.logs()
    # stdin crosses both hops, and the reverse direction (B forwarding to A) works too.
    piped = rig.run(
        [*_labctl(), "exec", "-i", "server/n1", "--", "wc", "-c"],
        rig.env("b"),
        stdin="y" * 700_000,
    )
    assert piped.stdout.strip() == "700000"

    # Revoking on A closes a session held by B within seconds.
    rig.start_agent("n3", rig.agent_token(), enroll_on="b", servers=["b"])
    rig.wait_held("n3", "b")
    rig.labctl("certs", "revoke", "server/n3")
    revoked_at = time.monotonic()

    def n3_offline() -> bool | None:
        return True if rig.servers()["n3"]["status"] == "offline" else None

    rig.wait_for("n3 disconnected by B", n3_offline, REVOCATION_BOUND + 5)
    took = time.monotonic() - revoked_at
    print(f"revocation reached B after {took:.2f} s")
    assert took < REVOCATION_BOUND, f"the revocation reached B after {took:.1f} s"

    # B dies: its agent moves to A, whose exec then runs locally.
    rig.kill("labd-b")
    moved = rig.wait_held("n2", "a", timeout=FAILOVER_BOUND)
    print(f"n2 online on A {moved:.2f} s after B was killed")
    assert moved < FAILOVER_BOUND
    assert "again" in rig.labctl("exec", "server/n2", "--", "echo", "again")

    # Every replica appended to one audit chain; it verifies.
    # (n2's enrollment was written by B, n1's by A, the execs by A.)
    verify = rig.labctl_json("audit", "verify")
    assert verify["ok"] and verify["checked"] > 10, verify


def _labctl() -> list[str]:
    from tests.smoke.smoke import LABCTL

    return list(LABCTL)
