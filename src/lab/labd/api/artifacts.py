"""Artifacts (docs/clusters.md, "Artifacts"): upload, list, show, download with Range, delete.

``PUT /api/artifacts/NAME/VERSION/ARCH`` streams the body to a file named by its sha256
(``X-Content-SHA256`` makes labd refuse content that hashes otherwise); RBAC
``artifacts:create|read|delete`` on ``artifact/NAME``. Reading one artifact (its metadata and
its content) also admits agent certificates (servers install from them; artifacts are not
secrets); the content route answers ``Range`` requests, so an agent resumes a cut download.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from quart import Blueprint, Response, request

from lab.labd.access.auth import principal, requires
from lab.labd.artifacts import parse_range
from lab.labd.audit.entries import annotate
from lab.labd.context import ctx
from lab.model import Artifact

bp = Blueprint("artifacts", __name__)
KEY = "/api/artifacts/<name>/<version>/<arch>"


def artifact_view(artifact: Artifact) -> dict[str, Any]:
    return {
        "name": artifact.name,
        "version": artifact.version,
        "arch": artifact.arch,
        "sha256": artifact.sha256,
        "size": artifact.size,
        "filename": artifact.filename,
        "created_by": artifact.created_by,
        "created_at": artifact.created_at.isoformat(),
    }


@bp.put(KEY)
@requires("user", action="artifacts:create", resource="artifact/{name}")
async def add_artifact(name: str, version: str, arch: str) -> tuple[dict[str, Any], int]:
    expected = request.headers.get("X-Content-SHA256") or None
    filename = request.args.get("filename", "")[:255]
    annotate(version=version, arch=arch, filename=filename)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.body:
            yield chunk

    artifact, new = await ctx().artifacts.add(
        name,
        version,
        arch,
        body(),
        created_by=principal().subject,
        filename=filename,
        expected_sha256=expected,
    )
    return artifact_view(artifact), 201 if new else 200


@bp.get("/api/artifacts")
@requires("user", action="artifacts:read", resource="artifact/*")
async def list_artifacts() -> dict[str, Any]:
    wanted = request.args.get("name") or None
    return {"items": [artifact_view(a) for a in await ctx().artifacts.list(wanted)]}


@bp.get(KEY)
@requires("user", "server", action="artifacts:read", resource="artifact/{name}")
async def get_artifact(name: str, version: str, arch: str) -> dict[str, Any]:
    return artifact_view(await ctx().artifacts.find(name, version, arch))


@bp.get(KEY + "/content")
@requires("user", "server", action="artifacts:read", resource="artifact/{name}")
async def get_content(name: str, version: str, arch: str) -> Response:
    store = ctx().artifacts
    artifact = await store.find(name, version, arch)
    size = store.size_on_disk(artifact)
    span = parse_range(request.headers.get("Range"), size)
    start, end = span if span is not None else (0, size)
    annotate(version=version, arch=arch, sha256=artifact.sha256, start=start, end=end)
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(end - start),
        "Accept-Ranges": "bytes",
        "ETag": f'"sha256:{artifact.sha256}"',
        "X-Content-SHA256": artifact.sha256,
    }
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = Response(store.chunks(artifact, start, end), status=status, headers=headers)
    # Quart would otherwise answer a streamed body only until its response timeout.
    response.timeout = None
    return response


@bp.delete(KEY)
@requires("user", action="artifacts:delete", resource="artifact/{name}")
async def delete_artifact(name: str, version: str, arch: str) -> dict[str, Any]:
    return {"deleted": artifact_view(await ctx().artifacts.delete(name, version, arch))}
