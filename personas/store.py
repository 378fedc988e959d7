"""The tenant store: a folder of tenant folders, read into an immutable catalog, reloaded as files change.

    <root>/<tenant>/tenant.yaml     personas.tenant.Tenant (written by the operator)
    <root>/<tenant>/<line>.yaml     personas.tenant.Line (written by the tenant's admins)

Every `reload` stats the files and parses only those whose modification time, size or inode
changed (outside the lock that writes take, so a slow file never holds up another tenant's save;
a file is at most `personas.loader.MAX_FILE_BYTES`), then publishes a new `Catalog`; readers take `store.catalog` once and use that snapshot,
so a request or a call never sees half a reload, and a call keeps the persona it started with.
A file that fails to load is reported (`Catalog.problems`, in the log) and leaves the last valid
version of it in service (none if it never loaded); it never affects another file or tenant.
Writes go to a temporary file in the same folder, are flushed to disk and renamed over the old
file, so a crash leaves either the old file or the new one; names starting with a dot are ignored.
A line file's version is the hash of its bytes (`line_version`): a save that names the version it
read is refused if the file changed since, by the API or by hand. A save keeps the comments and the
layout of what it leaves unchanged (`personas.round_trip`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel

from personas.loader import PersonaError, load_document
from personas.round_trip import updated_yaml
from personas.tenant import ID_PATTERN, LINE_SUFFIX, TENANT_FILE, Line, Tenant
from personas.voice_files import VOICES_FOLDER, voice_problem

log = logging.getLogger(__name__)

STORE = ""  # the problems key of issues that belong to no single tenant (shown to the operator only)


class StoreError(Exception):
    pass


class UnknownTenant(StoreError):
    pass


class UnknownLine(StoreError):
    pass


class LineExists(StoreError):
    pass


@dataclass(frozen=True)
class LineProblem:
    field: tuple[str | int, ...]  # e.g. ("answers", 0)
    reason: str


class UnknownWebhook(StoreError):
    pass


class VersionConflict(StoreError):
    """The line file is not the version the writer read: `current` is what it holds now."""

    def __init__(self, line_id: str, version: str, current: Line | None):
        super().__init__(f"line {line_id!r} changed since it was read (it is now version {version})")
        self.version = version
        self.current = current  # None if the file as it is now does not load


class InvalidLine(StoreError):
    def __init__(self, problems: list[LineProblem]):
        super().__init__("; ".join(".".join(map(str, p.field)) + f": {p.reason}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class TenantEntry:
    id: str
    tenant: Tenant
    lines: Mapping[str, Line]


@dataclass(frozen=True)
class Route:
    """The line that answers an address, as it was when the call arrived."""

    tenant: TenantEntry
    line_id: str
    line: Line

    @property
    def max_call_seconds(self) -> int:
        limit = self.tenant.tenant.limits.max_call_seconds
        return min(self.line.max_call_seconds or limit, limit)


@dataclass(frozen=True)
class Catalog:
    tenants: Mapping[str, TenantEntry] = field(default_factory=dict)
    routes: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # address -> (tenant, line)
    problems: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # tenant id or STORE -> lines

    def route(self, address: str) -> Route | None:
        if address not in self.routes:
            return None
        tenant_id, line_id = self.routes[address]
        entry = self.tenants[tenant_id]
        return Route(entry, line_id, entry.lines[line_id])


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int, int]  # mtime_ns, size, inode
    document: BaseModel | None  # the last valid version
    error: str | None  # why the current version is not the one in service


class TenantStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.catalog = Catalog()
        self._files: dict[Path, _Loaded] = {}
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> Catalog:
        self._parse_changed()
        with self._lock:
            return self._reload()

    async def watch(self, interval: float = 1.0) -> None:
        """Reload every `interval` seconds, forever; the owner runs it as a task and cancels it."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:
                log.exception("tenant store reload failed", extra={"root": str(self.root)})

    # -- reading --------------------------------------------------------------------------------

    def _reload(self) -> Catalog:
        problems: dict[str, list[str]] = {}
        tenants: dict[str, TenantEntry] = {}
        seen: set[Path] = set()
        try:
            folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as error:
            problems[STORE] = [f"cannot read the tenant folder {self.root}: {error.strerror}"]
            folders = []
        for folder in folders:
            if not ID_PATTERN.match(folder.name):
                problems.setdefault(STORE, []).append(f"{folder.name}/: not a valid tenant id, ignored")
                continue
            entry = self._load_tenant(folder, seen, problems.setdefault(folder.name, []))
            if entry is not None:
                tenants[entry.id] = entry
        for path in set(self._files) - seen:
            del self._files[path]
        routes = _routes(tenants, problems)
        self.catalog = Catalog(tenants, routes, {k: tuple(v) for k, v in problems.items() if v})
        self._report(self.catalog.problems)
        return self.catalog

    def _load_tenant(self, folder: Path, seen: set[Path], problems: list[str]) -> TenantEntry | None:
        tenant_path = folder / TENANT_FILE
        tenant = self._load(tenant_path, Tenant, "tenant", seen, problems)
        if tenant is None:
            if not tenant_path.exists():
                problems.append(f"{folder.name}/{TENANT_FILE}: missing; the tenant is not served")
            return None
        lines: dict[str, Line] = {}
        for path in sorted(folder.glob("*" + LINE_SUFFIX)):
            line_id = path.name.removesuffix(LINE_SUFFIX)
            if path.name == TENANT_FILE or path.name.startswith("."):
                continue
            if not ID_PATTERN.match(line_id):
                problems.append(f"{folder.name}/{path.name}: not a valid line id, ignored")
                continue
            line = self._load(path, Line, "line", seen, problems)
            if line is not None:
                lines[line_id] = line
        return TenantEntry(folder.name, tenant, lines)

    def _parse_changed(self) -> None:
        """Parse each file that changed since it was read, holding no lock: a large or hostile file
        costs its parse time to the reload alone, never to a writer waiting for the lock."""
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir() and ID_PATTERN.match(p.name)]
        except OSError:
            return  # _reload reports it
        for folder in folders:
            self._parsed(folder / TENANT_FILE, Tenant, "tenant")
            for path in folder.glob("*" + LINE_SUFFIX):
                if path.name != TENANT_FILE and ID_PATTERN.match(path.name.removesuffix(LINE_SUFFIX)):
                    self._parsed(path, Line, "line")

    def _parsed(self, path: Path, schema: type[BaseModel], kind: str) -> _Loaded | None:
        """The file as last parsed, parsed again if it changed (None if there is no such file)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        loaded = self._files.get(path)
        if loaded is None or loaded.stamp != stamp:
            previous = loaded.document if loaded else None
            try:
                loaded = _Loaded(stamp, load_document(path, schema, kind), None)
            except PersonaError as error:
                reason = str(error).removeprefix(f"{path}: ")
                loaded = _Loaded(stamp, previous, f"{self._name(path)}: {reason}")
            self._files[path] = loaded
        return loaded

    def _load(self, path: Path, schema: type[BaseModel], kind: str, seen: set[Path],
              problems: list[str]) -> BaseModel | None:
        """The file's document as parsed before (`_parse_changed`, or a write of this store):
        under the lock, nothing is parsed; a file that appeared since waits for the next reload."""
        if not path.exists():
            return None
        seen.add(path)
        loaded = self._files.get(path)
        if loaded is None:
            return None
        if loaded.error:
            kept = "; the last valid version stays in service" if loaded.document else ""
            problems.append(loaded.error + kept)
        return loaded.document

    def _name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _report(self, problems: Mapping[str, tuple[str, ...]]) -> None:
        current = {message for messages in problems.values() for message in messages}
        for message in sorted(current - self._reported):
            log.warning("tenant store problem", extra={"problem": message})
        self._reported = current

    # -- checking and writing -------------------------------------------------------------------

    def check_line(self, tenant_id: str, line_id: str, line: Line) -> None:
        """Raises InvalidLine if `line` may not be saved as `line_id` (addresses it may not answer)."""
        entry = self._entry(tenant_id)
        problems = []
        owned = set(entry.tenant.addresses)
        taken = {a: other for other, its in entry.lines.items() if other != line_id for a in its.answers}
        for i, address in enumerate(line.answers):
            if address not in owned:
                problems.append(LineProblem(("answers", i), f"{address} is not one of this tenant's addresses"))
            elif address in taken:
                problems.append(LineProblem(("answers", i), f"{address} is already answered by line {taken[address]!r}"))
        voice = voice_problem(self.root / tenant_id / VOICES_FOLDER, line.persona.voice)
        if voice is not None:
            problems.append(LineProblem(("persona", "voice"), voice))
        if problems:
            raise InvalidLine(problems)

    def line_version(self, tenant_id: str, line_id: str) -> str | None:
        """The version of the line file as it is on disk now (None if there is none)."""
        try:
            return _version((self.root / tenant_id / (line_id + LINE_SUFFIX)).read_bytes())
        except FileNotFoundError:
            return None

    def save_line(self, tenant_id: str, line_id: str, line: Line, *, create: bool,
                  if_match: str | None = None) -> str:
        """Create (`create`, LineExists if present) or replace (UnknownLine if absent) a line file; its
        new version. With `if_match` (a version, or "*"), VersionConflict unless the file is that version."""
        with self._lock:
            path = self.root / tenant_id / (line_id + LINE_SUFFIX)
            if create and (path.exists() or line_id in self._entry(tenant_id).lines):
                raise LineExists(f"line {line_id!r} exists")
            if not create and line_id not in self._entry(tenant_id).lines:
                raise UnknownLine(f"no line {line_id!r}")
            if if_match is not None and if_match != "*":
                version = self.line_version(tenant_id, line_id)
                if version != if_match:
                    self._parsed(path, Line, "line")  # what the file holds now, for the writer to compare
                    self._reload()
                    raise VersionConflict(line_id, version or "none", self.catalog.tenants[tenant_id].lines.get(line_id))
            self.check_line(tenant_id, line_id, line)
            old = None if create else path.read_text(encoding="utf-8")
            document = _without_new_defaults(Line, line.model_dump(mode="json", exclude_none=True, exclude_unset=True),
                                             yaml.safe_load(old) if old else None)
            text = updated_yaml(old, document)
            write_atomically(path, text)
            self._parsed(path, Line, "line")
            self._reload()
            return _version(text.encode())

    def voices_folder(self, tenant_id: str) -> Path:
        """Where the tenant's voice files are (`<tenant>/voices/`); it may not exist yet."""
        self._entry(tenant_id)
        return self.root / tenant_id / VOICES_FOLDER

    def rotate_webhook_secret(self, tenant_id: str, secret: str) -> None:
        """Put `secret` in place of the tenant's webhook secret in tenant.yaml (UnknownWebhook if none)."""
        with self._lock:
            self._entry(tenant_id)
            path = self.root / tenant_id / TENANT_FILE
            try:
                tenant = load_document(path, Tenant, "tenant")  # the file as it is now
            except PersonaError as error:
                raise PersonaError(str(error).replace(str(path), self._name(path))) from None
            if tenant.webhook is None:
                raise UnknownWebhook(f"tenant {tenant_id!r} has no webhook")
            text = path.read_text(encoding="utf-8")
            raw = yaml.safe_load(text)
            raw["webhook"]["secret"] = secret
            Tenant.model_validate(raw)
            write_atomically(path, updated_yaml(text, raw))
            self._parsed(path, Tenant, "tenant")
            self._reload()

    def delete_line(self, tenant_id: str, line_id: str) -> None:
        with self._lock:
            if line_id not in self._entry(tenant_id).lines:
                raise UnknownLine(f"no line {line_id!r}")
            (self.root / tenant_id / (line_id + LINE_SUFFIX)).unlink(missing_ok=True)
            _fsync_folder(self.root / tenant_id)
            self._reload()

    def _entry(self, tenant_id: str) -> TenantEntry:
        entry = self.catalog.tenants.get(tenant_id)
        if entry is None:
            raise UnknownTenant(f"no tenant {tenant_id!r}")
        return entry


