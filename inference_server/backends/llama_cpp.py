"""One loaded GGUF model served with continuous batching over llama.cpp's low-level API.

Why not ``llama_cpp.Llama``: it owns one sequence per context, so two HA voice requests would
queue behind each other. Here one ``llama_context`` holds ``slots`` independent KV streams
(``n_seq_max = slots``, non-unified KV, so every slot really gets ``context_size`` tokens) and every
decode step feeds one ``llama_batch`` with the next token of each running sequence; prompts of
newly admitted requests are read between steps (see ``_run`` for why not in the same batch). A
sequence that ends (EOS, length, stop string, disconnect, timeout) leaves the batch at the next
step and its KV cells are dropped, so a waiting request takes its slot without waiting for the
others.

Threading: all llama.cpp calls on the generation context happen on ONE dedicated decode thread
(ctypes releases the GIL during ``llama_decode``, so the event loop keeps running). The asyncio side
only tokenizes, compiles grammars and reads per-request ``asyncio.Queue`` objects that the decode
thread fills through ``loop.call_soon_threadsafe`` - one call per decode step, not per token.
Embeddings use a second, small context on the same weights; a process-wide lock makes it take
turns with decode steps instead of fighting them for the cores.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import llama_cpp.llama_cpp as llama

from inference_server.backends.base import (
    BackendError,
    EmbeddingResult,
    FinishEvent,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    GenerationTimeoutError,
    InvalidGrammarError,
    ModelLoadError,
    PromptTooLongError,
    QueueFullError,
    SamplingParams,
    SlotStatus,
    TokenEvent,
    TokenizerInfo,
    Usage,
)
from inference_server.config import ModelSettings

_LOGGER = logging.getLogger(__name__)
_NATIVE_LOGGER = logging.getLogger("inference_server.llama_cpp.native")

_PIECE_BUF_SIZE: Final = 256
_INLINE_TOKENIZE_CHARS: Final = 4096
"""Prompts shorter than this are tokenized on the event loop (tens of microseconds); longer ones,
and anything with a grammar, go to a worker thread so a 100 kB prompt never stalls other clients."""
_IDLE_WAIT_SECONDS: Final = 1.0
_EMBED_MAX_TOKENS: Final = 512


# --------------------------------------------------------------------------------------------
# llama.cpp process-wide setup: backend init once, native log lines into Python logging.
# --------------------------------------------------------------------------------------------

_GGML_LEVELS: Final = {  # enum ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
    1: logging.DEBUG,
    2: logging.INFO,
    3: logging.WARNING,
    4: logging.ERROR,
}
_native_state: dict[str, Any] = {"level": logging.DEBUG, "line": "", "last_error": ""}
_init_lock = threading.Lock()
_initialized = False

_COMPUTE_LOCK = threading.Lock()
"""Held around every ``llama_decode`` in the process. Each decode already uses every configured
core; two at once (a second model, or embeddings next to generation) oversubscribe the CPU, and
llama.cpp's per-node thread barriers then wait a scheduler slice each: tokens/s collapses by 10x
or more. Taking turns keeps total throughput at what the cores can give."""


@llama.llama_log_callback  # type: ignore[untyped-decorator]
def _native_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """Collect llama.cpp's log fragments into lines; its INFO chatter is DEBUG for us."""
    if level != 5:  # 5 = GGML_LOG_LEVEL_CONT continues the previous line
        _native_state["level"] = _GGML_LEVELS.get(level, logging.DEBUG)
    line = _native_state["line"] + text.decode("utf-8", errors="replace")
    if not line.endswith("\n"):
        _native_state["line"] = line
        return
    _native_state["line"] = ""
    py_level = _native_state["level"]
    message = line.rstrip()
    if py_level >= logging.ERROR:
        _native_state["last_error"] = message
    if py_level == logging.INFO:
        py_level = logging.DEBUG
    if message and _NATIVE_LOGGER.isEnabledFor(py_level):
        _NATIVE_LOGGER.log(py_level, "%s", message)


def _ensure_backend() -> None:
    global _initialized  # noqa: PLW0603 - process-wide native state, initialised once
    with _init_lock:
        if _initialized:
            return
        llama.llama_log_set(_native_log, ctypes.c_void_p(0))
        llama.llama_backend_init()
        _initialized = True


