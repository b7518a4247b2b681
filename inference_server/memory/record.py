"""One memory item, its canonical encoding and checksum, and the errors every tier shares.

Every tier stores the same canonical JSON text of an item. Its SHA-256 is the item's identity
for the mover: a copy is verified by comparing checksums, and a source is deleted only while it
still holds the checksum that was copied (a newer write in between is never lost).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

TierName = Literal["hot", "warm", "cold"]
TIERS: tuple[TierName, ...] = ("hot", "warm", "cold")

NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]{0,127}$")
"""Namespaces: ``user:<ha user id>``, ``agent:<name>``, ``shared``; also a directory name."""
MAX_KEY_CHARS = 512
MAX_TAGS = 32
MAX_METADATA_BYTES = 8 * 1024


class MemoryError_(Exception):
    """Base of memory failures."""


class TierUnavailableError(MemoryError_):
    """A tier cannot be reached or written (Redis down, NAS not mounted, peer offline)."""

    def __init__(self, tier: TierName, message: str) -> None:
        super().__init__(message)
        self.tier = tier


class CorruptItemError(MemoryError_):
    """A stored item failed its checksum; it is quarantined and treated as absent."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MemoryItem:
    namespace: str
    key: str
    value: Any
    """Any JSON value."""
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: float | None = None
    embedding: tuple[float, ...] | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or time.time())

    def encode(self) -> str:
        """The canonical text every tier stores (sorted keys, no spaces)."""
        return json.dumps(
            {
                "namespace": self.namespace,
                "key": self.key,
                "value": self.value,
                "metadata": self.metadata,
                "tags": list(self.tags),
                "created_at": self.created_at,
                "updated_at": self.updated_at,
                "expires_at": self.expires_at,
                "embedding": None if self.embedding is None else _pack(self.embedding),
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )

    def public(self, tier: TierName | None = None) -> dict[str, Any]:
        """The API shape (without the embedding vector, which is large and internal)."""
        data: dict[str, Any] = {
            "namespace": self.namespace,
            "key": self.key,
            "value": self.value,
            "metadata": self.metadata,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
        }
        if tier is not None:
            data["tier"] = tier
        return data

    def with_embedding(self, embedding: tuple[float, ...] | None) -> MemoryItem:
        return replace(self, embedding=embedding)


def decode(text: str | bytes) -> MemoryItem:
    data = json.loads(text)
    embedding = data.get("embedding")
    return MemoryItem(
        namespace=data["namespace"],
        key=data["key"],
        value=data.get("value"),
        metadata=data.get("metadata") or {},
        tags=tuple(data.get("tags") or ()),
        created_at=float(data.get("created_at") or 0.0),
        updated_at=float(data.get("updated_at") or 0.0),
        expires_at=data.get("expires_at"),
        embedding=None if embedding is None else _unpack(embedding),
    )


def _pack(vector: tuple[float, ...]) -> str:
    """float32 little-endian in base64: a fifth of the size of a JSON list, and exact on reload."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _unpack(data: str | list[float]) -> tuple[float, ...]:
    if isinstance(data, list):
        return tuple(float(v) for v in data)
    raw = base64.b64decode(data)
    return struct.unpack(f"<{len(raw) // 4}f", raw)


def checksum(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def item_id(namespace: str, key: str) -> str:
    """One string naming an item (NUL cannot occur in a namespace)."""
    return f"{namespace}\x00{key}"


def split_id(ident: str) -> tuple[str, str]:
    namespace, _, key = ident.partition("\x00")
    return namespace, key


def embedding_text(item: MemoryItem) -> str:
    """What the embedding of an item is computed from: its key and value, as a person reads them."""
    value = (
        item.value if isinstance(item.value, str) else json.dumps(item.value, ensure_ascii=False)
    )
    return f"{item.key.replace('_', ' ')}: {value}"[:2000]
