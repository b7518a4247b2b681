"""The cold tier: the memory API of a cloud Prime Spark peer, over HTTP (WireGuard in practice).

The peer stores the exact canonical text it is given (``{"raw": ...}``), so a copy is verified
by checksum like any other tier, and deletes can be conditional (``if_checksum``) across the link.
The cold tier is the last one: nothing is demoted from it, items come back by promotion on read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

from inference_server.memory.record import TierName, TierUnavailableError, checksum
from inference_server.memory.tier import Usage

_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=2)


class PeerTier:
    name: TierName = "cold"
    durable = True

    def __init__(self, base_url: str, token: str | None) -> None:
        self._base = base_url.rstrip("/") + "/api/v1/memory"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT, headers=self._headers)
        return self._session

    def _item_url(self, namespace: str, key: str) -> str:
        return f"{self._base}/items/{quote(namespace, safe='')}/{quote(key, safe='')}"

    async def _call(
        self, method: str, url: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, Any]:
        try:
            async with self._client().request(method, url, params=params, json=body) as resp:
                data = await resp.json(content_type=None)
                if resp.status >= 500 or resp.status in (401, 403):
                    message = (data or {}).get("error", {}).get("message", resp.reason)
                    raise TierUnavailableError(
                        "cold", f"the cloud peer answered {resp.status}: {message}"
                    )
                return resp.status, data
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as err:
            raise TierUnavailableError("cold", f"the cloud peer is unreachable: {err}") from err

    async def get_raw(self, namespace: str, key: str) -> str | None:
        status, data = await self._call(
            "GET", self._item_url(namespace, key), params={"raw": "1", "promote": "0"}
        )
        if status == 404:
            return None
        if status != 200:
            raise TierUnavailableError("cold", f"unexpected answer {status} from the cloud peer")
        return str(data["raw"])

    async def put_raw(
        self, namespace: str, key: str, text: str, *, only_if_absent: bool = False
    ) -> bool:
        status, data = await self._call(
            "PUT",
            self._item_url(namespace, key),
            body={"raw": text, "only_if_absent": only_if_absent},
        )
        if status == 409:
            return False
        if status not in (200, 201):
            message = (data or {}).get("error", {}).get("message", "")
            raise TierUnavailableError("cold", f"the cloud peer refused the item: {message}")
        return True

    async def delete(self, namespace: str, key: str, *, if_text: str | None = None) -> bool:
        params = {} if if_text is None else {"if_checksum": checksum(if_text)}
        status, _ = await self._call("DELETE", self._item_url(namespace, key), params=params)
        return status == 200

    async def scan(self, namespace: str | None = None) -> AsyncIterator[tuple[str, str, str]]:
        cursor = ""
        while True:
            params = {"raw": "1", "limit": "500"}
            if namespace is not None:
                params["namespace"] = namespace
            if cursor:
                params["cursor"] = cursor
            status, data = await self._call("GET", f"{self._base}/items", params=params)
            if status != 200:
                raise TierUnavailableError("cold", f"the cloud peer answered {status} to a list")
            for entry in data["items"]:
                yield entry["namespace"], entry["key"], entry["raw"]
            cursor = data.get("next_cursor") or ""
            if not cursor:
                return
            await asyncio.sleep(0)

    async def search(
        self, namespace: str, query: str, top_k: int, min_score: float
    ) -> list[tuple[str, str, str, float]]:
        status, data = await self._call(
            "POST",
            f"{self._base}/search",
            body={
                "namespace": namespace,
                "query": query,
                "top_k": top_k,
                "min_score": min_score,
                "raw": True,
            },
        )
        if status != 200:
            return []
        return [(r["namespace"], r["key"], r["raw"], float(r["score"])) for r in data["results"]]

    async def coldest(self, limit: int, idle_before: float | None) -> list[tuple[str, str]]:
        return []

    async def touch(self, namespace: str, key: str, now: float) -> None:
        return None

    async def usage(self) -> Usage:
        status, data = await self._call("GET", f"{self._base}/status")
        if status != 200:
            raise TierUnavailableError("cold", f"the cloud peer answered {status} to status")
        return Usage(items=int(data["stored_items"]), bytes=int(data["stored_bytes"]))

    async def ping(self) -> bool:
        try:
            await self.usage()
        except TierUnavailableError:
            return False
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