def _routes(tenants: Mapping[str, TenantEntry], problems: dict[str, list[str]]) -> dict[str, tuple[str, str]]:
    """address -> (tenant, line); an address assigned twice or answered twice goes to the first."""
    owner: dict[str, str] = {}
    for tenant_id, entry in tenants.items():
        for address in entry.tenant.addresses:
            if address in owner:
                problems.setdefault(STORE, []).append(
                    f"{tenant_id}/{TENANT_FILE}: {address} is also assigned to tenant {owner[address]!r}; "
                    f"it stays with {owner[address]!r}")
            else:
                owner[address] = tenant_id
    routes: dict[str, tuple[str, str]] = {}
    for tenant_id, entry in tenants.items():
        for line_id, line in entry.lines.items():
            for address in line.answers:
                where = f"{tenant_id}/{line_id}{LINE_SUFFIX}: answers {address}"
                if owner.get(address) != tenant_id:
                    problems[tenant_id].append(f"{where}, which is not one of this tenant's addresses; ignored")
                elif address in routes:
                    problems[tenant_id].append(f"{where}, already answered by line {routes[address][1]!r}; ignored")
                else:
                    routes[address] = (tenant_id, line_id)
    return routes


def _without_new_defaults(schema: type[BaseModel], document: dict, old: object) -> dict:
    """`document` less the fields that the file did not have and that hold their default: a client that
    sends every field (the console does) adds nothing to a file that left them out."""
    kept = {}
    old = old if isinstance(old, dict) else {}
    for name, value in document.items():
        field = schema.model_fields.get(name)
        nested = field.annotation if field is not None else None
        if isinstance(value, dict) and isinstance(nested, type) and issubclass(nested, BaseModel):
            value = _without_new_defaults(nested, value, old.get(name))
        if field is not None and name not in old and not field.is_required():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json", exclude_none=True)
            if value == default or value == {}:
                continue
        kept[name] = value
    return kept


def _version(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:32]


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: a crash leaves the old file or the new one, never a mix."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, content: bytes) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
