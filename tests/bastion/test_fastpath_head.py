"""The /dispatch head parser, pure: what it takes, what it leaves for more bytes, and what it
hands to hypercorn (a strict subset of HTTP/1.1; every boundary on both sides)."""

from __future__ import annotations

import pytest

from lab.bastion.fastpath import HAND_OFF, MAX_HEAD, Dispatch, parse_head

MAC = "52:54:00:ab:cd:ef"
GET = f"GET /dispatch?mac={MAC} HTTP/1.1\r\nHost: b\r\n\r\n".encode()


def test_a_dispatch_head_is_taken_with_its_size_and_options() -> None:
    assert parse_head(GET + b"GET /next") == Dispatch(MAC, len(GET), False, None)
    # pipelined: the first head alone
    assert parse_head(GET + GET + GET) == Dispatch(MAC, len(GET), False, None)
    head = (
        b"GET /dispatch?x=1&mac=52-54-00-AB-CD-EF&mac=zz HTTP/1.1\r\nhost:b\r\n"
        b"Connection: keep-alive, Close\r\nX-Request-Id:  pxe-7 \r\nUser-Agent: iPXE/1.0\r\n\r\n"
    )
    assert parse_head(head) == Dispatch(MAC, len(head), True, "pxe-7")


@pytest.mark.parametrize("size", [0, 5, 14, 30, len(GET) - 1])
def test_an_incomplete_head_asks_for_more(size: int) -> None:
    assert parse_head(GET[:size]) is None


@pytest.mark.parametrize(
    "head",
    [
        b"POST /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\n\r\n",
        b"HEAD /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET /dispatchx?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.0\r\nHost: b\r\n\r\n",
        b"GET /dispatch?mac=zz HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET /dispatch?mac=zz&mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET /dispatch?other=1 HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\nHost: c\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: x\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\nExpect: 100-continue\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\n folded\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nBad Name: b\r\nHost: b\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\x00\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\nHost: b\n\n",
        b"\x16\x03\x01\x02\x00",
    ],
)
def test_anything_else_goes_to_hypercorn(head: bytes) -> None:
    assert parse_head(head) is HAND_OFF


def test_an_endless_head_goes_to_hypercorn() -> None:
    endless = GET[:-2] + b"X-Filler: " + b"a" * 9000
    assert parse_head(endless) is HAND_OFF
    assert parse_head(GET[:-2] + b"X-Filler: " + b"a" * 9000 + b"\r\n\r\n") is HAND_OFF


def _filled(size: int) -> bytes:
    """A /dispatch head exactly ``size`` bytes long (a filler header makes up the length)."""
    head = GET[:-2] + b"X-Filler: " + b"a" * (size - len(GET) - 12) + b"\r\n\r\n"
    assert len(head) == size
    return head


def test_the_head_limit_is_exact_and_the_same_however_the_bytes_arrive() -> None:
    """A head of MAX_HEAD bytes is taken, one byte more is hypercorn's: whole or in pieces
    (the verdict never depends on where the reads split the head)."""
    fits, over = _filled(MAX_HEAD), _filled(MAX_HEAD + 1)
    assert parse_head(fits) == Dispatch(MAC, MAX_HEAD, False, None)
    assert parse_head(over) is HAND_OFF
    for cut in range(MAX_HEAD - 4, MAX_HEAD):
        assert parse_head(fits[:cut]) is None, cut
    assert parse_head(over[: MAX_HEAD - 1]) is None
    assert parse_head(over[:MAX_HEAD]) is HAND_OFF


@pytest.mark.parametrize(
    "head",
    [
        GET + b"GET /next",
        GET.replace(b"Host: b", b"Host: b\r\nConnection: close"),
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\nX: y\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\nUpgrade: h2c\r\n\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\nHost: b\r\n\n",
        b"GET /dispatch HTTP/1.1\r\nHost: b\r\n\r\n",
    ],
)
def test_every_prefix_asks_for_more_or_agrees_with_the_whole(head: bytes) -> None:
    whole = parse_head(head)
    assert whole is not None
    for cut in range(len(head)):
        assert parse_head(head[:cut]) in (None, whole), cut


