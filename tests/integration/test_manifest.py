"""Static checks of the integration's metadata: translations, icons, quality scale."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from custom_components.prime_spark.agent_sensor import AGENT_SENSORS, PENDING_TASKS
from custom_components.prime_spark.analytics import ANALYTICS_BINARY_SENSORS, ANALYTICS_SENSORS
from custom_components.prime_spark.binary_sensor import BINARY_SENSORS, PEER_REACHABLE
from custom_components.prime_spark.button import BUTTONS
from custom_components.prime_spark.detection_sensor import DETECTION_SENSOR
from custom_components.prime_spark.link import LINK_BINARY_SENSORS, LINK_SENSORS
from custom_components.prime_spark.memory import TIER_SENSORS
from custom_components.prime_spark.select import SELECTS
from custom_components.prime_spark.sensor import PEER_SENSORS, SENSORS

PACKAGE = Path(__file__).parents[2] / "custom_components" / "prime_spark"

RULES = {
    "bronze": [
        "action-setup", "appropriate-polling", "brands", "common-modules", "config-flow",
        "config-flow-test-coverage", "dependency-transparency", "docs-actions",
        "docs-conditions", "docs-high-level-description", "docs-installation-instructions",
        "docs-removal-instructions", "docs-triggers", "entity-event-setup", "entity-unique-id",
        "has-entity-name", "runtime-data", "test-before-configure", "test-before-setup",
        "unique-config-entry",
    ],
    "silver": [
        "action-exceptions", "config-entry-unloading", "docs-configuration-parameters",
        "docs-installation-parameters", "entity-unavailable", "integration-owner",
        "log-when-unavailable", "parallel-updates", "reauthentication-flow", "test-coverage",
    ],
    "gold": [
        "devices", "diagnostics", "discovery", "discovery-update-info", "docs-data-update",
        "docs-examples", "docs-known-limitations", "docs-supported-devices",
        "docs-supported-functions", "docs-troubleshooting", "docs-use-cases", "dynamic-devices",
        "entity-category", "entity-device-class", "entity-disabled-by-default",
        "entity-translations", "exception-translations", "icon-translations",
        "reconfiguration-flow", "repair-issues", "stale-devices",
    ],
    "platinum": ["async-dependency", "inject-websession", "strict-typing"],
}  # fmt: skip


def _json(name: str) -> dict:
    return json.loads((PACKAGE / name).read_text(encoding="utf-8"))


def test_translations_match_strings() -> None:
    assert _json("strings.json") == _json("translations/en.json")


def test_every_entity_is_translated_and_has_an_icon() -> None:
    strings = _json("strings.json")["entity"]
    icons = _json("icons.json")["entity"]
    for platform, descriptions in (
        (
            "sensor",
            (
                *SENSORS,
                *PEER_SENSORS,
                *LINK_SENSORS,
                DETECTION_SENSOR,
                *ANALYTICS_SENSORS,
                *AGENT_SENSORS,
                PENDING_TASKS,
            ),
        ),
        (
            "binary_sensor",
            (*BINARY_SENSORS, PEER_REACHABLE, *LINK_BINARY_SENSORS, *ANALYTICS_BINARY_SENSORS),
        ),
        ("button", BUTTONS),
        ("select", SELECTS),
    ):
        keys = {d.translation_key for d in descriptions}
        if platform == "sensor":  # the memory tiers' sensors and the cache hit rate
            keys |= {d.translation_key for d in TIER_SENSORS} | {"response_cache_hit_rate"}
        assert keys == set(strings[platform]), platform
        # Timestamps, power and connectivity have the device class's icon.
        assert keys - {"uptime", "power", "peer_reachable"} == set(icons[platform]), platform


def test_manifest() -> None:
    manifest = _json("manifest.json")
    assert manifest["domain"] == "prime_spark"
    assert manifest["zeroconf"] == ["_prime-spark._tcp.local."]
    assert manifest["iot_class"] == "local_push"
    assert manifest["config_flow"] is True
    assert manifest["requirements"] == []


def test_quality_scale_lists_every_rule() -> None:
    rules = yaml.safe_load((PACKAGE / "quality_scale.yaml").read_text(encoding="utf-8"))["rules"]
    expected = {rule for tier in RULES.values() for rule in tier}
    assert set(rules) == expected
    for name, rule in rules.items():
        if isinstance(rule, dict):
            assert rule["status"] in ("done", "todo", "exempt"), name
            if rule["status"] != "done":
                assert rule.get("comment"), f"{name} needs a reason"
        else:
            assert rule == "done", name


def test_brand_icons() -> None:
    from PIL import Image

    for name, size in (("icon.png", 256), ("icon@2x.png", 512)):
        with Image.open(PACKAGE / "brand" / name) as image:
            assert image.size == (size, size)
            assert image.format == "PNG"


def test_documentation_holds_what_the_docs_rules_point_at() -> None:
    """A docs rule marked done names the section of the user documentation that fulfils it."""
    manifest = json.loads((PACKAGE / "manifest.json").read_text())
    relative = manifest["documentation"].split("/blob/main/", 1)[1]
    document = (PACKAGE.parents[1] / relative).read_text()
    headings = {line.lstrip("#").strip() for line in document.splitlines() if line.startswith("#")}
    rules = yaml.safe_load((PACKAGE / "quality_scale.yaml").read_text())["rules"]
    for name, rule in rules.items():
        if not name.startswith("docs-") or not isinstance(rule, dict) or rule["status"] != "done":
            continue
        assert relative in rule["comment"], name
        if '"' in rule["comment"]:
            titles = rule["comment"].split('"')[1].replace(" and ", ", ").split(", ")
            for title in titles:
                assert title in headings, f"{name}: no section {title!r} in {relative}"
