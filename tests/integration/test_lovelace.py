"""The Lovelace dashboard in monitoring/ names only entities the integration creates."""

from __future__ import annotations

from pathlib import Path

import yaml
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.const import DOMAIN

DASHBOARD = Path(__file__).parents[2] / "monitoring" / "lovelace" / "prime-spark.yaml"
BUILT_IN = {"entities", "gauge", "history-graph", "glance", "statistics-graph"}


def _entity_ids(card: dict[str, object]) -> list[str]:
    ids = [card["entity"]] if "entity" in card else []
    ids += list(card.get("entities", []))  # type: ignore[call-overload]
    return [str(i) for i in ids]


async def test_dashboard_entities_exist(
    hass: HomeAssistant, entity_registry: er.EntityRegistry, init_integration: MockConfigEntry
) -> None:
    dashboard = yaml.safe_load(DASHBOARD.read_text(encoding="utf-8"))
    cards = [card for view in dashboard["views"] for card in view["cards"]]
    assert {card["type"] for card in cards} <= BUILT_IN
    named = [entity_id for card in cards for entity_id in _entity_ids(card)]
    assert named
    missing = [entity_id for entity_id in named if hass.states.get(entity_id) is None]
    assert not missing, f"the dashboard names entities that do not exist: {missing}"
    for entity_id in named:
        entry = entity_registry.async_get(entity_id)
        assert entry is not None and entry.platform == DOMAIN, entity_id
