"""The model catalog: bundled-model assembly, GGUF headers, and the registry over real engines."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from inference_server.backends.base import (
    FinishEvent,
    GenerationRequest,
    ModelNotFoundError,
    SamplingParams,
    TextBackend,
    TokenEvent,
)
from inference_server.config import ModelSettings, ServerSettings, Settings
from inference_server.models.bundled import (
    BUNDLED_MODEL_ID,
    KNOWN_SHA256,
    BundledSource,
    ChecksumMismatchError,
    bundled_model_path,
    ensure_bundled_model,
    package_source,
)
from inference_server.models.gguf import GGUFError, read_gguf_info
from inference_server.models.registry import ModelRegistry, model_id_for

# ---------------------------------------------------------------------------- bundled assembly


def _fake_chunks(tmp_path: Path) -> tuple[BundledSource, bytes]:
    parts = [b"GGUF" + os.urandom(3000), os.urandom(5000), os.urandom(17)]
    paths = []
    for i, data in enumerate(parts):
        path = tmp_path / "chunks" / f"model.part{i:02d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    whole = b"".join(parts)
    return BundledSource(chunks=tuple(paths), sha256=hashlib.sha256(whole).hexdigest()), whole


def test_assembly_writes_verified_file_and_stamp(tmp_path: Path) -> None:
    source, whole = _fake_chunks(tmp_path)
    progress: list[tuple[int, int]] = []
    path = ensure_bundled_model(
        tmp_path / "data", source, progress=lambda d, t: progress.append((d, t))
    )
    assert path == bundled_model_path(tmp_path / "data")
    assert path.read_bytes() == whole
    stamp = json.loads(path.with_name(path.name + ".verified").read_text())
    assert stamp["sha256"] == source.sha256
    assert stamp["size"] == len(whole)
    assert progress[-1] == (len(whole), len(whole))
    assert not list(path.parent.glob(".*.tmp"))


def test_assembly_is_idempotent_and_cheap_on_later_starts(tmp_path: Path) -> None:
    source, _whole = _fake_chunks(tmp_path)
    path = ensure_bundled_model(tmp_path / "data", source)
    mtime = path.stat().st_mtime_ns
    # Later starts trust the stamp: they neither rewrite the file nor read the chunks.
    for chunk in source.chunks:
        chunk.unlink()
    assert ensure_bundled_model(tmp_path / "data", source) == path
    assert path.stat().st_mtime_ns == mtime


def test_checksum_mismatch_is_detected_and_leaves_nothing(tmp_path: Path) -> None:
    source, _whole = _fake_chunks(tmp_path)
    wrong = BundledSource(chunks=source.chunks, sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError) as info:
        ensure_bundled_model(tmp_path / "data", wrong)
    assert info.value.actual == source.sha256
    models = tmp_path / "data" / "models"
    assert not bundled_model_path(tmp_path / "data").exists()
    assert not list(models.glob(".*.tmp"))


def test_damaged_file_is_assembled_again(tmp_path: Path) -> None:
    source, whole = _fake_chunks(tmp_path)
    path = ensure_bundled_model(tmp_path / "data", source)
    path.write_bytes(b"GGUF truncated")  # size and mtime no longer match the stamp
    assert ensure_bundled_model(tmp_path / "data", source).read_bytes() == whole


def test_existing_file_without_stamp_is_hashed_not_rewritten(tmp_path: Path) -> None:
    source, whole = _fake_chunks(tmp_path)
    path = bundled_model_path(tmp_path / "data")
    path.parent.mkdir(parents=True)
    path.write_bytes(whole)
    mtime = path.stat().st_mtime_ns
    assert ensure_bundled_model(tmp_path / "data", source) == path
    assert path.stat().st_mtime_ns == mtime
    assert path.with_name(path.name + ".verified").exists()


def test_package_source_carries_the_known_checksum() -> None:
    source = package_source()
    assert source.sha256 == KNOWN_SHA256
    assert len(source.chunks) == 4
    assert all(chunk.is_file() for chunk in source.chunks)


def test_real_bundled_model_matches_package_checksum(gguf_path: Path) -> None:
    stamp = json.loads(gguf_path.with_name(gguf_path.name + ".verified").read_text())
    assert stamp["sha256"] == KNOWN_SHA256
    assert stamp["size"] == gguf_path.stat().st_size


# ---------------------------------------------------------------------------- GGUF header


def test_gguf_header_of_the_bundled_model(gguf_path: Path) -> None:
    info = read_gguf_info(gguf_path)
    assert info.architecture == "gemma3"
    assert info.chat_template is None  # a base model: the server supplies Gemma's template
    assert info.context_length == 32768
    assert info.add_bos_token is True


def test_gguf_reader_rejects_other_files(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(GGUFError):
        read_gguf_info(bogus)
    truncated = tmp_path / "trunc.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 8 + b"\x05" + b"\x00" * 7 + b"\x01")
    with pytest.raises(GGUFError):
        read_gguf_info(truncated)


def test_model_ids_from_file_names() -> None:
    assert model_id_for(Path("/m/Llama-3.2-1B-Q4_K_M.gguf")) == "llama-3.2-1b-q4_k_m"
    assert model_id_for(Path("/m/big-00001-of-00003.gguf")) == "big"
    assert model_id_for(Path("/m/big-00002-of-00003.gguf")) is None


# ---------------------------------------------------------------------------- registry


def _settings(data_dir: Path, *paths: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "paths": paths,
        "slots": 2,
        "queue_size": 2,
        "context_size": 256,
        "max_tokens_default": 8,
        "max_loaded": 1,
        "threads": 1,  # see test_engine.py: robust timing on a busy two-core machine
    }
    values.update(overrides)
    return Settings(
        server=ServerSettings(data_dir=data_dir),
        models=ModelSettings(**values),  # type: ignore[arg-type]
    )


def _request(model: str, max_tokens: int = 4) -> GenerationRequest:
    return GenerationRequest(
        model=model,
        prompt="Home Assistant is",
        params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


async def _collect(registry: ModelRegistry, request: GenerationRequest) -> FinishEvent:
    finish: FinishEvent | None = None
    async for event in registry.generate(request):
        if isinstance(event, FinishEvent):
            finish = event
    assert finish is not None
    return finish


@pytest.fixture
def data_dir(tmp_path: Path, seed_data_dir: Callable[[Path], Path]) -> Path:
    data = tmp_path / "data"
    seed_data_dir(data)
    return data


async def test_registry_starts_with_bundled_default(data_dir: Path) -> None:
    registry = ModelRegistry(_settings(data_dir))
    assert isinstance(registry, TextBackend)
    assert registry.state.status == "starting"
    assert not registry.state.ready
    try:
        await registry.start()
        assert registry.state.ready, registry.state.reason
        assert registry.loaded_model_ids() == [BUNDLED_MODEL_ID]
        models = await registry.models()
        # The bundled embedding model is listed too (converted only when first used).
        assert [m.id for m in models] == [BUNDLED_MODEL_ID, "all-minilm-l6-v2"]
        bundled = models[0]
        assert bundled.loaded
        assert bundled.architecture == "gemma3"
        assert bundled.context_size == 256
        assert bundled.size_bytes == bundled_model_path(data_dir).stat().st_size
        assert bundled.chat_template is None
        # "" means the default model.
        finish = await _collect(registry, _request(""))
        assert finish.usage.completion_tokens == 4
        assert await registry.count_tokens("", "Home Assistant is") == finish.usage.prompt_tokens
        info = await registry.chat_info(BUNDLED_MODEL_ID)
        assert (info.add_bos, info.bos_token, info.eos_token) == (True, "<bos>", "<eos>")
        assert info.eot_token == "<end_of_turn>"
        embedded = await registry.embed(BUNDLED_MODEL_ID, ["hello"])
        assert len(embedded.vectors) == 1
        slots = registry.slots()
        assert [s.id for s in slots] == [0, 1]
        assert all(s.model == BUNDLED_MODEL_ID and not s.busy for s in slots)
        assert registry.queue_depth() == 0
    finally:
        await registry.close()


async def test_start_reports_error_when_bundled_package_output_is_bad(tmp_path: Path) -> None:
    source, _whole = _fake_chunks(tmp_path)
    bad = BundledSource(chunks=source.chunks, sha256="1" * 64)
    registry = ModelRegistry(_settings(tmp_path / "data"), bundled_source=bad)
    await registry.start()  # never raises: /health shows why
    assert registry.state.status == "error"
    assert "SHA-256" in registry.state.reason
    await registry.close()


async def test_unknown_model(data_dir: Path) -> None:
    registry = ModelRegistry(_settings(data_dir))
    try:
        with pytest.raises(ModelNotFoundError):
            await anext(registry.generate(_request("no-such-model")))
        with pytest.raises(ModelNotFoundError):
            await registry.count_tokens("no-such-model", "x")
        with pytest.raises(ModelNotFoundError):
            await registry.embed("no-such-model", ["x"])
        assert registry.loaded_model_ids() == []
    finally:
        await registry.close()


async def test_catalog_scans_files_and_directories(
    tmp_path: Path, data_dir: Path, gguf_path: Path
) -> None:
    models_dir = tmp_path / "mine"
    models_dir.mkdir()
    (models_dir / "Second-Model.gguf").symlink_to(gguf_path)
    (models_dir / "notes.txt").write_text("not a model")
    (models_dir / "broken.gguf").write_bytes(b"junk")
    single = tmp_path / "elsewhere" / "third.GGUF"
    single.parent.mkdir()
    single.symlink_to(gguf_path)
    registry = ModelRegistry(_settings(data_dir, models_dir, single, tmp_path / "missing"))
    try:
        models = {m.id: m for m in await registry.models()}
        assert set(models) == {
            BUNDLED_MODEL_ID,
            "all-minilm-l6-v2",
            "second-model",
            "broken",
            "third",
        }
        assert models["second-model"].architecture == "gemma3"
        assert not models["second-model"].loaded
        assert models["broken"].architecture is None
        # A file dropped in later is found on first use, without a restart.
        (models_dir / "late.gguf").symlink_to(gguf_path)
        assert await registry.resolve("LATE") == "late"
        assert await registry.resolve("late.gguf") == "late"
    finally:
        await registry.close()


async def test_lru_unloads_the_least_recently_used_idle_model(
    tmp_path: Path, data_dir: Path, gguf_path: Path
) -> None:
    models_dir = tmp_path / "mine"
    models_dir.mkdir()
    (models_dir / "other.gguf").symlink_to(gguf_path)
    registry = ModelRegistry(_settings(data_dir, models_dir, max_loaded=1))
    try:
        await _collect(registry, _request(BUNDLED_MODEL_ID))
        assert registry.loaded_model_ids() == [BUNDLED_MODEL_ID]
        first = registry.engine(BUNDLED_MODEL_ID)
        assert first is not None
        await _collect(registry, _request("other"))
        assert registry.loaded_model_ids() == ["other"]
        assert not first.loaded  # closed, memory freed
        loaded = {m.id: m.loaded for m in await registry.models()}
        assert loaded == {BUNDLED_MODEL_ID: False, "all-minilm-l6-v2": False, "other": True}
    finally:
        await registry.close()


async def test_busy_model_is_not_unloaded(tmp_path: Path, data_dir: Path, gguf_path: Path) -> None:
    models_dir = tmp_path / "mine"
    models_dir.mkdir()
    (models_dir / "other.gguf").symlink_to(gguf_path)
    registry = ModelRegistry(_settings(data_dir, models_dir, max_loaded=1))
    try:
        running = registry.generate(_request(BUNDLED_MODEL_ID, max_tokens=200))
        assert isinstance(await anext(running), TokenEvent)
        # Another model is needed while the first one is mid-generation: both stay loaded.
        await _collect(registry, _request("other"))
        assert set(registry.loaded_model_ids()) == {BUNDLED_MODEL_ID, "other"}
        busy = registry.engine(BUNDLED_MODEL_ID)
        assert busy is not None
        assert busy.loaded
        assert isinstance(await anext(running), TokenEvent)
        # Once the generation ends the limit is enforced again (LRU: the bundled one goes).
        await running.aclose()
        for _ in range(200):
            if registry.loaded_model_ids() == ["other"] and not busy.loaded:
                break
            await asyncio.sleep(0.05)
        assert registry.loaded_model_ids() == ["other"]
        assert not busy.loaded
    finally:
        await registry.close()


async def test_reload_swaps_in_a_fresh_engine(data_dir: Path) -> None:
    registry = ModelRegistry(_settings(data_dir))
    try:
        await registry.start()
        old = registry.engine(BUNDLED_MODEL_ID)
        assert old is not None
        running = registry.generate(_request(BUNDLED_MODEL_ID, max_tokens=30))
        assert isinstance(await anext(running), TokenEvent)
        info = await registry.reload()
        assert info.id == BUNDLED_MODEL_ID
        assert info.loaded
        new = registry.engine(BUNDLED_MODEL_ID)
        assert new is not None
        assert new is not old
        # The request that was running finishes on the old engine, which closes afterwards.
        events = [event async for event in running]
        assert isinstance(events[-1], FinishEvent)
        for _ in range(200):
            if not old.loaded:
                break
            await asyncio.sleep(0.05)
        assert not old.loaded
        assert registry.state.ready
        await _collect(registry, _request(BUNDLED_MODEL_ID))
    finally:
        await registry.close()


async def test_concurrent_requests_share_one_load(data_dir: Path) -> None:
    registry = ModelRegistry(_settings(data_dir))
    try:
        results = await asyncio.gather(
            *(_collect(registry, _request(BUNDLED_MODEL_ID)) for _ in range(3))
        )
        assert all(r.usage.completion_tokens == 4 for r in results)
        assert registry.loaded_model_ids() == [BUNDLED_MODEL_ID]
    finally:
        await registry.close()
