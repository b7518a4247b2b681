"""The llama.cpp engine against the real Gemma 3 270M: batching, cancellation, limits, grammar.

One engine (4 slots, 512-token context) is loaded per module; every test leaves it idle. Outputs
are greedy (temperature 0) so they are reproducible, and max_tokens stays small because the CI
machine has two cores. One decode thread: with two, llama.cpp's per-node barriers stall whenever
another process takes a core, and timing-sensitive tests would flake on a busy machine.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from inference_server.backends.base import (
    FinishEvent,
    GenerationEvent,
    GenerationRequest,
    GenerationTimeoutError,
    InvalidGrammarError,
    PromptTooLongError,
    QueueFullError,
    SamplingParams,
    TokenEvent,
)
from inference_server.backends.llama_cpp import LlamaCppEngine, _split_stop
from inference_server.config import ModelSettings

PROMPT = "The history of the Roman Empire is"
SLOTS = 4
QUEUE = 1
CONTEXT = 512


@pytest.fixture(scope="module")
def engine(gguf_path: Path) -> Iterator[LlamaCppEngine]:
    settings = ModelSettings(
        slots=SLOTS, queue_size=QUEUE, context_size=CONTEXT, max_tokens_default=16, threads=1
    )
    eng = LlamaCppEngine("gemma-3-270m", gguf_path, settings)
    eng.load()
    yield eng
    eng.close()


@pytest.fixture(autouse=True)
async def _engine_idle_after(engine: LlamaCppEngine) -> AsyncIterator[None]:
    yield
    await _wait_idle(engine)
    assert engine.queue_depth() == 0
    assert not any(slot.busy for slot in engine.slots())


async def _wait_idle(engine: LlamaCppEngine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (engine.active or any(s.busy for s in engine.slots())) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _request(prompt: str = PROMPT, **params: object) -> GenerationRequest:
    params.setdefault("temperature", 0.0)
    return GenerationRequest(model="gemma-3-270m", prompt=prompt, params=SamplingParams(**params))  # type: ignore[arg-type]


async def _run(engine: LlamaCppEngine, request: GenerationRequest) -> tuple[str, FinishEvent]:
    parts: list[str] = []
    finish: FinishEvent | None = None
    async for event in engine.generate(request):
        assert finish is None, "nothing may follow the FinishEvent"
        if isinstance(event, TokenEvent):
            parts.append(event.text)
        else:
            finish = event
    assert finish is not None
    return "".join(parts), finish


async def test_single_generation_usage_and_timings(engine: LlamaCppEngine) -> None:
    text, finish = await _run(engine, _request(max_tokens=12))
    assert text.strip()
    assert finish.finish_reason == "length"
    assert finish.usage.prompt_tokens == len(engine.tokenize(PROMPT))
    assert finish.usage.completion_tokens == 12
    assert finish.usage.total_tokens == finish.usage.prompt_tokens + 12
    assert finish.prompt_seconds > 0
    assert finish.generation_seconds > 0
    assert finish.queue_seconds >= 0


async def test_default_max_tokens_from_settings(engine: LlamaCppEngine) -> None:
    _text, finish = await _run(engine, _request())
    assert finish.usage.completion_tokens == 16


async def test_four_concurrent_generations_match_single_runs(engine: LlamaCppEngine) -> None:
    """Greedy output must not depend on what else runs: different prompt lengths, staggered
    starts (so prompts are read while other sequences generate)."""
    prompts = [PROMPT, "My favourite pancake recipe", "Home automation lets you", "Hi"]
    references = [(await _run(engine, _request(p, max_tokens=20)))[0] for p in prompts]

    async def later(prompt: str, delay: float) -> tuple[str, FinishEvent]:
        await asyncio.sleep(delay)
        return await _run(engine, _request(prompt, max_tokens=20))

    results = await asyncio.gather(
        *(later(p, delay) for p, delay in zip(prompts, (0.0, 0.0, 0.05, 0.1), strict=True))
    )
    for (text, finish), reference in zip(results, references, strict=True):
        assert finish.finish_reason == "length"
        assert finish.usage.completion_tokens == 20
        assert text == reference


async def test_slots_and_queue_depth_report_live_state(engine: LlamaCppEngine) -> None:
    gen = engine.generate(_request(max_tokens=200))
    try:
        await anext(gen)
        busy = [slot for slot in engine.slots() if slot.busy]
        assert len(busy) == 1
        assert busy[0].model == "gemma-3-270m"
        assert busy[0].prompt_tokens == len(engine.tokenize(PROMPT))
        assert busy[0].generated_tokens >= 1
        assert engine.queue_depth() == 0
    finally:
        await gen.aclose()


async def test_closing_the_iterator_stops_token_production(engine: LlamaCppEngine) -> None:
    gen = engine.generate(_request(max_tokens=400))
    for _ in range(3):
        event = await anext(gen)
        assert isinstance(event, TokenEvent)
    steps_at_close = engine.decode_steps
    await gen.aclose()
    await _wait_idle(engine)
    assert not any(slot.busy for slot in engine.slots())
    # Only the decode step already in flight when the client left may have included it.
    assert engine.decode_steps - steps_at_close <= 1
    produced = engine.tokens_generated
    await asyncio.sleep(0.3)
    assert engine.tokens_generated == produced


async def test_queue_full_raises_at_once(engine: LlamaCppEngine) -> None:
    gens = [engine.generate(_request(max_tokens=300)) for _ in range(SLOTS)]
    waiting = engine.generate(_request(max_tokens=5))
    try:
        for gen in gens:
            await anext(gen)  # every slot is generating
        waiter = asyncio.ensure_future(anext(waiting))
        for _ in range(100):
            if engine.queue_depth() == QUEUE:
                break
            await asyncio.sleep(0.01)
        assert engine.queue_depth() == QUEUE
        started = time.monotonic()
        with pytest.raises(QueueFullError) as info:
            await anext(engine.generate(_request(max_tokens=5)))
        assert time.monotonic() - started < 0.5
        assert info.value.retry_after >= 1
        # Freeing one slot lets the waiting request in.
        await gens[0].aclose()
        first = await asyncio.wait_for(waiter, 10)
        assert isinstance(first, TokenEvent | FinishEvent)
    finally:
        for gen in gens:
            await gen.aclose()
        await waiting.aclose()


async def test_timeout_raises_without_finish_event(engine: LlamaCppEngine) -> None:
    request = GenerationRequest(
        model="gemma-3-270m",
        prompt=PROMPT,
        params=SamplingParams(max_tokens=400, temperature=0.0),
        timeout=0.4,
    )
    events: list[GenerationEvent] = []

    async def consume() -> None:
        async for event in engine.generate(request):
            events.append(event)

    started = time.monotonic()
    with pytest.raises(GenerationTimeoutError):
        await consume()
    assert time.monotonic() - started < 5.0  # 400 tokens would take far longer
    assert all(isinstance(e, TokenEvent) for e in events)


async def test_timeout_counts_time_spent_waiting_in_the_queue(engine: LlamaCppEngine) -> None:
    gens = [engine.generate(_request(max_tokens=300)) for _ in range(SLOTS)]
    try:
        for gen in gens:
            await anext(gen)
        waiting = GenerationRequest(
            model="gemma-3-270m",
            prompt=PROMPT,
            params=SamplingParams(max_tokens=4, temperature=0.0),
            timeout=0.3,
        )
        with pytest.raises(GenerationTimeoutError):
            await anext(engine.generate(waiting))
        assert engine.queue_depth() == 0
    finally:
        for gen in gens:
            await gen.aclose()


async def test_stop_string_cuts_the_text(engine: LlamaCppEngine) -> None:
    reference, _ = await _run(engine, _request(max_tokens=30))
    words = reference.split()
    stop = f"{words[4]} {words[5]}"  # spans tokens, so the hold-back logic is exercised
    expected = reference[: reference.index(stop)]
    pieces: list[str] = []
    finish: FinishEvent | None = None
    async for event in engine.generate(_request(max_tokens=30, stop=(stop, "§never§"))):
        if isinstance(event, TokenEvent):
            pieces.append(event.text)
        else:
            finish = event
    assert "".join(pieces) == expected
    assert finish is not None
    assert finish.finish_reason == "stop"
    assert not any(stop in piece for piece in pieces)


@pytest.mark.parametrize(
    ("held", "text", "stops", "expected"),
    [
        ("", "hello wor", ("world",), ("hello ", "wor", False)),
        ("wor", "ld peace", ("world",), ("", "", True)),
        ("wor", "st case", ("world",), ("worst case", "", False)),
        ("", "a</s", ("</stop>", "</x>"), ("a", "</s", False)),
        ("", "abc", ("b", "abc"), ("", "", True)),  # the earliest match wins
        ("", "plain", (), ("plain", "", False)),
    ],
)
def test_split_stop_holds_back_only_possible_prefixes(
    held: str, text: str, stops: tuple[str, ...], expected: tuple[str, str, bool]
) -> None:
    assert _split_stop(held, text, stops) == expected


async def test_grammar_constrains_the_output(engine: LlamaCppEngine) -> None:
    grammar = 'root ::= "yes" | "no"'
    text, finish = await _run(
        engine, _request("Is the sky blue? Answer:", grammar=grammar, max_tokens=8)
    )
    assert text in {"yes", "no"}
    assert finish.finish_reason == "stop"


async def test_grammar_output_with_multibyte_characters(engine: LlamaCppEngine) -> None:
    expected = "Größe: 🎉 ça ✓"
    grammar = 'root ::= "' + expected + '"'
    text, finish = await _run(engine, _request("Write:", grammar=grammar, max_tokens=40))
    assert text == expected
    assert finish.finish_reason == "stop"


async def test_invalid_grammar_raises_before_any_event(engine: LlamaCppEngine) -> None:
    gen = engine.generate(_request(grammar="root ::= (", max_tokens=4))
    with pytest.raises(InvalidGrammarError):
        await anext(gen)


async def test_prompt_too_long(engine: LlamaCppEngine) -> None:
    prompt = "word " * (CONTEXT + 10)
    with pytest.raises(PromptTooLongError) as info:
        await anext(engine.generate(_request(prompt, max_tokens=4)))
    assert info.value.context_size == CONTEXT
    assert info.value.prompt_tokens > CONTEXT


async def test_max_tokens_capped_by_remaining_context(engine: LlamaCppEngine) -> None:
    prompt = "one two three four five six seven eight nine ten " * 50
    n_prompt = len(engine.tokenize(prompt))
    assert CONTEXT - 20 < n_prompt < CONTEXT, n_prompt
    _text, finish = await _run(engine, _request(prompt, max_tokens=400))
    assert finish.finish_reason == "length"
    assert finish.usage.prompt_tokens == n_prompt
    assert finish.usage.completion_tokens == CONTEXT - n_prompt


async def test_embeddings_are_normalised_and_stable(engine: LlamaCppEngine) -> None:
    result = await engine.embed(["turn on the kitchen light", "the weather is sunny"])
    assert len(result.vectors) == 2
    assert result.prompt_tokens == sum(
        len(engine.tokenize(t)) for t in ["turn on the kitchen light", "the weather is sunny"]
    )
    for vec in result.vectors:
        assert len(vec) == engine.info.n_embd
        assert math.isclose(math.sqrt(sum(v * v for v in vec)), 1.0, rel_tol=1e-4)
    again = await engine.embed(["turn on the kitchen light"])
    assert again.vectors[0] == pytest.approx(result.vectors[0], abs=1e-5)
    assert result.vectors[0] != pytest.approx(result.vectors[1], abs=1e-3)


async def test_embedding_input_too_long(engine: LlamaCppEngine) -> None:
    with pytest.raises(PromptTooLongError):
        await engine.embed(["word " * (engine.embedding_size + 10)])


async def test_embedding_while_generating(engine: LlamaCppEngine) -> None:
    generation = asyncio.ensure_future(_run(engine, _request(max_tokens=16)))
    result = await engine.embed(["hello"])
    text, finish = await generation
    assert len(result.vectors[0]) == engine.info.n_embd
    assert finish.usage.completion_tokens == 16
    assert text


async def test_tokenizer_info(engine: LlamaCppEngine) -> None:
    info = engine.tokenizer_info(None)
    assert info.add_bos is True
    assert info.bos_token == "<bos>"
    assert info.eos_token == "<eos>"
    assert info.eot_token == "<end_of_turn>"
    assert info.chat_template is None
    # add_bos=False requests (templates that write <bos> themselves) get no second BOS.
    assert len(engine.tokenize("hi", add_bos=False)) == len(engine.tokenize("hi")) - 1
    assert (
        engine.tokenize("<start_of_turn>user", add_bos=False)[0]
        == engine.tokenize("<start_of_turn>", add_bos=False)[0]
    )
