"""Sweep the semantic cache's threshold over a Home-Assistant dev set; print hit/wrong-hit rates.

    scripts/shell python -m bench.cache_sweep [--data-dir DIR] [--devset FILE] [--heldout]

Every group's request is cached; each paraphrase should hit its group, each near-miss must not
hit a group it does not belong to. For each threshold the table shows the share of paraphrases
that hit (correctly), and the share of all queries that hit a wrong group, with the content
guard (what the server does) and without it (embedding similarity alone). The chosen threshold
is the lowest one whose wrong-hit rate with the guard is at most 1 %; it maximises hits.

Uses the same code as the server: the bundled all-MiniLM-L6-v2 GGUF on llama.cpp, and
``inference_server.memory.guard`` / ``embedder.cosine``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_server.memory.embedder import cosine
from inference_server.memory.guard import compatible, signature

DEVSET = Path(__file__).parent / "data" / "cache_devset.json"
THRESHOLDS = tuple(round(0.50 + 0.025 * i, 3) for i in range(19))
MAX_WRONG = 0.01

Embed = Callable[[Sequence[str]], Awaitable[list[Sequence[float]]]]


@dataclass(frozen=True, slots=True)
class Row:
    threshold: float
    hit_rate: float
    wrong_rate: float
    hit_rate_unguarded: float
    wrong_rate_unguarded: float


@dataclass(frozen=True, slots=True)
class Sweep:
    rows: tuple[Row, ...]
    chosen: Row | None
    paraphrases: int
    queries: int
    guard_microseconds: float
    wrong_examples: tuple[str, ...]
    missed_examples: tuple[str, ...]


def load_devset(path: Path = DEVSET) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["groups"]
    return groups


async def sweep(groups: list[dict[str, Any]], embed: Embed) -> Sweep:
    requests = [g["request"] for g in groups]
    owners: dict[str, set[int]] = {}
    for index, group in enumerate(groups):
        for text in (group["request"], *group["paraphrases"]):
            owners.setdefault(text.lower(), set()).add(index)
    queries: list[tuple[str, set[int], bool]] = []
    for index, group in enumerate(groups):
        queries += [(text, {index}, True) for text in group["paraphrases"]]
        queries += [(text, owners.get(text.lower(), set()), False) for text in group["near_misses"]]
    texts = [q[0] for q in queries]
    vectors = await embed(requests + texts)
    cached, asked = vectors[: len(requests)], vectors[len(requests) :]
    started = time.perf_counter()
    cached_sigs = [signature(r) for r in requests]
    asked_sigs = [signature(t) for t in texts]
    guard_us = (time.perf_counter() - started) / (len(requests) + len(texts)) * 1e6

    # For each query: the best (score, group) with and without the guard.
    best: list[tuple[tuple[float, int] | None, tuple[float, int] | None]] = []
    for vector, sig in zip(asked, asked_sigs, strict=True):
        scores = [(cosine(vector, c), i) for i, c in enumerate(cached)]
        unguarded = max(scores)
        allowed = [s for s in scores if compatible(sig, cached_sigs[s[1]])]
        best.append((max(allowed) if allowed else None, unguarded))

    paraphrases = sum(1 for q in queries if q[2])
    rows = []
    for threshold in THRESHOLDS:
        counts = {"hit": 0, "wrong": 0, "hit_u": 0, "wrong_u": 0}
        for (_text, expected, is_paraphrase), (guarded, unguarded) in zip(
            queries, best, strict=True
        ):
            for candidate, hit_key, wrong_key in ((guarded, "hit", "wrong"),
                                                  (unguarded, "hit_u", "wrong_u")):  # fmt: skip
                if candidate is None or candidate[0] < threshold:
                    continue
                if candidate[1] in expected:
                    counts[hit_key] += is_paraphrase
                else:
                    counts[wrong_key] += 1
        rows.append(
            Row(
                threshold=threshold,
                hit_rate=counts["hit"] / paraphrases,
                wrong_rate=counts["wrong"] / len(queries),
                hit_rate_unguarded=counts["hit_u"] / paraphrases,
                wrong_rate_unguarded=counts["wrong_u"] / len(queries),
            )
        )
    eligible = [r for r in rows if r.wrong_rate <= MAX_WRONG]
    chosen = max(eligible, key=lambda r: (r.hit_rate, -r.wrong_rate, r.threshold), default=None)
    wrong: list[str] = []
    missed: list[str] = []
    if chosen is not None:
        for (text, expected, is_paraphrase), (guarded, _) in zip(queries, best, strict=True):
            if guarded is not None and guarded[0] >= chosen.threshold:
                if guarded[1] not in expected:
                    wrong.append(f"{text!r} -> {requests[guarded[1]]!r} ({guarded[0]:.3f})")
            elif is_paraphrase:
                near = "blocked by the guard" if guarded is None else f"{guarded[0]:.3f}"
                missed.append(f"{text!r} (for {requests[next(iter(expected))]!r}: {near})")
    return Sweep(
        rows=tuple(rows),
        chosen=chosen,
        paraphrases=paraphrases,
        queries=len(queries),
        guard_microseconds=guard_us,
        wrong_examples=tuple(wrong),
        missed_examples=tuple(missed),
    )


def print_sweep(result: Sweep) -> None:
    print(f"{result.paraphrases} paraphrases, {result.queries} queries in all")
    print(
        "threshold | hits (guard) | wrong (guard) | hits (embedding only) | wrong (embedding only)"
    )
    for r in result.rows:
        mark = "  <- chosen" if r is result.chosen else ""
        print(
            f"{r.threshold:9.3f} | {r.hit_rate:12.1%} | {r.wrong_rate:13.2%} | "
            f"{r.hit_rate_unguarded:21.1%} | {r.wrong_rate_unguarded:22.2%}{mark}"
        )
    print(f"guard cost: {result.guard_microseconds:.1f} µs per request (signature)")
    if result.wrong_examples:
        print("wrong hits at the chosen threshold:")
        for line in result.wrong_examples:
            print("  ", line)
    if result.missed_examples:
        print("paraphrases missed at the chosen threshold:")
        for line in result.missed_examples:
            print("  ", line)


def engine_embed(data_dir: Path) -> tuple[Embed, Callable[[], None]]:
    """The bundled embedding model on llama.cpp (converted into ``data_dir`` if needed)."""
    from inference_server.backends.llama_cpp import LlamaCppEngine  # noqa: PLC0415
    from inference_server.config import ModelSettings  # noqa: PLC0415
    from inference_server.models.embedding import (  # noqa: PLC0415
        EMBEDDING_MODEL_ID,
        ensure_embedding_model,
    )

    engine = LlamaCppEngine(
        EMBEDDING_MODEL_ID,
        ensure_embedding_model(data_dir),
        ModelSettings(slots=1, context_size=512),
    )
    engine.load()

    async def embed(texts: Sequence[str]) -> list[Sequence[float]]:
        return list((await engine.embed(list(texts))).vectors)

    return embed, engine.close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--devset", type=Path, default=DEVSET)
    parser.add_argument(
        "--heldout", action="store_true", help="use bench/data/cache_heldout.json (never tuned on)"
    )
    args = parser.parse_args()
    if args.heldout:
        args.devset = DEVSET.with_name("cache_heldout.json")
    with tempfile.TemporaryDirectory() as tmp:
        embed, close = engine_embed(args.data_dir or Path(tmp))
        try:
            result = asyncio.run(sweep(load_devset(args.devset), embed))
        finally:
            close()
    print_sweep(result)


if __name__ == "__main__":
    main()
