"""Bastion and replica certificates are renewed before they expire, like agents'.

A joined bastion used to keep its one-year ``bastion/NAME`` certificate until it expired (then
every install failed); a long-running labd replica kept the replica and server certificates it
issued itself at start. Both now renew at 2/3 of the certificate's life.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from lab import pki
from lab.labd.cluster import ClusterMember
from tests.bastion.conftest import start_bastion
from tests.bastion_join.test_join import (
    join_bastion,
    join_token_of,
    operator_client,
    queue_and_fetch_ks,
)
from tests.labd.harness import RunningLabd, running_labd


class Heard(logging.Handler):
    """Sets an event when a record whose message contains ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


@contextmanager
def listening(logger_name: str, text: str) -> Iterator[Heard]:
    logger = logging.getLogger(logger_name)
    heard, level = Heard(text), logger.level
    logger.addHandler(heard)
    logger.setLevel(logging.INFO)
    try:
        yield heard
    finally:
        logger.removeHandler(heard)
        logger.setLevel(level)


async def short_bastion_cert(labd: RunningLabd, link_dir: Path) -> pki.CertInfo:
    """Replace the joined bastion's certificate by one (same key) that is due for renewal."""
    assert labd.context is not None
    key_pem = (link_dir / "key.pem").read_bytes()
    cert_pem, issued = pki.issue_bastion_cert(
        labd.context.ca.signer,
        pki.make_csr(key_pem, "bastion/pxe1"),
        "pxe1",
        lifetime=timedelta(minutes=2),
    )
    await labd.context.store.certificates.record(issued.to_record())
    (link_dir / "cert.pem").write_bytes(cert_pem)
    return pki.cert_info(cert_pem)


async def test_a_joined_bastion_renews_its_certificate(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd, trio.open_nursery() as nursery:
            admin = await labd.admin()
            await join_bastion(labd, admin, tmp_path / "data")
            link_dir = tmp_path / "data" / "labd"
            old = await short_bastion_cert(labd, link_dir)
            with listening("lab.bastion.labd", "renewed") as heard:
                serving = start_bastion(nursery, tmp_path)
                assert isinstance(serving, AsyncGenerator)
                bastion = await anext(serving)
                try:
                    await heard.event.wait()
                    new = pki.cert_info((link_dir / "cert.pem").read_bytes())
                    assert new.subject == "bastion/pxe1" and new.serial != old.serial
                    assert new.not_after > datetime.now(UTC) + timedelta(days=300)
                    # The old certificate is gone from use: revoked, installs still get tokens.
                    async with labd.client(admin) as http:
                        resp = await http.post("/api/certs/revoke", json={"target": old.serial})
                        assert resp.status_code == 200, resp.text
                    assert bastion.operator_url is not None
                    async with operator_client(labd, admin, bastion.operator_url) as ops:
                        bastion.ops = ops
                        ks = await queue_and_fetch_ks(bastion, "52:54:00:aa:00:09", "node9")
                    assert join_token_of(ks).count(".") == 1
                finally:
                    bastion.shutdown.set()
                    await serving.aclose()
            async with labd.client(admin) as http:
                certs = (await http.get("/api/certs")).json()["items"]
            mine = {c["serial"] for c in certs if c["subject"] == "bastion/pxe1"}
            assert new.serial in mine


async def peer_serial(labd: RunningLabd) -> str:
    """The serial of the certificate labd presents on a new TLS connection."""
    stream = await trio.open_ssl_over_tcp_stream(
        labd.host, labd.port, ssl_context=labd.ssl_context(), https_compatible=True
    )
    async with stream:
        await stream.do_handshake()
        der = stream.getpeercert(binary_form=True)
    assert der
    return pki.cert_info(ssl.DER_cert_to_PEM_cert(der).encode()).serial


async def test_a_long_running_replica_renews_its_certificates(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_labd(tmp_path) as labd:
            c = labd.context
            assert c is not None
            member = ClusterMember(
                c.store,
                c.ca,
                c.revocations,
                "replica-b",
                cert_lifetime=timedelta(minutes=2),
                min_renew_interval=0.2,
            )
            await member.issue_certificate()
            first, first_context = member.cert_serial, member.client_ssl_context()
            server_before = await peer_serial(labd)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(member.run, stop, "https://127.0.0.1:1")
                await member.wait_renewed()
                stop.set()
            assert member.cert_serial != first
            assert member.client_ssl_context() is not first_context
            recorded = await c.store.certificates.get(member.cert_serial)
            assert recorded.subject == "replica/replica-b"
            # labd's own server certificate was issued afresh with it.
            assert await peer_serial(labd) != server_before
