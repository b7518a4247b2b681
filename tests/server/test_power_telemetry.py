"""Raspberry Pi 5 PMIC telemetry: parsed from captured real output, absent → None (never made up)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from inference_server.power.telemetry import PmicReader, parse_pmic

FIXTURE = Path(__file__).parent / "fixtures" / "pmic_read_adc_pi5.txt"

# The pairs in the capture, written out by hand: watts = sum of V x I over rails with both.
RAILS = {
    "3V7_WL_SW": (0.00000000, 3.79999600),
    "3V3_SYS": (0.06245952, 3.30632200),
    "1V8_SYS": (0.16102850, 1.79828900),
    "DDR_VDD2": (0.00780744, 1.10292900),
    "DDR_VDDQ": (0.00000000, 0.60476130),
    "1V1_SYS": (0.17566740, 1.10439400),
    "0V8_SW": (0.32791250, 0.80256330),
    "VDD_CORE": (10.87674000, 0.89745940),
    "3V3_DAC": (0.00036630, 3.30494200),
    "3V3_ADC": (0.00042735, 3.30219400),
    "0V8_AON": (0.00579975, 0.79736190),
    "HDMI": (0.01367520, 5.07056000),
}


def test_captured_output_sums_to_watts() -> None:
    reading = parse_pmic(FIXTURE.read_text())
    assert reading is not None
    expected = sum(a * v for a, v in RAILS.values())
    assert reading.watts == pytest.approx(expected, abs=0.001)
    assert 10.0 < reading.watts < 11.0  # a loaded Pi 5: almost all of it is VDD_CORE
    assert set(reading.rails) == set(RAILS)  # EXT5V and BATT have no current: left out
    assert reading.rails["VDD_CORE"] == pytest.approx(10.87674 * 0.8974594, abs=1e-3)


@pytest.mark.parametrize(
    "text",
    ["", "garbage\n", "   EXT5V_V volt(24)=5.06788000V\n", "VDD_CORE_A current(7)=1.0A\n"],
)
def test_nothing_to_pair_is_none(text: str) -> None:
    assert parse_pmic(text) is None


async def test_missing_tool_gives_none(tmp_path: Path) -> None:
    reader = PmicReader(str(tmp_path / "no-such-vcgencmd"))
    assert await reader.read() is None
    assert await reader.read() is None  # remembered: not retried on every call


async def test_failing_tool_gives_none(tmp_path: Path) -> None:
    """vcgencmd on a board without a PMIC (a Pi 4) exits non-zero."""
    tool = tmp_path / "vcgencmd"
    tool.write_text("#!/bin/sh\necho 'error=1 error_msg=\"Command not registered\"'\nexit 255\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    assert await PmicReader(str(tool)).read() is None


async def test_reader_runs_the_tool(tmp_path: Path) -> None:
    """The real subprocess path, with a stand-in for the Pi's tool printing the capture."""
    tool = tmp_path / "vcgencmd"
    tool.write_text(f'#!/bin/sh\n[ "$1" = pmic_read_adc ] || exit 2\ncat "{FIXTURE}"\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    reading = await PmicReader(str(tool)).read()
    assert reading is not None
    assert reading.watts == pytest.approx(sum(a * v for a, v in RAILS.values()), abs=0.001)
