"""Config flow for Prime Spark: manual, zeroconf, Supervisor (add-on), reauth and reconfigure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, override

from homeassistant.config_entries import (
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.const import CONF_HOST, CONF_LLM_HASS_API, CONF_PORT, CONF_TOKEN
from homeassistant.core import callback
from homeassistant.data_entry_flow import section
from homeassistant.helpers import llm
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TemplateSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo

from .client import (
    DEFAULT_PORT,
    PrimeSpark,
    PrimeSparkAuthenticationError,
    PrimeSparkConnectionError,
    PrimeSparkError,
    Status,
)
from .compat import LLM_API_MULTIPLE, vol
from .const import (
    CONF_CHAT_MODEL,
    CONF_COMPACT_TOOLS,
    CONF_FORCE_TOOL_FIRST,
    CONF_MAX_HISTORY,
    CONF_MAX_TOKENS,
    CONF_PROMPT,
    CONF_SCAN_INTERVAL,
    CONF_TEMPERATURE,
    DEFAULT_COMPACT_TOOLS,
    DEFAULT_FORCE_TOOL_FIRST,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SCAN_INTERVAL,
    DEFAULT_TEMPERATURE,
    DOMAIN,
    LOGGER,
    MAX_MAX_TOKENS,
    MAX_SCAN_INTERVAL,
    MIN_SCAN_INTERVAL,
)
from .conversation import llm_api_ids
from .coordinator import PrimeSparkConfigEntry

SECTION_ASSIST = "assist"
ASSIST_OPTIONS = frozenset(
    {
        CONF_LLM_HASS_API,
        CONF_PROMPT,
        CONF_CHAT_MODEL,
        CONF_MAX_TOKENS,
        CONF_TEMPERATURE,
        CONF_MAX_HISTORY,
        CONF_COMPACT_TOOLS,
        CONF_FORCE_TOOL_FIRST,
    }
)

TOKEN_SELECTOR = TextSelector(
    TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="current-password")
)
HOST_SELECTOR = TextSelector(TextSelectorConfig(autocomplete="off"))
PORT_SELECTOR = NumberSelector(
    NumberSelectorConfig(min=1, max=65535, step=1, mode=NumberSelectorMode.BOX)
)


def _title(status: Status) -> str:
    return f"Prime Spark {status.node_id}"


class PrimeSparkConfigFlow(ConfigFlow, domain=DOMAIN):
    """Handle a config flow for Prime Spark."""

    VERSION = 1
    MINOR_VERSION = 1

    def __init__(self) -> None:
        """Initialize the flow."""
        self._host: str | None = None
        self._port: int = DEFAULT_PORT
        self._token: str | None = None
        self._name: str | None = None

    async def _async_status(
        self, host: str, port: int, token: str, errors: dict[str, str]
    ) -> Status | None:
        """Connect with these settings; fill ``errors`` and return None when that fails."""
        client = PrimeSpark(
            host, port=port, token=token, session=async_get_clientsession(self.hass)
        )
        try:
            return await client.status()
        except PrimeSparkAuthenticationError:
            errors[CONF_TOKEN] = "invalid_auth"
        except PrimeSparkConnectionError:
            errors["base"] = "cannot_connect"
        except Exception:  # a config flow must not crash on anything
            LOGGER.exception("Unexpected error while connecting to %s:%s", host, port)
            errors["base"] = "unknown"
        return None

    @override
    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Handle a flow started by the user: host, port and token."""
        errors: dict[str, str] = {}
        if user_input is not None:
            host = user_input[CONF_HOST].strip()
            port = int(user_input[CONF_PORT])
            token = user_input[CONF_TOKEN]
            if status := await self._async_status(host, port, token, errors):
                await self.async_set_unique_id(status.node_id, raise_on_progress=False)
                self._abort_if_unique_id_configured()
                return self.async_create_entry(
                    title=_title(status),
                    data={CONF_HOST: host, CONF_PORT: port, CONF_TOKEN: token},
                )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_HOST): HOST_SELECTOR,
                        vol.Required(CONF_PORT, default=DEFAULT_PORT): PORT_SELECTOR,
                        vol.Required(CONF_TOKEN): TOKEN_SELECTOR,
                    }
                ),
                {k: v for k, v in (user_input or {}).items() if k != CONF_TOKEN},
            ),
            errors=errors,
        )

    @override
    async def async_step_zeroconf(self, discovery_info: ZeroconfServiceInfo) -> ConfigFlowResult:
        """Handle a node found by zeroconf; a known node that moved gets its address updated."""
        node_id = discovery_info.properties.get("node_id")
        if not node_id or discovery_info.port is None:
            return self.async_abort(reason="invalid_discovery_info")
        self._host = discovery_info.host
        self._port = discovery_info.port
        await self.async_set_unique_id(node_id)
        self._abort_if_unique_id_configured(updates={CONF_HOST: self._host, CONF_PORT: self._port})
        self._name = node_id
        self.context["title_placeholders"] = {"name": node_id}
        return await self.async_step_zeroconf_confirm()

    async def async_step_zeroconf_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the token of a discovered node."""
        return await self._async_step_discovery_confirm("zeroconf_confirm", user_input)

    @override
    async def async_step_hassio(self, discovery_info: HassioServiceInfo) -> ConfigFlowResult:
        """Handle the Prime Spark add-on, announced by the Supervisor.

        The add-on posts ``{host, port, token?, node_id?}``. Add-ons from a custom repository
        have a hash-prefixed slug, so nothing here depends on the slug.
        """
        config = discovery_info.config
        try:
            self._host = str(config[CONF_HOST])
            self._port = int(config[CONF_PORT])
        except (KeyError, TypeError, ValueError):
            return self.async_abort(reason="invalid_discovery_info")
        self._token = config.get(CONF_TOKEN) or None
        updates: dict[str, Any] = {CONF_HOST: self._host, CONF_PORT: self._port}
        if self._token:
            updates[CONF_TOKEN] = self._token
        if node_id := config.get("node_id"):
            await self.async_set_unique_id(str(node_id))
            self._abort_if_unique_id_configured(updates=updates)
        else:
            self._async_abort_entries_match({CONF_HOST: self._host, CONF_PORT: self._port})
        self._name = discovery_info.name
        self.context["title_placeholders"] = {"name": discovery_info.name}
        return await self.async_step_hassio_confirm()

    async def async_step_hassio_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Confirm the add-on (and ask for its token when the discovery had none)."""
        return await self._async_step_discovery_confirm("hassio_confirm", user_input)

    async def _async_step_discovery_confirm(
        self, step_id: str, user_input: dict[str, Any] | None
    ) -> ConfigFlowResult:
        assert self._host is not None  # nosec B101: type narrowing of an invariant, not a runtime check
        errors: dict[str, str] = {}
        if user_input is not None:
            token = self._token or user_input[CONF_TOKEN]
            if status := await self._async_status(self._host, self._port, token, errors):
                await self.async_set_unique_id(status.node_id, raise_on_progress=False)
                data = {CONF_HOST: self._host, CONF_PORT: self._port, CONF_TOKEN: token}
                self._abort_if_unique_id_configured(updates=data)
                return self.async_create_entry(title=_title(status), data=data)
            if CONF_TOKEN in errors and self._token:
                # The add-on's own token was refused: let the user enter one.
                self._token = None
        schema = vol.Schema({} if self._token else {vol.Required(CONF_TOKEN): TOKEN_SELECTOR})
        return self.async_show_form(
            step_id=step_id,
            data_schema=schema,
            description_placeholders={
                "name": self._name or self._host,
                "host": self._host,
                "port": str(self._port),
            },
            errors=errors,
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """Start reauthentication: the token was refused."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new token."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            token = user_input[CONF_TOKEN]
            host, port = entry.data[CONF_HOST], entry.data[CONF_PORT]
            if status := await self._async_status(host, port, token, errors):
                await self.async_set_unique_id(status.node_id)
                self._abort_if_unique_id_mismatch(reason="unique_id_mismatch")
                return self.async_update_reload_and_abort(entry, data_updates={CONF_TOKEN: token})
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=vol.Schema({vol.Required(CONF_TOKEN): TOKEN_SELECTOR}),
            description_placeholders={"name": entry.title},
            errors=errors,
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the address (and, optionally, the token) of a configured node."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            host = user_input[CONF_HOST].strip()
            port = int(user_input[CONF_PORT])
            token = user_input.get(CONF_TOKEN) or entry.data[CONF_TOKEN]
            if status := await self._async_status(host, port, token, errors):
                await self.async_set_unique_id(status.node_id)
                self._abort_if_unique_id_mismatch(reason="unique_id_mismatch")
                return self.async_update_reload_and_abort(
                    entry, data_updates={CONF_HOST: host, CONF_PORT: port, CONF_TOKEN: token}
                )
        suggested = {
            CONF_HOST: entry.data[CONF_HOST],
            CONF_PORT: entry.data[CONF_PORT],
            **{k: v for k, v in (user_input or {}).items() if k != CONF_TOKEN},
        }
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_HOST): HOST_SELECTOR,
                        vol.Required(CONF_PORT): PORT_SELECTOR,
                        vol.Optional(CONF_TOKEN): TOKEN_SELECTOR,
                    }
                ),
                suggested,
            ),
            description_placeholders={"name": entry.title},
            errors=errors,
        )

    @staticmethod
    @callback
    @override
    def async_get_options_flow(config_entry: PrimeSparkConfigEntry) -> PrimeSparkOptionsFlow:
        """Get the options flow for this handler."""
        return PrimeSparkOptionsFlow()


class PrimeSparkOptionsFlow(OptionsFlow):
    """What a user tunes on a configured node.

    One step: the node's own options first, then the Assist agent's in a ``section`` of their
    own (stored flat in the options, like the rest).
    """

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Manage the options."""
        options = self.config_entry.options
        if user_input is not None:
            data = {**options, CONF_SCAN_INTERVAL: int(user_input[CONF_SCAN_INTERVAL])}
            if (assist := user_input.get(SECTION_ASSIST)) is not None:
                data = {key: value for key, value in data.items() if key not in ASSIST_OPTIONS}
                data.update(_assist_options(assist))
            return self.async_create_entry(data=data)
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_SCAN_INTERVAL): NumberSelector(
                            NumberSelectorConfig(
                                min=MIN_SCAN_INTERVAL,
                                max=MAX_SCAN_INTERVAL,
                                step=1,
                                mode=NumberSelectorMode.BOX,
                                unit_of_measurement="s",
                            )
                        ),
                        vol.Optional(SECTION_ASSIST): section(
                            vol.Schema(await self._async_assist_schema()), {"collapsed": False}
                        ),
                    }
                ),
                {
                    CONF_SCAN_INTERVAL: options.get(CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL),
                    SECTION_ASSIST: {
                        CONF_LLM_HASS_API: llm_api_ids(options)
                        if LLM_API_MULTIPLE
                        else (llm_api_ids(options) or ["none"])[0],
                        CONF_PROMPT: options.get(CONF_PROMPT, llm.DEFAULT_INSTRUCTIONS_PROMPT),
                        CONF_CHAT_MODEL: options.get(CONF_CHAT_MODEL),
                        CONF_MAX_TOKENS: options.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS),
                        CONF_TEMPERATURE: options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE),
                        CONF_MAX_HISTORY: options.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY),
                        CONF_COMPACT_TOOLS: options.get(CONF_COMPACT_TOOLS, DEFAULT_COMPACT_TOOLS),
                        CONF_FORCE_TOOL_FIRST: options.get(
                            CONF_FORCE_TOOL_FIRST, DEFAULT_FORCE_TOOL_FIRST
                        ),
                    },
                },
            ),
        )

    async def _async_assist_schema(self) -> dict[Any, Any]:
        """The Assist agent's options; the models offered are those the node knows."""
        apis = [
            SelectOptionDict(value=api.id, label=api.name) for api in llm.async_get_apis(self.hass)
        ]
        if not LLM_API_MULTIPLE:  # pragma: no cover - Home Assistant 2025.4-2025.6
            apis.insert(0, SelectOptionDict(value="none", label="No control"))
        models: list[SelectOptionDict] = []
        if self.config_entry.state is ConfigEntryState.LOADED:
            try:
                known = await self.config_entry.runtime_data.client.models()
            except PrimeSparkError as err:
                LOGGER.debug("Cannot list the models of %s: %s", self.config_entry.title, err)
            else:
                models = [
                    SelectOptionDict(
                        value=model.id,
                        label=model.id
                        if model.context_size is None
                        else f"{model.id} ({model.context_size} tokens of context)",
                    )
                    for model in known.models
                ]
        return {
            vol.Optional(CONF_LLM_HASS_API): SelectSelector(
                SelectSelectorConfig(options=apis, multiple=LLM_API_MULTIPLE)
            ),
            vol.Optional(CONF_PROMPT): TemplateSelector(),
            vol.Optional(CONF_CHAT_MODEL): SelectSelector(
                SelectSelectorConfig(
                    options=models, custom_value=True, mode=SelectSelectorMode.DROPDOWN
                )
            ),
            vol.Required(CONF_MAX_TOKENS, default=DEFAULT_MAX_TOKENS): NumberSelector(
                NumberSelectorConfig(min=1, max=MAX_MAX_TOKENS, step=1, mode=NumberSelectorMode.BOX)
            ),
            vol.Required(CONF_TEMPERATURE, default=DEFAULT_TEMPERATURE): NumberSelector(
                NumberSelectorConfig(min=0, max=2, step=0.05, mode=NumberSelectorMode.SLIDER)
            ),
            vol.Required(CONF_MAX_HISTORY, default=DEFAULT_MAX_HISTORY): NumberSelector(
                NumberSelectorConfig(min=0, max=100, step=1, mode=NumberSelectorMode.BOX)
            ),
            vol.Required(CONF_COMPACT_TOOLS, default=DEFAULT_COMPACT_TOOLS): BooleanSelector(),
            vol.Required(
                CONF_FORCE_TOOL_FIRST, default=DEFAULT_FORCE_TOOL_FIRST
            ): BooleanSelector(),
        }


def _assist_options(assist: Mapping[str, Any]) -> dict[str, Any]:
    """The submitted Assist section as options (empty fields are left out: the defaults)."""
    data: dict[str, Any] = {
        CONF_MAX_TOKENS: int(assist.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS)),
        CONF_TEMPERATURE: float(assist.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
        CONF_MAX_HISTORY: int(assist.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY)),
        CONF_COMPACT_TOOLS: bool(assist.get(CONF_COMPACT_TOOLS, DEFAULT_COMPACT_TOOLS)),
        CONF_FORCE_TOOL_FIRST: bool(assist.get(CONF_FORCE_TOOL_FIRST, DEFAULT_FORCE_TOOL_FIRST)),
    }
    if apis := llm_api_ids(assist):
        data[CONF_LLM_HASS_API] = apis
    if prompt := (assist.get(CONF_PROMPT) or "").strip():
        data[CONF_PROMPT] = prompt
    if model := (assist.get(CONF_CHAT_MODEL) or "").strip():
        data[CONF_CHAT_MODEL] = model
    return data
