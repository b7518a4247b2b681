"""addon/config.yaml against the Supervisor's rules, and translations against the options.

The Supervisor refuses an add-on whose schema has a type it does not know, and shows raw keys
where a translation is missing; both are checked here without a Supervisor. The grammar below
is written from the Supervisor's documented option types: ``str``/``password`` (with optional
``(min,max)`` lengths), ``int``/``float`` (with optional ranges), ``bool``, ``email``, ``url``,
``port``, ``match(REGEX)``, ``list(a|b|c)``, ``device`` (optionally ``device(subsystem=...)``),
each optionally suffixed with ``?``; nested dicts, and lists of one element type.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ADDON = Path(__file__).parents[2] / "addon"
CONFIG = yaml.safe_load((ADDON / "config.yaml").read_text(encoding="utf-8"))
TRANSLATIONS = yaml.safe_load((ADDON / "translations" / "en.yaml").read_text(encoding="utf-8"))

_RANGE_INT = r"(?:\((?:\d+)?,(?:\d+)?\))?"
_RANGE_FLOAT = r"(?:\((?:[\d.]+)?,(?:[\d.]+)?\))?"
ELEMENT = re.compile(
    r"^(?:bool|email|url|port"
    r"|device(?:\(subsystem=[a-z]+\))?"
    rf"|str{_RANGE_INT}|password{_RANGE_INT}|int{_RANGE_INT}|float{_RANGE_FLOAT}"
    r"|match\((?P<match>.*)\)"
    r"|list\((?P<list>[^|()]+(?:\|[^|()]+)*)\)"
    r")\??$"
)


def grammar_errors(schema: Any, path: str = "") -> list[str]:
    """Every schema entry that the Supervisor's grammar does not accept."""
    errors: list[str] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            errors += grammar_errors(value, f"{path}.{key}" if path else str(key))
    elif isinstance(schema, list):
        if len(schema) != 1:
            errors.append(f"{path}: a list schema has exactly one element type")
        else:
            errors += grammar_errors(schema[0], f"{path}[]")
    elif isinstance(schema, str):
        match = ELEMENT.match(schema)
        if not match:
            errors.append(f"{path}: '{schema}' is not a Supervisor type")
        elif match.group("match") is not None:
            try:
                re.compile(match.group("match"))
            except re.error as err:
                errors.append(f"{path}: bad regex in '{schema}': {err}")
    else:
        errors.append(f"{path}: {schema!r} is neither a type string, a list nor a dict")
    return errors


@pytest.mark.parametrize(
    ("schema", "ok"),
    [
        ("str", True),
        ("str?", True),
        ("str(3,)", True),
        ("password(16,64)?", True),
        ("int(1,65535)", True),
        ("float(0,1)", True),
        ("float(0.5,2.5)?", True),
        ("bool", True),
        ("email", True),
        ("url?", True),
        ("port", True),
        ("match(^[a-z]+$)", True),
        ("list(a|b|c)", True),
        ("device(subsystem=tty)", True),
        ("device", True),
        ("string", False),
        ("int(a,b)", False),
        ("list()", False),
        ("integer", False),
        ("bool??", False),
        ("match([)", False),
        ("device(tty)", False),
    ],
)
def test_grammar_itself(schema: str, ok: bool) -> None:
    """The checker accepts the documented forms and refuses near misses."""
    assert (grammar_errors({"x": schema}) == []) is ok


def test_schema_entries_follow_the_supervisor_grammar() -> None:
    assert grammar_errors(CONFIG["schema"]) == []


def _required(schema: Any) -> bool:
    return not (isinstance(schema, str) and schema.endswith("?"))


def _check_options(options: Any, schema: Any, path: str) -> list[str]:
    """Defaults must satisfy their schema: present when required, lists for lists."""
    errors: list[str] = []
    if isinstance(schema, dict):
        if not isinstance(options, dict):
            return [f"{path}: expected a mapping"]
        for key, sub in schema.items():
            if key in options:
                errors += _check_options(options[key], sub, f"{path}.{key}")
            elif _required(sub) and not isinstance(sub, list):
                errors.append(f"{path}.{key}: required by the schema but has no default")
        errors += [f"{path}.{key}: not in the schema" for key in options if key not in schema]
    elif isinstance(schema, list):
        if not isinstance(options, list):
            return [f"{path}: expected a list"]
        for index, item in enumerate(options):
            errors += _check_options(item, schema[0], f"{path}[{index}]")
    return errors


def test_default_options_satisfy_the_schema() -> None:
    assert _check_options(CONFIG["options"], CONFIG["schema"], "options") == []


def test_addon_metadata() -> None:
    assert CONFIG["slug"] == "prime_spark"
    assert set(CONFIG["arch"]) == {"aarch64", "amd64"}
    assert CONFIG["discovery"] == ["prime_spark"]
    assert "8780/tcp" in CONFIG["ports"]
    assert "[PORT:8780]" in CONFIG["watchdog"]
    assert {"/dev/hailo0", "/dev/net/tun"} <= set(CONFIG["devices"])
    assert "NET_ADMIN" in CONFIG["privileged"]
    assert {m.split(":")[0] for m in CONFIG["map"]} >= {"share", "media", "addon_config"}
    assert "*.gguf" in CONFIG["backup_exclude"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", CONFIG["version"])
    for name in (
        "DOCS.md",
        "README.md",
        "CHANGELOG.md",
        "apparmor.txt",
        "icon.png",
        "logo.png",
        "build.yaml",
        "Dockerfile",
    ):
        assert (ADDON / name).is_file(), name
    assert CONFIG["version"] in (ADDON / "CHANGELOG.md").read_text(encoding="utf-8")


def _translation_gaps(schema: dict[str, Any], translations: dict[str, Any], path: str) -> list[str]:
    gaps: list[str] = []
    for key, sub in schema.items():
        entry = translations.get(key)
        where = f"{path}.{key}" if path else key
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("description"):
            gaps.append(f"{where}: needs a name and a description")
            continue
        nested = sub[0] if isinstance(sub, list) else sub
        if isinstance(nested, dict):
            gaps += _translation_gaps(nested, entry.get("fields") or {}, where)
    gaps += [
        f"{path}.{key}: translated but not an option" for key in translations if key not in schema
    ]
    return gaps


def test_translations_cover_every_option() -> None:
    assert _translation_gaps(CONFIG["schema"], TRANSLATIONS["configuration"], "") == []
    assert set(TRANSLATIONS["network"]) == set(CONFIG["ports"])


def test_s6_services_are_complete() -> None:
    """Every service has a type and its script; longruns that must not die have a finish."""
    base = ADDON / "rootfs" / "etc" / "s6-overlay" / "s6-rc.d"
    bundle = {p.name for p in (base / "user" / "contents.d").iterdir()}
    assert bundle == {"init-options", "redis", "wireguard", "server", "discovery"}
    for name in bundle:
        kind = (base / name / "type").read_text().strip()
        if kind == "longrun":
            for script in ("run", "finish"):
                assert (base / name / script).stat().st_mode & 0o111, f"{name}/{script}"
        else:
            assert kind == "oneshot"
            target = Path((base / name / "up").read_text().strip())
            script = ADDON / "rootfs" / target.relative_to("/")
            assert script.stat().st_mode & 0o111, script
        for dependency in (base / name / "dependencies.d").iterdir():
            assert dependency.name == "base" or dependency.name in bundle
