"""Run commands on a cluster node through its agent: labd's exec path, argv lists only.

The same way in as ``labctl exec`` and the agent power driver (the hub, or the replica that
holds the agent's connection). Secrets (tokens, keys, kubeconfigs) travel only on stdin or
stdout, never in argv; a command marked ``secret`` keeps its output out of error messages.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import TYPE_CHECKING

import trio
from attrs import frozen

from lab.errors import Conflict, Unavailable
from lab.labd.clusterops.render import NodePaths
from lab.labd.relay.relay import current_hub
from lab.proto import DataFrame
from lab.proto.frames import Channel
from lab.proto.messages import Credit, Error, ExecExit, ExecStart, StdinClose

if TYPE_CHECKING:
    from lab.labd.context import LabdContext

# Output kept per command: enough for a kubeconfig or a preflight report.
OUTPUT_CAP = 1024 * 1024
STDIN_CHUNK = 64 * 1024


class StepFailed(Conflict):
    """A step's command failed on a node; the message says which and why."""


@frozen(kw_only=True)
class Ran:
    code: int
    out: bytes
    err: bytes

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", errors="replace")


def _tail(data: bytes, limit: int = 300) -> str:
    text = " ".join(data.decode("utf-8", errors="replace").split())
    return text[-limit:]


class NodeShell:
    """One node, reached through its agent. ``exec_path`` is the PATH its commands get
    (``cluster_exec_path``); ``paths`` are k3s's files under the node root."""

    def __init__(
        self, context: LabdContext, node: str, *, exec_path: str, paths: NodePaths
    ) -> None:
        self.context = context
        self.node = node
        self.exec_path = exec_path
        self.paths = paths

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | AsyncIterable[bytes] | None = None,
        limit: float = 120.0,
    ) -> Ran:
        """Run ``argv`` on the node; its exit code and output (each capped at 1 MiB).

        Raises :class:`Unavailable` when the agent is not connected or drops (the step fails
        with the node's name and may be resumed) and :class:`StepFailed` when the agent could
        not start the program. Cancelled, the remote process group is killed.
        """
        env = {"PATH": self.exec_path} if self.exec_path else {}
        start = ExecStart(
            stream_id=1, argv=list(argv), env=env, stdin=stdin is not None, timeout=limit
        )
        out = bytearray()
        err = bytearray()
        ended: ExecExit | Error | None = None
        with trio.move_on_after(limit + 10) as deadline:
            async with (
                current_hub(self.context).agent_stream(self.node, start) as stream,
                trio.open_nursery() as nursery,
            ):
                if stdin is not None:

                    async def feed() -> None:
                        async for chunk in _chunks(stdin):
                            await stream.send(chunk)
                        await stream.send(StdinClose(stream_id=1))

                    nursery.start_soon(feed)
                async for item in stream:
                    if isinstance(item, DataFrame):
                        sink = out if item.channel == Channel.STDOUT else err
                        sink += item.payload[: max(0, OUTPUT_CAP - len(sink))]
                        await stream.send(Credit(stream_id=1, bytes=len(item.payload)))
                    elif isinstance(item, ExecExit | Error):
                        ended = item
                        break
                nursery.cancel_scope.cancel()
        if isinstance(ended, ExecExit):
            code = ended.code if ended.code is not None else 128
            return Ran(code=code, out=bytes(out), err=bytes(err))
        if isinstance(ended, Error):
            if ended.code == "unavailable":
                raise Unavailable(
                    f"the agent of server/{self.node} dropped while running {argv[0]}:"
                    f" {ended.message}"
                )
            raise StepFailed(f"server/{self.node} could not run {argv[0]}: {ended.message}")
        if not deadline.cancelled_caught:
            raise Unavailable(f"the agent of server/{self.node} dropped running {argv[0]}")
        raise Unavailable(f"{argv[0]} on server/{self.node} did not finish within {limit:g}s")

    async def check(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | AsyncIterable[bytes] | None = None,
        limit: float = 120.0,
        secret: bool = False,
    ) -> Ran:
        """:meth:`run`, and :class:`StepFailed` naming the node and command on a non-zero exit
        (with the end of its stderr, and of its stdout unless ``secret``)."""
        ran = await self.run(argv, stdin=stdin, limit=limit)
        if ran.code != 0:
            said = _tail(ran.err) or ("" if secret else _tail(ran.out))
            raise StepFailed(
                f"{posixpath.basename(argv[0])} exited {ran.code} on server/{self.node}"
                + (f": {said}" if said else "")
            )
        return ran

    async def write_file(self, path: str, data: bytes, *, mode: str = "0600") -> None:
        """Write ``data`` to ``path`` atomically (a temporary file renamed over it); the
        content goes on stdin, so a secret in it never reaches argv or a log."""
        await self.write_stream(path, _chunks(data), mode=mode)

    async def write_stream(
        self, path: str, data: AsyncIterable[bytes], *, mode: str = "0600"
    ) -> None:
        """:meth:`write_file` for content that arrives in chunks (an artifact).

        GNU install creates the missing directories (``-D``) and the file owner-only until
        it sets ``mode``, so a secret is never readable by others on the way.
        """
        tmp = f"{path}.labctl-tmp"
        await self.check(
            ["install", "-D", "-m", mode, "/dev/stdin", tmp], stdin=data, secret=True, limit=3600
        )
        await self.check(["mv", "-f", tmp, path])

    async def read_file(self, path: str, *, secret: bool = True) -> bytes:
        return (await self.check(["cat", path], secret=secret)).out


async def _chunks(data: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(data, bytes):
        for i in range(0, len(data), STDIN_CHUNK):
            yield data[i : i + STDIN_CHUNK]
    else:
        async for chunk in data:
            for i in range(0, len(chunk), STDIN_CHUNK):
                yield chunk[i : i + STDIN_CHUNK]
