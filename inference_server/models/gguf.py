"""Read the few GGUF header values the model list needs, without loading the model.

``/v1/models`` and the HA model picker list every configured file with its architecture and chat
template; loading each one through llama.cpp just to answer that would cost seconds and memory per
file. The GGUF header is a simple key/value table at the start of the file, so a small reader over
an ``mmap`` gets those values in milliseconds, and rejects files that are not GGUF at all.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"

# GGUF value types (gguf.h: enum gguf_type).
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(8, 13)

_SCALARS: dict[int, struct.Struct] = {
    _UINT8: struct.Struct("<B"),
    _INT8: struct.Struct("<b"),
    _UINT16: struct.Struct("<H"),
    _INT16: struct.Struct("<h"),
    _UINT32: struct.Struct("<I"),
    _INT32: struct.Struct("<i"),
    _FLOAT32: struct.Struct("<f"),
    _BOOL: struct.Struct("<?"),
    _UINT64: struct.Struct("<Q"),
    _INT64: struct.Struct("<q"),
    _FLOAT64: struct.Struct("<d"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

Scalar = int | float | bool | str


class GGUFError(ValueError):
    """The file is not a GGUF file we can read (truncated, wrong magic, unknown type)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class GGUFInfo:
    """The header values the server shows or needs before a model is loaded."""

    architecture: str | None
    name: str | None
    chat_template: str | None
    context_length: int | None
    """The context the model was trained with (``<arch>.context_length``)."""
    add_bos_token: bool | None


def read_gguf_info(path: Path) -> GGUFInfo:
    """Parse the header of ``path``; raises :class:`GGUFError` when it is not a GGUF file."""
    values = read_gguf_metadata(path)
    arch = values.get("general.architecture")
    arch_str = arch if isinstance(arch, str) else None
    ctx = values.get(f"{arch_str}.context_length") if arch_str else None
    template = values.get("tokenizer.chat_template")
    name = values.get("general.name")
    add_bos = values.get("tokenizer.ggml.add_bos_token")
    return GGUFInfo(
        architecture=arch_str,
        name=name if isinstance(name, str) else None,
        chat_template=template if isinstance(template, str) and template else None,
        context_length=ctx if isinstance(ctx, int) and not isinstance(ctx, bool) else None,
        add_bos_token=add_bos if isinstance(add_bos, bool) else None,
    )


def read_gguf_metadata(path: Path) -> dict[str, Scalar]:
    """Every scalar key/value of the header; arrays (the vocabulary) are skipped, not decoded."""
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(mm)
    except (OSError, ValueError) as err:
        if isinstance(err, GGUFError):
            raise
        raise GGUFError(f"{path}: cannot read as GGUF ({err})") from err
    except (struct.error, IndexError) as err:
        raise GGUFError(f"{path}: truncated GGUF header") from err


def _parse(mm: mmap.mmap) -> dict[str, Scalar]:
    if mm[:4] != GGUF_MAGIC:
        raise GGUFError("not a GGUF file (bad magic)")
    (version,) = _U32.unpack_from(mm, 4)
    if version < 2:
        raise GGUFError(f"GGUF version {version} is too old (need 2 or later)")
    (n_kv,) = _U64.unpack_from(mm, 16)
    offset = 24
    out: dict[str, Scalar] = {}
    for _ in range(n_kv):
        key, offset = _string(mm, offset)
        (vtype,) = _U32.unpack_from(mm, offset)
        offset += 4
        if vtype == _ARRAY:
            offset = _skip_array(mm, offset)
            continue
        value, offset = _value(mm, offset, vtype)
        out[key] = value
    return out


def _string(mm: mmap.mmap, offset: int) -> tuple[str, int]:
    (length,) = _U64.unpack_from(mm, offset)
    start = offset + 8
    end = start + length
    if end > len(mm):
        raise GGUFError("string runs past the end of the file")
    return mm[start:end].decode("utf-8", errors="replace"), end


def _value(mm: mmap.mmap, offset: int, vtype: int) -> tuple[Scalar, int]:
    if vtype == _STRING:
        return _string(mm, offset)
    fmt = _SCALARS.get(vtype)
    if fmt is None:
        raise GGUFError(f"unknown GGUF value type {vtype}")
    (value,) = fmt.unpack_from(mm, offset)
    return value, offset + fmt.size


def _skip_array(mm: mmap.mmap, offset: int) -> int:
    (etype,) = _U32.unpack_from(mm, offset)
    (count,) = _U64.unpack_from(mm, offset + 4)
    offset += 12
    if etype == _STRING:
        unpack = _U64.unpack_from
        for _ in range(count):
            (length,) = unpack(mm, offset)
            offset += 8 + length
        if offset > len(mm):
            raise GGUFError("array runs past the end of the file")
        return offset
    if etype == _ARRAY:
        for _ in range(count):
            offset = _skip_array(mm, offset)
        return offset
    fmt = _SCALARS.get(etype)
    if fmt is None:
        raise GGUFError(f"unknown GGUF array element type {etype}")
    return offset + fmt.size * int(count)
