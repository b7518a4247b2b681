"""schemathesis extensions for fuzzing prime-spark-server (loaded with SCHEMATHESIS_HOOKS).

A chat request can be schema-valid and still wrong in ways JSON Schema cannot state: a
``tool_choice`` naming a tool the request does not list, two tools with one name, an
arguments schema the grammar compiler cannot enforce. The built-in positive-data check is
therefore off for that one operation (bench/schemathesis.toml) and this check takes its place:
a schema-valid chat request may be refused only for its ``tools`` / ``tool_choice``, and only
with a 400 that names the field.
"""

from __future__ import annotations

import re

import schemathesis

CROSS_FIELD = ("tools", "tool_choice")


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