def test_a_bare_lf_before_the_end_hands_off_at_once() -> None:
    """h11 ends lines at a bare LF, so such a head would never end here: not waited for."""
    assert parse_head(b"GET /dispatch?mac=x HTTP/1.1\n") is HAND_OFF
    assert parse_head(b"GET /dispatch?mac=x HTTP/1.1\r\nHost: b\n") is HAND_OFF
    assert parse_head(b"GET /dispatch?mac=x HTTP/1.1\r\nHost: b\r\n\r") is None


@pytest.mark.parametrize(
    "field",
    [
        b"Content-Length: 0",
        b"content-LENGTH: 0",
        b"Transfer-Encoding: chunked",
        b"Upgrade: h2c",
        b"Expect: 100-continue",
        b"Connection: keep-alive ,  UPGRADE",
        b"Host: c",
        b"Host:",
        b": empty-name",
        b"Host: b\rc",
        b"X-Note: a\x7fb",
        b"X-Note : spaced-name",
        b"X(Note): bad-name",
    ],
)
def test_each_refused_field_hands_off(field: bytes) -> None:
    head = GET.replace(b"Host: b\r\n", b"Host: b\r\n" + field + b"\r\n")
    assert parse_head(head) is HAND_OFF


@pytest.mark.parametrize(
    ("fields", "close", "rid"),
    [
        (b"Connection: close\r\nConnection: keep-alive", True, None),
        (b"Connection: keep-alive\r\nConnection: close", True, None),
        (b"Connection: keep-alive, closed", False, None),
        (b"Connection: keep-alive,close", True, None),
        (b"CONNECTION:\tclose\t", True, None),
        (b"X-Request-Id: \t\xe9t\xe9 \t", False, "\xe9t\xe9"),
        (b"x-request-id: a b", False, "a b"),
        (b"X-Request-Id: a\tb", False, "a\tb"),
        (b"X-Request-Id: first\r\nX-Request-Id: last", False, "last"),
        (b"X-Request-Id:", False, ""),
        (b"X-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\nX-Obs: \x80\xff", False, None),
        (b"Via: 1.1 a\r\n!#$%&'*+.^_`|~09AZaz-: tchars", False, None),
    ],
)
def test_taken_fields(fields: bytes, close: bool, rid: str | None) -> None:
    head = GET.replace(b"Host: b\r\n", b"Host: b\r\n" + fields + b"\r\n")
    assert parse_head(head) == Dispatch(MAC, len(head), close, rid)


@pytest.mark.parametrize(
    ("query", "taken"),
    [
        (b"mac=52%3A54%3A00%3Aab%3Acd%3Aef", True),
        (b"MAC=zz&mac=52:54:00:ab:cd:ef", True),
        (b"mac=52:54:00:ab:cd:ef&mac=", True),
        (b"mac=&mac=52:54:00:ab:cd:ef", False),  # the app reads the first, blank, one
        (b"mac", False),
        (b"", False),
    ],
)
def test_the_first_mac_decides(query: bytes, taken: bool) -> None:
    head = b"GET /dispatch?" + query + b" HTTP/1.1\r\nHost: b\r\n\r\n"
    expected = Dispatch(MAC, len(head), False, None) if taken else HAND_OFF
    assert parse_head(head) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1 \r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef  HTTP/1.1\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.10\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1x1\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef\xff HTTP/1.1\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\r\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\n",
        b"GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.0\r\n"
        b"X: GET /dispatch?mac=52:54:00:ab:cd:ef HTTP/1.1\r\n",
    ],
)
def test_a_request_line_off_the_strict_form_hands_off(line: bytes) -> None:
    assert parse_head(line + b"Host: b\r\n\r\n") is HAND_OFF


@pytest.mark.parametrize("start", [b"POST /", b"GET /h", b"GET /dispatchx", b"GET  ", b"G\x00"])
def test_another_request_is_handed_off_from_its_first_differing_byte(start: bytes) -> None:
    assert parse_head(start) is HAND_OFF
