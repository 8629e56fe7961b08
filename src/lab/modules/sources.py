"""Where modules come from: built-ins shipped in the wheel, a directory, a ``.tar.gz`` with its
sha256. All three give a :class:`Module` held in memory (module.yaml and its templates), which
also travels to labd as a deterministic archive (:meth:`Module.archive`).

A module directory holds ``module.yaml`` and ``templates/`` (``*.yaml``; files whose name starts
with ``_`` are included by others, not rendered alone). Anything else is ignored when packaging;
symbolic links are refused (a link would reach outside the module).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import io
import re
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import attrs

from lab.errors import ConfigError, Invalid, NotFound
from lab.modules.spec import ModuleSpec, parse_spec

MAX_FILE = 1024 * 1024
"""Bytes of one module file."""
MAX_MODULE = 4 * 1024 * 1024
"""Bytes of a whole module (module.yaml and its templates, uncompressed)."""
MAX_FILES = 512
MAX_TAR = MAX_MODULE + MAX_FILES * 4096 + 64 * 1024
"""Bytes of a module archive once decompressed: its files, their headers and padding."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEMPLATE = re.compile(r"templates/[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


@attrs.frozen(kw_only=True)
class Module:
    """A module in memory: its checked spec and its templates by path (``templates/x.yaml``)."""

    spec: ModuleSpec
    source: str
    """Where it was read from: ``builtin``, a directory or a tarball path."""
    spec_text: str
    templates: Mapping[str, str]

    def archive(self) -> bytes:
        """The module as a deterministic ``.tar.gz`` (same files → same bytes → same sha256)."""
        raw = io.BytesIO()
        prefix = f"{self.spec.name}-{self.spec.version}"
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            files = {"module.yaml": self.spec_text, **self.templates}
            for path in sorted(files):
                data = files[path].encode()
                info = tarfile.TarInfo(f"{prefix}/{path}")
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        return gzip.compress(raw.getvalue(), mtime=0)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.archive()).hexdigest()


def _check_template_path(path: str, where: str) -> None:
    if not _TEMPLATE.fullmatch(path) or ".." in PurePosixPath(path).parts:
        raise Invalid(f"{where}: {path!r} is not a template path (templates/NAME.yaml)")


def from_files(files: Mapping[str, bytes], *, source: str) -> Module:
    """A Module from its files by relative path (``module.yaml``, ``templates/...``)."""
    if "module.yaml" not in files:
        raise Invalid(f"{source}: no module.yaml", details={"fields": ["module"]})
    if len(files) > MAX_FILES or sum(len(b) for b in files.values()) > MAX_MODULE:
        raise Invalid(f"{source}: more than {MAX_FILES} files or {MAX_MODULE} bytes")
    try:
        texts = {path: data.decode("utf-8") for path, data in files.items()}
    except UnicodeDecodeError as exc:
        raise Invalid(f"{source}: a file is not UTF-8 text") from exc
    spec = parse_spec(texts["module.yaml"], where=f"{source}/module.yaml")
    templates = {p: t for p, t in texts.items() if p.startswith("templates/")}
    for path in templates:
        _check_template_path(path, source)
    for event, paths in spec.hooks.items():
        for path in paths:
            if path not in templates:
                raise Invalid(
                    f"{source}/module.yaml: hooks.{event}: {path} is not in templates/",
                    details={"fields": [f"hooks.{event}"]},
                )
    return Module(spec=spec, source=source, spec_text=texts["module.yaml"], templates=templates)


def load_directory(path: Path) -> Module:
    """The module in directory ``path`` (module.yaml + templates/)."""
    if not (path / "module.yaml").is_file():
        raise NotFound(f"{path}: no module.yaml", details={"fields": ["module"]})
    files: dict[str, bytes] = {"module.yaml": (path / "module.yaml").read_bytes()}
    templates = path / "templates"
    if templates.is_dir():
        for item in sorted(templates.rglob("*")):
            if item.is_symlink():
                raise Invalid(f"{item}: a symbolic link in a module is refused")
            if item.is_file():
                if item.stat().st_size > MAX_FILE:
                    raise Invalid(f"{item}: larger than {MAX_FILE} bytes")
                files[item.relative_to(path).as_posix()] = item.read_bytes()
    return from_files(files, source=str(path))


def check_sha256(data: bytes, expected: str, *, source: str) -> None:
    """Invalid unless ``data``'s sha256 is ``expected`` (64 lowercase hex digits)."""
    expected = expected.strip().lower()
    if not _SHA256.fullmatch(expected):
        raise Invalid(f"{source}: sha256 must be 64 hex digits", details={"fields": ["sha256"]})
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise Invalid(
            f"{source}: sha256 is {actual}, expected {expected}: the archive was changed "
            "or is not the one packaged",
            details={"fields": ["sha256"]},
        )


