"""Request ids: in labd's answers, its log records and its audit entries, in both log formats."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import trio

from lab import pki
from lab.runtime.logbuffer import LogBuffer, attached
from lab.runtime.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    begin_request,
    request_id_var,
    sane_request_id,
)
from tests.labd.harness import Credentials, running_labd


def test_only_plain_tokens_are_kept() -> None:
    assert sane_request_id("4bf92f3577b34da6a3ce929d0e0e4736") is not None
    assert sane_request_id("req-42:retry.1") == "req-42:retry.1"
    for bad in (None, "", "two words", "x" * 129, "caf\u00e9", "a\nb", "-leading"):
        assert sane_request_id(bad) is None


def test_both_formats_show_the_id_of_the_request_being_handled() -> None:
    record = logging.LogRecord("lab.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    outside = logging.LogRecord("lab.x", logging.INFO, __file__, 1, "bye", None, None)
    token = request_id_var.set(None)
    try:
        assert RequestIdFilter().filter(outside)
        rid = begin_request("abc-1")
        assert RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert rid == "abc-1"
    assert TextFormatter().format(record).endswith("INFO lab.x: [rid=abc-1] hello you")
    assert json.loads(JsonFormatter().format(record))["request_id"] == "abc-1"
    assert "rid=" not in TextFormatter().format(outside)
    assert "request_id" not in json.loads(JsonFormatter().format(outside))


async def test_labd_echoes_or_makes_the_id_and_logs_and_audits_with_it(tmp_path: Path) -> None:
    logger = logging.getLogger("lab.labd")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with trio.fail_after(60), attached(LogBuffer(), logger) as logs:
            async with running_labd(tmp_path) as labd:
                key = pki.generate_key()
                body = {
                    "token": labd.bootstrap_token(),
                    "csr": pki.make_csr(key, "x").decode(),
                    "username": "admin",
                }
                async with labd.client() as http:
                    resp = await http.post(
                        "/api/auth/user-enroll", json=body, headers={"X-Request-Id": "enroll-1"}
                    )
                    assert resp.status_code == 201, resp.text
                    assert resp.headers["x-request-id"] == "enroll-1"
                    refused = await http.get("/api/users", headers={"X-Request-Id": "bad id"})
                    assert refused.status_code == 401
                    generated = refused.headers["x-request-id"]
                    assert sane_request_id(generated) == generated != "bad id"
                    other = await http.get("/healthz")
                    assert other.headers["x-request-id"] not in ("", generated)
                admin = Credentials(
                    key_pem=key,
                    cert_pem=resp.json()["certificate"].encode(),
                    subject="user/admin",
                )
                async with labd.client(admin) as http:
                    audit = await http.get("/api/audit")
                    assert audit.status_code == 200, audit.text
    finally:
        logger.setLevel(level)
    enrolled = [e for e in logs.tail() if e["message"].startswith("enrolled user/admin")]
    assert enrolled and enrolled[0]["request_id"] == "enroll-1"
    ids = {e["action"]: e["details"].get("request_id") for e in audit.json()["items"]}
    assert ids["auth:user-enroll"] == "enroll-1"
    assert ids["users:list"] == generated