# --------------------------------------------------------------------------------------------
# Per-request state
# --------------------------------------------------------------------------------------------


class _Sequence:
    """One request's life inside the engine; touched by the decode thread once admitted."""

    __slots__ = (
        "cancelled",
        "chain",
        "deadline",
        "decoder",
        "finished",
        "generated",
        "held",
        "last_token",
        "loop",
        "max_tokens",
        "n_past",
        "prompt",
        "prompt_fed",
        "queue",
        "slot",
        "stops",
        "t_admit",
        "t_first",
        "t_submit",
    )

    def __init__(
        self,
        *,
        prompt: list[int],
        chain: int,
        max_tokens: int,
        stops: tuple[str, ...],
        deadline: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.prompt = prompt
        self.chain = chain
        self.max_tokens = max_tokens
        self.stops = stops
        self.deadline = deadline
        self.loop = loop
        self.queue: asyncio.Queue[GenerationEvent | BaseException] = asyncio.Queue()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""
        self.slot = -1
        self.prompt_fed = 0
        self.n_past = 0
        self.last_token = 0
        self.generated = 0
        self.cancelled = False
        """Set from the event loop when the consumer went away; the decode thread drops it."""
        self.finished = False
        """Set when the final item (FinishEvent or error) was handed to the queue."""
        self.t_submit = time.monotonic()
        self.t_admit = 0.0
        self.t_first = 0.0


def _split_stop(held: str, text: str, stops: tuple[str, ...]) -> tuple[str, str, bool]:
    """Return (text safe to emit, text to hold back, stop matched).

    The held-back tail is the longest suffix that could still grow into a stop string, so a stop
    string is never emitted partially and text before it is never delayed longer than necessary.
    """
    buf = held + text
    cut = -1
    for stop in stops:
        i = buf.find(stop)
        if i != -1 and (cut == -1 or i < cut):
            cut = i
    if cut != -1:
        return buf[:cut], "", True
    keep = 0
    n = len(buf)
    for stop in stops:
        for k in range(min(len(stop) - 1, n), keep, -1):
            if buf.endswith(stop[:k]):
                keep = k
                break
    if keep:
        return buf[: n - keep], buf[n - keep :], False
    return buf, "", False


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineInfo:
    """Facts about the loaded model that the registry reports."""

    n_ctx_train: int
    context_size: int
    n_vocab: int
    n_embd: int
    description: str


class LlamaCppEngine:
    """Serve one GGUF model: generation with continuous batching, embeddings, tokenization."""

    def __init__(
        self, model_id: str, path: Path, settings: ModelSettings, *, repack: bool = False
    ) -> None:
        """``repack`` lets llama.cpp repack weights for its faster CPU kernels; off by default
        because those kernels make results depend on batch composition (same seed, temperature 0
        and prompt would answer differently under load), and on x86 it measured no faster."""
        self.model_id = model_id
        self._repack = repack
        self.path = path
        self._settings = settings
        self._n_slots = max(1, settings.slots)
        self._threads = settings.threads or os.cpu_count() or 1
        self._slot_limit = self._n_slots
        """Slots admitted at once; power modes lower it below the allocated ``_n_slots``."""
        self._want_threads = self._threads
        """Threads asked for; the decode thread applies it between steps (llama.cpp is not
        thread-safe around a running decode)."""
        self._model: int | None = None
        self._vocab: int | None = None
        self._ctx: int | None = None
        self._mem: int | None = None
        self._batch: llama.llama_batch | None = None
        self._batch_cap = 0
        self._context_size = settings.context_size
        self._info: EngineInfo | None = None
        self._piece_buf = ctypes.create_string_buffer(_PIECE_BUF_SIZE)
        self._pieces: list[bytes | None] = []

        self._cond = threading.Condition()
        self._pending: deque[_Sequence] = deque()
        self._slot_seqs: list[_Sequence | None] = [None] * self._n_slots
        self._running: list[_Sequence] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._fatal: BaseException | None = None
        self._avg_request_seconds = 5.0

        self._embed_lock = threading.Lock()
        self._embed_ctx: int | None = None
        self._embed_batch: llama.llama_batch | None = None

        self.users = 0
        """Callers between lookup and done (tokenizing in a thread, say); kept by the registry."""
        self.tokens_generated = 0
        """Tokens sampled since load, across all sequences (tests watch it to see work stop)."""
        self.decode_steps = 0

    # ------------------------------------------------------------------ lifecycle (blocking)

    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            raise BackendError(f"The model '{self.model_id}' is not loaded")
        return self._info

    @property
    def context_size(self) -> int:
        """Tokens of context one request may use (prompt + completion)."""
        return self._context_size

    @property
    def embedding_size(self) -> int:
        """Longest input :meth:`embed` takes, in tokens.

        Mean pooling needs the whole input in one micro-batch, and llama.cpp reserves compute
        memory for full-vocabulary logits of every token in it (about 1 GB per 1000 tokens for
        Gemma's 262k vocabulary), so the embedding context stays small; inputs to embed (memory
        entries, cache keys) are sentences, not documents.
        """
        return min(self._context_size, _EMBED_MAX_TOKENS)

    def load(self) -> None:
        """Load weights, create the batched context and start the decode thread (blocking)."""
        _ensure_backend()
        if not self.path.is_file():
            raise ModelLoadError(f"The model file {self.path} does not exist")
        mparams = llama.llama_model_default_params()
        mparams.n_gpu_layers = 0
        # Repacked weights use a different matmul kernel for batches than for single tokens, so
        # a greedy answer would depend on how many other requests happened to share the step.
        mparams.use_extra_bufts = self._repack
        model = llama.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            raise ModelLoadError(
                f"llama.cpp could not load {self.path}: {_native_state['last_error'] or 'unknown'}"
            )
        try:
            self._init_context(model)
        except BaseException:
            llama.llama_model_free(model)
            raise
        self._thread = threading.Thread(
            target=self._decode_loop, name=f"decode-{self.model_id}", daemon=True
        )
        self._thread.start()
        _LOGGER.info(
            "Loaded %s (%s): %d slots x %d tokens, %d threads",
            self.model_id,
            self._info.description if self._info else "?",
            self._n_slots,
            self._context_size,
            self._threads,
        )

    def _init_context(self, model: int) -> None:
        vocab = llama.llama_model_get_vocab(model)
        n_ctx_train = int(llama.llama_model_n_ctx_train(model))
        per_slot = min(self._settings.context_size, n_ctx_train or self._settings.context_size)
        cparams = llama.llama_context_default_params()
        cparams.n_ctx = per_slot * self._n_slots
        n_batch = max(self._settings.batch_size, self._n_slots)
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(n_batch, 512)
        cparams.n_seq_max = self._n_slots
        cparams.n_threads = self._threads
        cparams.n_threads_batch = self._threads
        cparams.kv_unified = False
        cparams.no_perf = True
        cparams.embeddings = False
        ctx = llama.llama_init_from_model(model, cparams)
        if not ctx:
            raise ModelLoadError(
                f"llama.cpp could not create a context for {self.path} "
                f"({_native_state['last_error'] or 'out of memory?'})"
            )
        self._model = model
        self._vocab = vocab
        self._ctx = ctx
        self._mem = llama.llama_get_memory(ctx)
        # A slot's real size is what llama.cpp gave each sequence (n_ctx may be rounded).
        self._context_size = min(per_slot, int(llama.llama_n_ctx_seq(ctx)))
        self._batch_cap = n_batch
        self._batch = llama.llama_batch_init(n_batch, 0, 1)
        for i in range(n_batch):
            self._batch.n_seq_id[i] = 1
        n_vocab = int(llama.llama_vocab_n_tokens(vocab))
        self._pieces = [None] * n_vocab
        desc = ctypes.create_string_buffer(256)
        llama.llama_model_desc(model, desc, 256)
        self._info = EngineInfo(
            n_ctx_train=n_ctx_train,
            context_size=self._context_size,
            n_vocab=n_vocab,
            n_embd=int(llama.llama_model_n_embd(model)),
            description=desc.value.decode("utf-8", errors="replace"),
        )

    def close(self) -> None:
        """Stop the decode thread, fail what is still queued or running, free native memory."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._embed_lock:
            if self._embed_batch is not None:
                llama.llama_batch_free(self._embed_batch)
                self._embed_batch = None
            if self._embed_ctx is not None:
                llama.llama_free(self._embed_ctx)
                self._embed_ctx = None
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None
            self._mem = None
        if self._model is not None:
            llama.llama_model_free(self._model)
            self._model = None
            self._vocab = None
        _LOGGER.info("Unloaded %s", self.model_id)

    # ------------------------------------------------------------------ tokenizer

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Tokenize with special-token parsing (chat templates write ``<start_of_turn>``).

        ``add_bos`` is honoured only when the model wants a BOS at all. Thread-safe: it only
        reads the vocabulary.
        """
        vocab = self._require_vocab()
        data = text.encode("utf-8")
        add = add_bos and bool(llama.llama_vocab_get_add_bos(vocab))
        cap = len(data) + 8
        buf = (llama.llama_token * cap)()
        n = llama.llama_tokenize(vocab, data, len(data), buf, cap, add, True)
        if n < 0:
            cap = -n
            buf = (llama.llama_token * cap)()
            n = llama.llama_tokenize(vocab, data, len(data), buf, cap, add, True)
            if n < 0:
                raise BackendError("tokenization failed")
        return buf[:n]

    def tokenizer_info(self, chat_template: str | None) -> TokenizerInfo:
        vocab = self._require_vocab()
        return TokenizerInfo(
            add_bos=bool(llama.llama_vocab_get_add_bos(vocab)),
            bos_token=self._token_text(llama.llama_vocab_bos(vocab)),
            eos_token=self._token_text(llama.llama_vocab_eos(vocab)),
            eot_token=self._token_text(llama.llama_vocab_eot(vocab)),
            chat_template=chat_template,
        )

    def _token_text(self, token: int) -> str | None:
        if token < 0:
            return None
        raw = llama.llama_vocab_get_text(self._require_vocab(), token)
        return raw.decode("utf-8", errors="replace") if raw else None

    def _require_vocab(self) -> int:
        if self._vocab is None:
            raise BackendError(f"The model '{self.model_id}' is not loaded")
        return self._vocab

    def _piece(self, token: int) -> bytes:
        """Bytes of one token; cached per token id because the same few thousand ids recur."""
        cached = self._pieces[token]
        if cached is not None:
            return cached
        buf = self._piece_buf
        n = llama.llama_token_to_piece(self._vocab, token, buf, _PIECE_BUF_SIZE, 0, False)
        if n < 0:
            bigger = ctypes.create_string_buffer(-n)
            n = llama.llama_token_to_piece(self._vocab, token, bigger, -n, 0, False)
            piece = bigger.raw[:n]
        else:
            piece = buf.raw[:n]
        self._pieces[token] = piece
        return piece

    # ------------------------------------------------------------------ status

    def slots(self) -> list[SlotStatus]:
        out: list[SlotStatus] = []
        for i, seq in enumerate(self._slot_seqs):
            if seq is None:
                out.append(SlotStatus(id=i, busy=False))
            else:
                out.append(
                    SlotStatus(
                        id=i,
                        busy=True,
                        model=self.model_id,
                        prompt_tokens=len(seq.prompt),
                        generated_tokens=seq.generated,
                    )
                )
        return out

    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> int:
        """Requests queued or generating plus callers holding the engine (see ``users``); the
        registry never closes an engine while this is > 0."""
        running = sum(1 for seq in self._running if not seq.cancelled)
        return len(self._pending) + running + self.users

    # ------------------------------------------------------------------ generation (asyncio)

    def _check_capacity(self) -> None:
        """Called with or without the lock: a snapshot is enough to reject early."""
        if self._stopping:
            raise BackendError(f"The model '{self.model_id}' is being unloaded")
        if self._fatal is not None:
            raise BackendError(f"The engine for '{self.model_id}' failed: {self._fatal}")
        in_flight = len(self._running) + len(self._pending)
        if in_flight >= self._slot_limit + self._settings.queue_size:
            raise QueueFullError(self._retry_after())

    def _retry_after(self) -> float:
        waiting = len(self._pending) + 1
        return float(max(1, math.ceil(self._avg_request_seconds * waiting / self._slot_limit)))

    # ------------------------------------------------------------------ runtime limits

    @property
    def threads(self) -> int:
        """CPU threads the next decode step uses."""
        return self._want_threads

    @property
    def slot_limit(self) -> int:
        return self._slot_limit

    def set_limits(self, *, threads: int, slots: int) -> None:
        """Change threads and admitted slots without reloading (power modes).

        Slots can only shrink below what the context was created with: running requests keep
        their slot, new ones wait until fewer than ``slots`` run. Threads change between two
        decode steps.
        """
        with self._cond:
            self._slot_limit = max(1, min(slots, self._n_slots))
            self._want_threads = max(1, threads)
            self._cond.notify_all()

    def _prepare(self, request: GenerationRequest) -> tuple[list[int], int, int]:
        """Tokenize, check the length and build the sampler chain (may run in a worker thread)."""
        tokens = self.tokenize(request.prompt, add_bos=request.add_bos)
        if not tokens:
            tokens = [int(llama.llama_vocab_bos(self._require_vocab()))]
        if len(tokens) >= self._context_size:
            raise PromptTooLongError(len(tokens), self._context_size)
        params = request.params
        requested = params.max_tokens or self._settings.max_tokens_default
        max_tokens = max(1, min(requested, self._context_size - len(tokens)))
        chain = self._build_chain(params)
        return tokens, chain, max_tokens

    def _build_chain(self, params: SamplingParams) -> int:
        vocab = self._require_vocab()
        cparams = llama.llama_sampler_chain_default_params()
        cparams.no_perf = True
        chain: int = llama.llama_sampler_chain_init(cparams)
        try:
            if params.grammar:
                _native_state["last_error"] = ""
                grammar = llama.llama_sampler_init_grammar(
                    vocab, params.grammar.encode("utf-8"), b"root"
                )
                if not grammar:
                    detail = _native_state["last_error"] or "it does not parse"
                    raise InvalidGrammarError(f"The grammar is invalid: {detail}")
                llama.llama_sampler_chain_add(chain, grammar)
            if params.temperature <= 0.0:
                llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
            else:
                if params.top_p < 1.0:
                    llama.llama_sampler_chain_add(
                        chain, llama.llama_sampler_init_top_p(params.top_p, 1)
                    )
                llama.llama_sampler_chain_add(
                    chain, llama.llama_sampler_init_temp(params.temperature)
                )
                seed = llama.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
                llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(seed))
        except BaseException:
            llama.llama_sampler_free(chain)
            raise
        return chain

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent]:
        """Yield TokenEvents then one FinishEvent; see :class:`TextBackend.generate`."""
        loop = asyncio.get_running_loop()
        t_start = time.monotonic()
        timeout = request.timeout if request.timeout is not None else self._settings.request_timeout
        self._check_capacity()
        if request.params.grammar or len(request.prompt) > _INLINE_TOKENIZE_CHARS:
            prepared = loop.run_in_executor(None, self._prepare, request)
            try:
                tokens, chain, max_tokens = await asyncio.shield(prepared)
            except asyncio.CancelledError:
                prepared.add_done_callback(_free_prepared_chain)
                raise
        else:
            tokens, chain, max_tokens = self._prepare(request)
        seq = _Sequence(
            prompt=tokens,
            chain=chain,
            max_tokens=max_tokens,
            stops=tuple(s for s in request.params.stop if s),
            deadline=t_start + timeout,
            loop=loop,
        )
        seq.t_submit = t_start
        with self._cond:
            try:
                self._check_capacity()
            except BaseException:
                llama.llama_sampler_free(chain)
                raise
            self._pending.append(seq)
            self._cond.notify()
        queue = seq.queue
        try:
            while True:
                item = await queue.get()
                if item.__class__ is TokenEvent:
                    yield item
                elif item.__class__ is FinishEvent:
                    yield item
                    return
                else:
                    raise item  # type: ignore[misc]
        finally:
            if not seq.finished:
                self._abandon(seq)

    def _abandon(self, seq: _Sequence) -> None:
        """The consumer left: drop the request from the queue, or tell the decode thread."""
        seq.cancelled = True
        with self._cond:
            try:
                self._pending.remove(seq)
            except ValueError:
                return  # already admitted: the decode thread retires it before its next step
            llama.llama_sampler_free(seq.chain)
            seq.chain = 0

    # ------------------------------------------------------------------ the decode thread

    def _decode_loop(self) -> None:
        try:
            self._run()
        except BaseException as err:  # pragma: no cover - a bug or a native failure
            _LOGGER.exception("The decode thread of %s failed", self.model_id)
            self._fatal = err
        finally:
            self._fail_all(
                BackendError(f"The model '{self.model_id}' was unloaded")
                if self._fatal is None
                else BackendError(f"The engine for '{self.model_id}' failed: {self._fatal}")
            )

    def _run(self) -> None:
        """One iteration = one decode step for every generating sequence, then prompt chunks.

        Prompts are decoded in calls of their own, never mixed into the generation batch:
        llama.cpp splits a mixed batch into equal per-sequence pieces, and a prompt evaluated in
        different pieces gives (slightly) different logits, so a greedy answer would depend on
        what else was running. Decode steps of single tokens are batch-invariant, so this keeps
        "same prompt, same seed, temperature 0 -> same text" true under load, at the cost of one
        extra ``llama_decode`` call per step while a prompt is being read.
        """
        assert self._batch is not None  # nosec B101: type narrowing of an invariant, not a runtime check
        batch = self._batch
        # Typed Any: llama_cpp's ctypes hints for these arrays are wrong.
        tok: Any = batch.token
        pos: Any = batch.pos
        logits: Any = batch.logits
        seq_ptrs: list[Any] = [batch.seq_id[i] for i in range(self._batch_cap)]
        cap = self._batch_cap
        ctx = self._ctx
        decode = llama.llama_decode
        compute_lock = _COMPUTE_LOCK
        running = self._running
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Any]]] = {}

        while True:
            with self._cond:
                while not self._stopping and not self._pending and not running:
                    self._cond.wait(_IDLE_WAIT_SECONDS)
                if self._stopping:
                    return
                now = time.monotonic()
                if self._want_threads != self._threads:
                    self._threads = self._want_threads
                    llama.llama_set_n_threads(ctx, self._threads, self._threads)
                self._expire_pending(now, outbox)
                while self._pending and len(running) < self._slot_limit:
                    self._admit(self._pending.popleft(), now)

            # Drop sequences whose consumer left or whose time ran out.
            for seq in [s for s in running if s.cancelled or now >= s.deadline]:
                if not seq.cancelled:
                    self._post(outbox, seq, GenerationTimeoutError(_timeout_message(seq)))
                self._retire(seq)

            # 1. One token for every sequence that is generating.
            generating = [s for s in running if s.prompt_fed == len(s.prompt)]
            if generating:
                for n, seq in enumerate(generating):
                    tok[n] = seq.last_token
                    pos[n] = seq.n_past
                    seq_ptrs[n][0] = seq.slot
                    logits[n] = 1
                batch.n_tokens = len(generating)
                with compute_lock:
                    rc = decode(ctx, batch)
                self.decode_steps += 1
                if rc != 0:
                    self._decode_failed(rc, generating, outbox)
                else:
                    now = time.monotonic()
                    for n, seq in enumerate(generating):
                        seq.n_past += 1
                        if not seq.cancelled:
                            self._sample(outbox, seq, n, now)
                self._flush(outbox)

            # 2. Prompt chunks of newly admitted sequences, each in a call of its own.
            budget = cap
            for seq in [s for s in running if s.prompt_fed < len(s.prompt)]:
                if budget <= 0:
                    break
                if seq.cancelled:
                    continue
                prompt = seq.prompt
                start = seq.prompt_fed
                # Chunk boundaries depend on the prompt alone (multiples of the batch size).
                take = min(len(prompt) - start, cap - start % cap)
                slot = seq.slot
                for j in range(take):
                    tok[j] = prompt[start + j]
                    pos[j] = start + j
                    seq_ptrs[j][0] = slot
                    logits[j] = 0
                done = start + take == len(prompt)
                if done:
                    logits[take - 1] = 1
                batch.n_tokens = take
                with compute_lock:
                    rc = decode(ctx, batch)
                self.decode_steps += 1
                budget -= take
                if rc != 0:
                    self._decode_failed(rc, [seq], outbox)
                    continue
                seq.prompt_fed = seq.n_past = start + take
                if done and not seq.cancelled:
                    self._sample(outbox, seq, take - 1, time.monotonic())
            self._flush(outbox)

    def _sample(
        self,
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Any]]],
        seq: _Sequence,
        idx: int,
        now: float,
    ) -> None:
        """Sample the next token of ``seq`` from output row ``idx`` and turn it into events."""
        token = llama.llama_sampler_sample(seq.chain, self._ctx, idx)
        self.tokens_generated += 1
        if seq.t_first == 0.0:
            seq.t_first = now
        if llama.llama_vocab_is_eog(self._vocab, token):
            self._finish(outbox, seq, "stop", now)
            return
        seq.generated += 1
        seq.last_token = token
        text = seq.decoder.decode(self._piece(token))
        stopped = False
        if seq.stops and (text or seq.held):
            text, seq.held, stopped = _split_stop(seq.held, text, seq.stops)
        if text:
            self._post(outbox, seq, TokenEvent(text=text))
        if stopped:
            self._finish(outbox, seq, "stop", now, flush=False)
        elif seq.generated >= seq.max_tokens:
            self._finish(outbox, seq, "length", now)

    def _decode_failed(
        self,
        rc: int,
        seqs: list[_Sequence],
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Any]]],
    ) -> None:
        _LOGGER.error("llama_decode returned %d for %s", rc, self.model_id)
        for seq in seqs:
            if not seq.cancelled:
                self._post(outbox, seq, BackendError(f"llama_decode failed ({rc})"))
            self._retire(seq)

    def _admit(self, seq: _Sequence, now: float) -> None:
        slot = self._slot_seqs.index(None)
        self._slot_seqs[slot] = seq
        seq.slot = slot
        seq.t_admit = now
        self._running.append(seq)

    def _expire_pending(
        self, now: float, outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Any]]]
    ) -> None:
        """Queued requests time out too (called with the lock held)."""
        if not self._pending or all(s.deadline > now for s in self._pending):
            return
        keep: deque[_Sequence] = deque()
        for seq in self._pending:
            if seq.deadline > now:
                keep.append(seq)
                continue
            self._post(outbox, seq, GenerationTimeoutError(_timeout_message(seq)))
            llama.llama_sampler_free(seq.chain)
            seq.chain = 0
        self._pending = keep

    def _finish(
        self,
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Any]]],
        seq: _Sequence,
        reason: FinishReason,
        now: float,
        *,
        flush: bool = True,
    ) -> None:
        if flush:
            tail = seq.decoder.decode(b"", True)
            if seq.stops:
                tail, held, stopped = _split_stop(seq.held, tail, seq.stops)
                if stopped:
                    reason = "stop"
                else:
                    tail += held  # generation is over: a partial stop string is just text
                seq.held = ""
            if tail:
                self._post(outbox, seq, TokenEvent(text=tail))
        t_first = seq.t_first or now
        self._post(
            outbox,
            seq,
            FinishEvent(
                finish_reason=reason,
                usage=Usage(prompt_tokens=len(seq.prompt), completion_tokens=seq.generated),
                queue_seconds=max(0.0, seq.t_admit - seq.t_submit),
                prompt_seconds=max(0.0, t_first - seq.t_admit),
                generation_seconds=max(0.0, now - t_first),
            ),
        )
        elapsed = now - seq.t_submit
        self._avg_request_seconds = 0.8 * self._avg_request_seconds + 0.2 * elapsed
        self._retire(seq)

    def _retire(self, seq: _Sequence) -> None:
        """Free the slot: its KV cells, its sampler chain."""
        self._running.remove(seq)
        self._slot_seqs[seq.slot] = None
        llama.llama_memory_seq_rm(self._mem, seq.slot, -1, -1)
        if seq.chain:
            llama.llama_sampler_free(seq.chain)
            seq.chain = 0

    def _post(
        self,
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Any]]],
        seq: _Sequence,
        item: GenerationEvent | BaseException,
    ) -> None:
        if item.__class__ is not TokenEvent:
            seq.finished = True
        items = outbox.get(seq.loop)
        if items is None:
            outbox[seq.loop] = [(seq, item)]
        else:
            items.append((seq, item))

    def _flush(self, outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Any]]]) -> None:
        """Hand this step's events to each event loop with one thread-safe call."""
        if not outbox:
            return
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                for seq, _item in items:
                    seq.cancelled = True
        outbox.clear()

    def _fail_all(self, error: BackendError) -> None:
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Any]]] = {}
        with self._cond:
            for seq in list(self._running):
                if not seq.cancelled:
                    self._post(outbox, seq, error)
                if self._mem is not None:
                    self._retire(seq)
            for seq in self._pending:
                self._post(outbox, seq, error)
                if seq.chain:
                    llama.llama_sampler_free(seq.chain)
                    seq.chain = 0
            self._pending.clear()
        self._flush(outbox)

    # ------------------------------------------------------------------ embeddings

    async def embed(self, inputs: Sequence[str]) -> EmbeddingResult:
        return await asyncio.to_thread(self._embed_sync, list(inputs))

    def _embed_sync(self, inputs: list[str]) -> EmbeddingResult:
        """Mean-pooled, L2-normalised vectors, one input at a time on a dedicated context."""
        with self._embed_lock:
            if self._stopping or self._model is None:
                raise BackendError(f"The model '{self.model_id}' is not loaded")
            ctx, batch = self._embedding_context()
            n_embd = self.info.n_embd
            mem = llama.llama_get_memory(ctx)
            vectors: list[list[float]] = []
            seq_ids: Any = batch.seq_id
            positions: Any = batch.pos
            total = 0
            for text in inputs:
                tokens = self.tokenize(text, add_bos=True)
                if not tokens:
                    tokens = [int(llama.llama_vocab_bos(self._require_vocab()))]
                if len(tokens) > self.embedding_size:
                    raise PromptTooLongError(len(tokens), self.embedding_size)
                total += len(tokens)
                if mem:
                    llama.llama_memory_clear(mem, True)
                for i, t in enumerate(tokens):
                    batch.token[i] = t
                    positions[i] = i
                    batch.n_seq_id[i] = 1
                    seq_ids[i][0] = 0
                    batch.logits[i] = 1
                batch.n_tokens = len(tokens)
                with _COMPUTE_LOCK:
                    rc = llama.llama_decode(ctx, batch)
                if rc != 0:
                    raise BackendError(f"llama_decode failed ({rc}) while embedding")
                ptr = llama.llama_get_embeddings_seq(ctx, 0)
                if not ptr:
                    raise BackendError("the model produced no pooled embedding")
                vec = [float(v) for v in ptr[:n_embd]]
                norm = math.sqrt(math.fsum(v * v for v in vec))
                vectors.append([v / norm for v in vec] if norm > 0 else vec)
            return EmbeddingResult(vectors=vectors, prompt_tokens=total)

    def _embedding_context(self) -> tuple[int, llama.llama_batch]:
        if self._embed_ctx is not None and self._embed_batch is not None:
            return self._embed_ctx, self._embed_batch
        cparams = llama.llama_context_default_params()
        size = self.embedding_size
        cparams.n_ctx = size
        cparams.n_batch = size
        cparams.n_ubatch = size
        cparams.n_seq_max = 1
        cparams.n_threads = self._threads
        cparams.n_threads_batch = self._threads
        cparams.embeddings = True
        cparams.pooling_type = llama.LLAMA_POOLING_TYPE_MEAN
        cparams.no_perf = True
        ctx = llama.llama_init_from_model(self._model, cparams)
        if not ctx:
            raise BackendError(f"could not create an embedding context for '{self.model_id}'")
        self._embed_ctx = ctx
        self._embed_batch = llama.llama_batch_init(size, 0, 1)
        return ctx, self._embed_batch


def _timeout_message(seq: _Sequence) -> str:
    return (
        f"The request did not finish within its timeout "
        f"({seq.generated} tokens generated, {len(seq.prompt)} prompt tokens)"
    )


def _free_prepared_chain(future: asyncio.Future[tuple[list[int], int, int]]) -> None:
    """The requester was cancelled while its sampler chain was being built: free the chain."""
    if not future.cancelled() and future.exception() is None:
        llama.llama_sampler_free(future.result()[1])


def _deliver(items: list[tuple[_Sequence, GenerationEvent | BaseException]]) -> None:
    """Runs on the event loop: put each item on its request's queue."""
    for seq, item in items:
        seq.queue.put_nowait(item)
