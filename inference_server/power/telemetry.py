"""Power telemetry from the Raspberry Pi 5 PMIC (``vcgencmd pmic_read_adc``).

The Pi 5's PMIC reports current and voltage for each of its rails, one line each::

     3V7_WL_SW_A current(0)=0.00390372A
     3V7_WL_SW_V volt(8)=3.60855000V

A rail's power is V x I of its ``_V`` and ``_A`` lines; the board's draw is the sum over rails
that have both (``EXT5V_V`` and ``BATT_V`` have no current and are left out). This sum misses
conversion losses, so it reads below a USB-C meter; it is what the hardware measures, and we show
it as measured rather than scaling it by a guessed factor. Where the tool is missing (any other
machine, or a container without ``/dev/vcio``) the value is ``None``: Home Assistant shows the
sensor as unavailable, never a made-up number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass

_LOGGER = logging.getLogger(__name__)

_LINE = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9_]+)_(?P<unit>[AV])\s+(?:current|volt)\(\d+\)="
    r"(?P<value>[-+0-9.eE]+)[AV]\s*$"
)
_CACHE_SECONDS = 2.0
_RETRY_ABSENT_SECONDS = 300.0
_COMMAND_TIMEOUT = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class PowerReading:
    watts: float
    rails: dict[str, float]
    """Watts per rail (``VDD_CORE``: 0.58, ...)."""


def parse_pmic(text: str) -> PowerReading | None:
    """Watts from ``pmic_read_adc`` output; None when no rail has both a current and a volt."""
    currents: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        (currents if match["unit"] == "A" else volts)[match["name"]] = value
    rails = {name: currents[name] * volts[name] for name in currents if name in volts}
    if not rails:
        return None
    return PowerReading(
        watts=round(sum(rails.values()), 3),
        rails={name: round(w, 4) for name, w in sorted(rails.items())},
    )


class PmicReader:
    """Runs the tool at most every two seconds; remembers for a while that it is absent."""

    def __init__(self, command: str) -> None:
        self._command = command
        self._cached: tuple[float, PowerReading | None] | None = None
        self._absent_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def source(self) -> str:
        return f"{self._command} pmic_read_adc"

    async def read(self) -> PowerReading | None:
        now = time.monotonic()
        if now < self._absent_until:
            return None
        if self._cached is not None and now - self._cached[0] < _CACHE_SECONDS:
            return self._cached[1]
        async with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < _CACHE_SECONDS:
                return self._cached[1]
            reading = await self._run()
            self._cached = (time.monotonic(), reading)
            return reading

    async def _run(self) -> PowerReading | None:
        try:
            process = await asyncio.create_subprocess_exec(
                self._command,
                "pmic_read_adc",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except (FileNotFoundError, PermissionError) as err:
            _LOGGER.debug("No power telemetry: %s", err)
            self._absent_until = time.monotonic() + _RETRY_ABSENT_SECONDS
            return None
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT):
                out, _ = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            _LOGGER.warning("%s timed out", self.source)
            return None
        if process.returncode != 0:
            # vcgencmd exists but the firmware has no PMIC (a Pi 4): no telemetry here.
            self._absent_until = time.monotonic() + _RETRY_ABSENT_SECONDS
            return None
        return parse_pmic(out.decode("utf-8", "replace"))