def sidecar_sha256(path: Path) -> str:
    """The sha256 written beside ``path`` by ``labctl modules package`` (``PATH.sha256``)."""
    side = path.with_name(path.name + ".sha256")
    if not side.is_file():
        raise Invalid(
            f"{path}: no sha256 given and no {side.name} beside it",
            details={"fields": ["sha256"], "hint": "labctl modules package DIR writes both"},
        )
    words = side.read_text(encoding="utf-8").split()
    return words[0] if words else ""


def from_archive(data: bytes, sha256: str, *, source: str) -> Module:
    """A module from a ``.tar.gz`` whose sha256 must be ``sha256``; only regular files under one
    top folder are read (links, devices, absolute paths and ``..`` are refused)."""
    check_sha256(data, sha256, source=source)
    files: dict[str, bytes] = {}
    total = 0
    try:
        # Decompressed with a cap first: tarfile reads a long-name or pax header whole, so a
        # small archive could otherwise make labd hold gigabytes before any check below.
        with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as unpacked:
            raw = unpacked.read(MAX_TAR + 1)
        if len(raw) > MAX_TAR:
            raise Invalid(f"{source}: decompresses to more than {MAX_TAR} bytes")
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if member.isdir():
                    continue
                if not member.isfile() or member.name.startswith("/") or ".." in parts:
                    raise Invalid(f"{source}: {member.name!r} is not a plain file of the module")
                if len(parts) < 2:
                    raise Invalid(f"{source}: {member.name!r} is outside the module's folder")
                total += member.size
                if member.size > MAX_FILE or total > MAX_MODULE or len(files) >= MAX_FILES:
                    raise Invalid(f"{source}: larger than {MAX_MODULE} bytes or {MAX_FILES} files")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has one
                files["/".join(parts[1:])] = handle.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise Invalid(f"{source}: not a module archive: {exc}") from exc
    return from_files(files, source=source)


def load_tarball(path: Path, sha256: str | None = None) -> Module:
    """The module in ``path`` (``.tar.gz``), checked against ``sha256`` or its sidecar file."""
    if not path.is_file():
        raise NotFound(f"{path}: no such module archive", details={"fields": ["module"]})
    return from_archive(path.read_bytes(), sha256 or sidecar_sha256(path), source=str(path))


def builtin_dir() -> Path:
    """``lab/_data/modules`` in an installed wheel, else ``modules/`` of the checkout."""
    shipped = importlib.resources.files("lab") / "_data" / "modules"
    if shipped.is_dir():
        return Path(str(shipped))
    checkout = Path(__file__).resolve().parents[3] / "modules"
    if checkout.is_dir():
        return checkout
    raise ConfigError("built-in modules not found (neither lab/_data/modules nor modules/)")


def builtin_names() -> list[str]:
    return sorted(p.name for p in builtin_dir().iterdir() if (p / "module.yaml").is_file())


def load_builtin(name: str, version: str | None = None) -> Module:
    """The built-in module ``name``; NotFound for another name or version than shipped."""
    if name not in builtin_names():
        raise NotFound(
            f"no built-in module {name!r} (built-ins: {', '.join(builtin_names())})",
            details={"fields": ["module"]},
        )
    module = load_directory(builtin_dir() / name)
    module = attrs.evolve(module, source="builtin")
    if version and version != module.spec.version:
        raise NotFound(
            f"module {name} has no version {version} (this labctl ships {module.spec.version})",
            details={"fields": ["module"]},
        )
    return module


def resolve(ref: str, sha256: str | None = None) -> Module:
    """``--module``'s word: a built-in ``NAME[@VERSION]``, a directory or a ``.tar.gz`` path.

    A path's own module.yaml gives the version; ``PATH@VERSION`` is checked against it.
    """
    word, _, version = ref.rpartition("@") if "@" in ref else (ref, "", "")
    candidate = Path(word).expanduser()
    if "/" in word or word.startswith(".") or word.endswith(".tar.gz") or candidate.exists():
        if word.endswith((".tar.gz", ".tgz")):
            module = load_tarball(candidate, sha256)
        else:
            module = load_directory(candidate)
        if version and version != module.spec.version:
            raise NotFound(
                f"{word} is {module.spec.ref}, not version {version}",
                details={"fields": ["module"]},
            )
        return module
    return load_builtin(word, version or None)


def package(directory: Path, out_dir: Path) -> tuple[Path, str]:
    """Write ``NAME-VERSION.tar.gz`` and its ``.sha256`` into ``out_dir``; (path, sha256)."""
    module = load_directory(directory)
    data = module.archive()
    digest = hashlib.sha256(data).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{module.spec.name}-{module.spec.version}.tar.gz"
    target.write_bytes(data)
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    return target, digest
