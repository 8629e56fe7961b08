"""Just enough of SPDY/3 (draft-mbelshe-httpbis-spdy-00) to be the server end of
``kubectl exec`` over SPDY/3.1 with the ``v4.channel.k8s.io`` protocol, for tests.

The header blocks are zlib streams primed with the protocol's fixed dictionary; it is read from
the kubectl binary itself (the same constant every SPDY implementation carries), so this module
holds no copy of it. Frames: SYN_STREAM in (each answered with SYN_REPLY), SYN_REPLY and DATA
out, DATA in (FIN ends a stream), PING echoed; SETTINGS, WINDOW_UPDATE and the rest ignored.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from functools import cache

import trio

SYN_STREAM, SYN_REPLY, PING, GOAWAY = 1, 2, 6, 7
FLAG_FIN = 0x01
_DICT_START = b"\x00\x00\x00\x07options\x00\x00\x00\x04head"
_DICT_END = b",enq=0."


@cache
def dictionary(kubectl: str = "/usr/bin/kubectl") -> bytes:
    with open(os.path.realpath(kubectl), "rb") as binary:
        data = binary.read()
    start = data.index(_DICT_START)
    end = data.index(_DICT_END, start) + len(_DICT_END)
    return data[start:end]


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | 3, kind, (flags << 24) | len(payload)) + payload


def _data(stream_id: int, payload: bytes, *, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id, ((FLAG_FIN if fin else 0) << 24) | len(payload)) + payload


def _status(code: int) -> bytes:
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    ).encode()


class ExecSession:
    """The server end of one kubectl exec: streams by type, stdin lines echoed upper-cased on
    stdout, ``exit N`` (or stdin's FIN: 0) ends it with the Status on the error stream."""

    def __init__(self, stream: trio.abc.Stream, command: str) -> None:
        self.stream = stream
        self.command = command
        self.inflate = zlib.decompressobj(zdict=dictionary())
        self.deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                                        zlib.Z_DEFAULT_STRATEGY, dictionary())  # fmt: skip
        self.types: dict[int, str] = {}
        self.ids: dict[str, int] = {}
        self.buffer = b""
        self.stdin = b""
        self.greeted = False

    def _headers(self, block: bytes) -> dict[str, str]:
        raw = self.inflate.decompress(block)
        (count,), pos, out = struct.unpack_from(">I", raw), 4, {}
        for _ in range(count):
            (size,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4 : pos + 4 + size].decode()
            pos += 4 + size
            (size,) = struct.unpack_from(">I", raw, pos)
            out[name] = raw[pos + 4 : pos + 4 + size].decode()
            pos += 4 + size
        return out

    def _empty_headers(self) -> bytes:
        return self.deflate.compress(b"\x00\x00\x00\x00") + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    async def run(self, leftover: bytes) -> None:
        self.buffer = leftover
        while True:
            code = await self._frames()
            if code is not None:
                await self._finish(code)
                return
            data = await self.stream.receive_some(65536)
            if not data:
                return
            self.buffer += data

    async def _frames(self) -> int | None:
        while len(self.buffer) >= 8:
            first, second = struct.unpack_from(">II", self.buffer)
            length = second & 0xFFFFFF
            if len(self.buffer) < 8 + length:
                return None
            payload, self.buffer = self.buffer[8 : 8 + length], self.buffer[8 + length :]
            flags = second >> 24
            if first & 0x80000000:
                code = await self._control((first >> 16) & 0x7FFF, first & 0xFFFF, payload)
            else:
                code = await self._stream_data(first & 0x7FFFFFFF, payload, flags)
            if code is not None:
                return code
        return None

    async def _control(self, version: int, kind: int, payload: bytes) -> int | None:
        if kind == SYN_STREAM:
            (stream_id,) = struct.unpack_from(">I", payload)
            stream_id &= 0x7FFFFFFF
            kind_name = self._headers(payload[10:]).get("streamtype", "")
            self.types[stream_id], self.ids[kind_name] = kind_name, stream_id
            reply = struct.pack(">I", stream_id) + self._empty_headers()
            await self.stream.send_all(_control(SYN_REPLY, 0, reply))
            if not self.greeted and "stdout" in self.ids and "error" in self.ids:
                self.greeted = True
                out = f"ran: {self.command}\n".encode()
                await self.stream.send_all(_data(self.ids["stdout"], out))
        elif kind == PING:
            await self.stream.send_all(_control(PING, 0, payload))
        return None

    async def _stream_data(self, stream_id: int, payload: bytes, flags: int) -> int | None:
        if self.types.get(stream_id) != "stdin":
            return None
        self.stdin += payload
        while b"\n" in self.stdin:
            line, self.stdin = self.stdin.split(b"\n", 1)
            if line.startswith(b"exit "):
                return int(line.split()[1])
            await self.stream.send_all(_data(self.ids["stdout"], line.upper() + b"\n"))
        return 0 if flags & FLAG_FIN else None

    async def _finish(self, code: int) -> None:
        await self.stream.send_all(_data(self.ids["error"], _status(code), fin=True))
        for kind in ("stdout", "stderr"):
            if kind in self.ids:
                await self.stream.send_all(_data(self.ids[kind], b"", fin=True))
        await self.stream.send_all(_control(GOAWAY, 0, struct.pack(">II", 0, 0)))


class ForwardSession(ExecSession):
    """The server end of ``kubectl port-forward`` (``portforward.k8s.io`` over SPDY): what a
    data stream carries is echoed back on it behind ``echo:``, as an echo server in the pod
    would; it runs until the client closes."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream, "")
        self.greeted = True  # no stdout greeting

    async def _stream_data(self, stream_id: int, payload: bytes, flags: int) -> int | None:
        if self.types.get(stream_id) == "data" and payload:
            await self.stream.send_all(_data(stream_id, b"echo:" + payload))
        return None
