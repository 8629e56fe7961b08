"""labctl artifacts: files labd keeps for the agents (k3s binaries, air-gap image tarballs).

``labctl get artifacts`` lists them (docs/clusters.md, "Artifacts").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, Parameter

from lab.cli.output import OutputOpt

artifacts_app = App(
    name="artifacts",
    help="Artifacts: files labd keeps for the agents, e.g. k3s binaries (docs/clusters.md).",
)

COLUMNS = ("name", "version", "arch", "size", "sha256")
WIDE = ("filename", "created_by", "created_at")
CHUNK = 1024 * 1024


def artifact_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows of ``labctl get artifacts``: the sha256 shortened, the size readable."""
    return [
        {**i, "sha256": str(i.get("sha256", ""))[:12], "size": _size(i.get("size"))} for i in items
    ]


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # pragma: no cover


def _hash_file(file: Path) -> tuple[Path, str]:
    """(the expanded path, its sha256); Invalid naming the file when it cannot be read."""
    import hashlib

    from lab.errors import Invalid

    path = file.expanduser()
    digest = hashlib.sha256()
    try:
        with path.open("rb") as src:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror}", details={"fields": ["file"]}) from None
    return path, digest.hexdigest()


def _path(name: str, version: str, arch: str) -> str:
    from urllib.parse import quote

    return "/api/artifacts/" + "/".join(quote(p, safe="") for p in (name, version, arch))


@artifacts_app.command
async def add(
    file: Path,
    /,
    *,
    name: Annotated[str, Parameter(help="The artifact's name, e.g. k3s.")],
    version: Annotated[str, Parameter(help="Its version, e.g. v1.31.4+k3s1.")],
    arch: Annotated[str, Parameter(help="The architecture it runs on: amd64, arm64...")],
    output: OutputOpt = "",
) -> None:
    """Upload FILE to labd as the artifact NAME VERSION ARCH (needs artifacts:create).

    labctl hashes the file first and labd refuses content that arrives with another sha256.
    Adding the same content again changes nothing; other content under the same name,
    version and arch is refused (delete it first).

    Example: labctl artifacts add ./k3s --name k3s --version v1.31.4+k3s1 --arch amd64

    Parameters
    ----------
    file
        The file to upload.
    """
    from collections.abc import AsyncIterator

    import trio

    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        path, sha256 = await trio.to_thread.run_sync(_hash_file, file)

        async def content() -> AsyncIterator[bytes]:
            async with await trio.open_file(path, "rb") as src:
                while chunk := await src.read(CHUNK):
                    yield chunk

        async with LabClient.from_settings() as client:
            item = await client.put_stream(
                _path(name, version, arch),
                content(),
                headers={
                    "X-Content-SHA256": sha256,
                    "Content-Type": "application/octet-stream",
                },
                params={"filename": path.name},
            )
    if is_data(fmt):
        emit(item, fmt, kind="artifact")
    else:
        print(
            f"artifact {item['name']} {item['version']} {item['arch']}: "
            f"sha256:{item['sha256']} ({_size(item['size'])})"
        )


@artifacts_app.command
async def delete(
    name: str,
    /,
    *,
    version: Annotated[str, Parameter(help="The version to delete.")],
    arch: Annotated[str, Parameter(help="The architecture to delete.")],
) -> None:
    """Delete one artifact (needs artifacts:delete); its file goes once nothing names it.

    Example: labctl artifacts delete k3s --version v1.31.4+k3s1 --arch amd64

    Parameters
    ----------
    name
        The artifact's name (NAME or artifact/NAME).
    """
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    with handle():
        async with LabClient.from_settings() as client:
            await client.delete(_path(name.removeprefix("artifact/"), version, arch))
    print(f"artifact {name.removeprefix('artifact/')} {version} {arch} deleted")
