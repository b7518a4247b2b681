"""schemathesis extensions for fuzzing prime-spark-server (loaded with SCHEMATHESIS_HOOKS).

A chat request can be schema-valid and still wrong in ways JSON Schema cannot state: a
``tool_choice`` naming a tool the request does not list, two tools with one name, an
arguments schema the grammar compiler cannot enforce. The built-in positive-data check is
therefore off for that one operation (bench/schemathesis.toml) and this check takes its place:
a schema-valid chat request may be refused only for its ``tools`` / ``tool_choice``, and only
with a 400 that names the field.

A memory item's ``raw`` text (``format: prime-spark-memory-item``) is a JSON object in
canonical form, which JSON Schema cannot describe inside a string: the strategy below makes
such texts, so positive cases of the peer write are items the server must store; and such an
item must name the namespace and key of the path it is written to, a rule across the path and
the body, so the hook below gives the raw item the path's address before the call. Likewise an
image body (``POST /api/v1/vision/detect``) is bytes only a decoder can judge: positive cases
are real encoded images, not random bytes or other file types.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

import cv2
import numpy as np
import schemathesis
from hypothesis import strategies as st

CROSS_FIELD = ("tools", "tool_choice")

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_TIMES = st.floats(min_value=1.0, max_value=4e9, allow_nan=False, allow_infinity=False)


def _canonical(fields: dict[str, Any]) -> str:
    """The text inference_server.memory.record.MemoryItem.encode() writes for these fields."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


schemathesis.openapi.format(
    "prime-spark-memory-item",
    st.fixed_dictionaries(
        {
            "namespace": st.from_regex(r"\A(user:[a-z0-9]{1,12}|agent:[a-z]{1,12}|shared)\Z"),
            "key": st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=40),
            "value": _JSON_VALUES,
            "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
            "tags": st.lists(st.text(min_size=1, max_size=8), max_size=3),
            "created_at": _TIMES,
            "updated_at": _TIMES,
            "expires_at": st.none(),
            "embedding": st.none(),
        }
    ).map(_canonical),
)


def _encoded_image(spec: tuple[int, int, int, str]) -> bytes:
    """A flat-colour picture in one of the formats the vision route documents."""
    width, height, shade, extension = spec
    pixels = np.full((height, width, 3), shade, dtype=np.uint8)
    ok, encoded = cv2.imencode(extension, pixels)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {extension} test image")
    return bytes(encoded.tobytes())


_IMAGES = st.tuples(
    st.integers(1, 64), st.integers(1, 64), st.integers(0, 255), st.sampled_from((".png", ".jpg"))
).map(_encoded_image)

schemathesis.openapi.media_type("image/*", _IMAGES, aliases=("application/octet-stream",))


@schemathesis.check
def schema_valid_chat_is_accepted(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Fail on a 400 to a schema-valid chat request unless it names a cross-field rule."""
    del ctx
    if case.operation.path != "/v1/chat/completions" or response.status_code != 400:
        return None
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    error = response.json().get("error", {})
    param = str(error.get("param") or "")
    if re.split(r"[.\[]", param, maxsplit=1)[0] in CROSS_FIELD:
        return None
    raise AssertionError(f"a schema-valid chat request was refused: {error.get('message')}")


MEMORY_ITEM_PATH = "/api/v1/memory/items/{namespace}/{key}"


@schemathesis.hook
def before_call(
    ctx: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]
) -> None:
    """File a generated raw item under the path it is sent to (the server refuses any other)."""
    del ctx, kwargs
    if case.operation.path != MEMORY_ITEM_PATH or case.operation.method.upper() != "PUT":
        return
    body, path = case.body, case.path_parameters or {}
    if not isinstance(body, dict) or not isinstance(body.get("raw"), str):
        return
    try:
        item = json.loads(body["raw"])
    except ValueError:
        return
    namespace, key = path.get("namespace"), path.get("key")
    if isinstance(item, dict) and isinstance(namespace, str) and isinstance(key, str):
        # Path parameters arrive here already percent-encoded for the URL.
        address = {"namespace": unquote(namespace), "key": unquote(key)}
        body["raw"] = _canonical({**item, **address})
