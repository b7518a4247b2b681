"""Sentence embeddings for semantic search and the semantic cache, from the node's own engine.

The bundled all-MiniLM-L6-v2 GGUF is served by the llama.cpp registry like any model (and so by
``/v1/embeddings``); this wrapper adds a small LRU of recent texts, because the cache embeds the
same HA commands over and over.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from inference_server.backends.base import EmbeddingResult


class EmbeddingEngine(Protocol):
    async def embed(self, model: str, inputs: Sequence[str]) -> EmbeddingResult: ...


class Embedder:
    def __init__(self, engine: EmbeddingEngine, model: str, *, cache_size: int = 4096) -> None:
        self._engine = engine
        self.model = model
        self._cache: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._cache_size = cache_size

    async def embed(self, text: str) -> tuple[float, ...]:
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        result = await self._engine.embed(self.model, [text])
        vector = tuple(result.vectors[0])
        self._cache[text] = vector
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return vector


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Vectors from the engine are L2-normalised, but stored ones may come from a peer: divide."""
    dot = math.fsum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(math.fsum(x * x for x in a))
    nb = math.sqrt(math.fsum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
