"""The warm tier: one file per item in a directory, typically a NAS share.

Layout: ``<root>/<namespace>/<sha256(key)[:40]>.item``; a file holds the SHA-256 of the item's
canonical text on its first line and the text after it. Writes go to a temporary file in the same
directory, are fsynced, renamed over the target and the directory is fsynced, so a power cut or a
kill leaves either the old or the new item, never a torn one. Reads verify the checksum; a file
that fails is moved to ``<root>/.quarantine`` and reported, never served.

An in-memory index (id → size, last read) is built from the directory at start; it answers usage
and the demotion policy without walking a NAS on every question.

The root must exist and be writable. A configured NAS path that is missing is reported, not
created: creating it would silently fill the local disk under an unmounted share.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from inference_server.memory.record import (
    CorruptItemError,
    TierName,
    TierUnavailableError,
    checksum,
    decode,
    item_id,
    split_id,
)
from inference_server.memory.tier import Usage

_LOGGER = logging.getLogger(__name__)

SUFFIX = ".item"
QUARANTINE = ".quarantine"


@dataclass(slots=True)
class _Entry:
    size: int
    accessed: float


@dataclass(frozen=True, kw_only=True, slots=True)
class WarmHealth:
    ok: bool
    problem: str | None
    """``missing`` | ``not_writable`` | None."""
    message: str | None


def _file_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40] + SUFFIX


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryTier:
    name: TierName = "warm"
    durable = True

    def __init__(self, root: Path, *, create: bool) -> None:
        self.root = root
        self._create = create
        self._index: dict[str, _Entry] = {}
        self._bytes = 0
        self.corrupt_found = 0
        self.health = WarmHealth(ok=False, problem="missing", message="not opened yet")

    # ------------------------------------------------------------------ lifecycle

    def check(self) -> WarmHealth:
        """Blocking: is the root there and writable? A probe file proves it (root ignores modes)."""
        try:
            if self._create:
                self.root.mkdir(parents=True, exist_ok=True)
            if not self.root.is_dir():
                health = WarmHealth(
                    ok=False,
                    problem="missing",
                    message=f"The warm tier path {self.root} does not exist or is not a directory "
                    "(is the NAS share mounted?)",
                )
            else:
                probe = self.root / f".probe-{uuid.uuid4().hex}"
                probe.write_bytes(b"ok")
                probe.unlink()
                health = WarmHealth(ok=True, problem=None, message=None)
        except OSError as err:
            health = WarmHealth(
                ok=False,
                problem="not_writable" if self.root.is_dir() else "missing",
                message=f"The warm tier path {self.root} is not usable: {err.strerror or err}",
            )
        if health != self.health and not health.ok:
            _LOGGER.error("%s", health.message)
        self.health = health
        return health

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        if not self.check().ok:
            return
        self._index.clear()
        self._bytes = 0
        for ns_dir in self.root.iterdir():
            if ns_dir.name.startswith(".") or not ns_dir.is_dir():
                continue
            for path in ns_dir.iterdir():
                if path.name.startswith(".tmp-"):
                    path.unlink(missing_ok=True)  # a write cut short by a crash
                    continue
                if path.suffix != SUFFIX:
                    continue
                try:
                    text = self._read_verified(path)
                    st = path.stat()
                except (OSError, CorruptItemError) as err:
                    _LOGGER.warning("Warm tier: skipping %s: %s", path, err)
                    continue
                item = decode(text)
                self._index[item_id(item.namespace, item.key)] = _Entry(
                    size=len(text.encode()), accessed=st.st_mtime
                )
                self._bytes += len(text.encode())

    def _require(self) -> None:
        if not self.health.ok:
            raise TierUnavailableError("warm", self.health.message or "the warm tier is unusable")

    # ------------------------------------------------------------------ files

    def _path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / _file_name(key)

    def _read_verified(self, path: Path) -> str:
        data = path.read_bytes()
        head, sep, body = data.partition(b"\n")
        if not sep or checksum(body) != head.decode(errors="replace"):
            self._quarantine(path)
            raise CorruptItemError(f"{path} failed its checksum")
        return body.decode()

    def _quarantine(self, path: Path) -> None:
        self.corrupt_found += 1
        target = self.root / QUARANTINE
        with contextlib.suppress(OSError):
            target.mkdir(exist_ok=True)
            path.replace(target / f"{path.parent.name}-{path.name}")
        _LOGGER.error("Warm tier: %s failed its checksum and was quarantined", path)

    def _get_sync(self, namespace: str, key: str) -> str | None:
        path = self._path(namespace, key)
        try:
            text = self._read_verified(path)
        except FileNotFoundError:
            return None
        except CorruptItemError:
            self._forget(item_id(namespace, key))
            return None
        item = decode(text)
        if item.namespace != namespace or item.key != key:  # a hash-prefix collision
            return None
        return text

    def _put_sync(self, namespace: str, key: str, text: str, only_if_absent: bool) -> bool:
        path = self._path(namespace, key)
        if only_if_absent and path.exists():
            return False
        body = text.encode()
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
        try:
            with tmp.open("wb") as fh:
                fh.write(checksum(body).encode() + b"\n" + body)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
            _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        ident = item_id(namespace, key)
        self._forget(ident)
        self._index[ident] = _Entry(size=len(body), accessed=path.stat().st_mtime)
        self._bytes += len(body)
        return True

    def _delete_sync(self, namespace: str, key: str, if_text: str | None) -> bool:
        path = self._path(namespace, key)
        if if_text is not None:
            try:
                current = self._read_verified(path)
            except (FileNotFoundError, CorruptItemError):
                return False
            if current != if_text:
                return False
        try:
            path.unlink()
        except FileNotFoundError:
            self._forget(item_id(namespace, key))
            return False
        _fsync_dir(path.parent)
        self._forget(item_id(namespace, key))
        return True

    def _forget(self, ident: str) -> None:
        entry = self._index.pop(ident, None)
        if entry is not None:
            self._bytes -= entry.size

    # ------------------------------------------------------------------ Tier

    async def get_raw(self, namespace: str, key: str) -> str | None:
        self._require()
        try:
            return await asyncio.to_thread(self._get_sync, namespace, key)
        except OSError as err:
            raise TierUnavailableError("warm", f"cannot read the warm tier: {err}") from err

    async def put_raw(
        self, namespace: str, key: str, text: str, *, only_if_absent: bool = False
    ) -> bool:
        self._require()
        try:
            return await asyncio.to_thread(self._put_sync, namespace, key, text, only_if_absent)
        except OSError as err:
            self.check()
            raise TierUnavailableError(
                "warm", f"cannot write to the warm tier {self.root}: {err.strerror or err}"
            ) from err

    async def delete(self, namespace: str, key: str, *, if_text: str | None = None) -> bool:
        self._require()
        try:
            return await asyncio.to_thread(self._delete_sync, namespace, key, if_text)
        except OSError as err:
            message = f"cannot remove an item from the warm tier: {err}"
            raise TierUnavailableError("warm", message) from err

    async def scan(self, namespace: str | None = None) -> AsyncIterator[tuple[str, str, str]]:
        self._require()
        for ident in list(self._index):
            ns, key = split_id(ident)
            if namespace is not None and ns != namespace:
                continue
            text = await asyncio.to_thread(self._get_sync, ns, key)
            if text is not None:
                yield ns, key, text

    async def coldest(self, limit: int, idle_before: float | None) -> list[tuple[str, str]]:
        ordered = sorted(self._index.items(), key=lambda kv: kv[1].accessed)
        out: list[tuple[str, str]] = []
        for ident, entry in ordered:
            if len(out) >= limit or (idle_before is not None and entry.accessed > idle_before):
                break
            out.append(split_id(ident))
        return out

    async def touch(self, namespace: str, key: str, now: float) -> None:
        entry = self._index.get(item_id(namespace, key))
        if entry is not None:
            entry.accessed = now

    async def usage(self) -> Usage:
        return Usage(items=len(self._index), bytes=self._bytes)

    async def ping(self) -> bool:
        return (await asyncio.to_thread(self.check)).ok

    async def close(self) -> None:
        return None
