"""A stand-in for HailoRT's ``hailo_platform`` (hardware we lack), same calls as the real one.

Only what :mod:`inference_server.backends.hailo` touches: ``VDevice`` with ``create_params``,
``create_infer_model`` → ``InferModel`` (``input()``/``output()`` with ``shape`` and
``set_format_type``, ``set_batch_size``, ``configure()`` as a context manager) →
``set_power_mode(HailoPowerMode)`` →
``ConfiguredInferModel`` (``create_bindings``, ``wait_for_async_ready``, ``run_async``) and
``HailoRTException``. Behaviour is steered by environment variables so a test can play "no
device" (VDevice raises as HailoRT does without a PCIe device) or "one person detected".
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Any

import numpy as np

__version__ = os.environ.get("FAKE_HAILORT_VERSION", "4.21.0")


class HailoRTException(Exception):
    pass


class FormatType(Enum):
    UINT8 = "uint8"
    FLOAT32 = "float32"


class HailoSchedulingAlgorithm(Enum):
    NONE = 0
    ROUND_ROBIN = 1


class HailoPowerMode(Enum):
    PERFORMANCE = 0
    ULTRA_PERFORMANCE = 1


CONFIGURED_POWER_MODES: list[HailoPowerMode] = []
"""The power mode of every ``configure()``, in order (a test reads what the chip was given)."""


class _Params:
    scheduling_algorithm = HailoSchedulingAlgorithm.NONE


class _Stream:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.format: FormatType | None = None
        self.buffer: Any = None

    def set_format_type(self, fmt: FormatType) -> None:
        self.format = fmt

    def set_buffer(self, buffer: Any) -> None:
        self.buffer = buffer

    def get_buffer(self) -> Any:
        return self.buffer


class _Bindings:
    def __init__(self) -> None:
        self._input = _Stream((640, 640, 3))
        self._output = _Stream((80,))

    def input(self) -> _Stream:
        return self._input

    def output(self) -> _Stream:
        return self._output


class _Job:
    def wait(self, timeout_ms: int) -> None:
        pass


class _Completion:
    exception = None


class _Configured:
    def __enter__(self) -> _Configured:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def create_bindings(self) -> _Bindings:
        return _Bindings()

    def wait_for_async_ready(self, timeout_ms: int) -> None:
        pass

    def run_async(self, bindings: list[_Bindings], callback: Any) -> _Job:
        image = bindings[0].input().get_buffer()
        assert image.shape == (640, 640, 3) and image.dtype == np.uint8
        per_class: list[Any] = [np.zeros((0, 5), dtype=np.float32) for _ in range(80)]
        # class 0 (person) in the image's middle: [y_min, x_min, y_max, x_max, score]
        per_class[0] = np.array(
            [[0.25, 0.25, 0.75, 0.5, 0.9], [0.1, 0.1, 0.2, 0.2, 0.2]], dtype=np.float32
        )
        bindings[0].output().set_buffer(per_class)
        callback(_Completion())
        return _Job()


class _InferModel:
    def __init__(self) -> None:
        self._input = _Stream((640, 640, 3))
        self._output = _Stream((80,))
        self._power_mode = HailoPowerMode.PERFORMANCE

    def set_batch_size(self, size: int) -> None:
        pass

    def set_power_mode(self, mode: HailoPowerMode) -> None:
        assert isinstance(mode, HailoPowerMode)
        self._power_mode = mode

    def input(self) -> _Stream:
        return self._input

    def output(self) -> _Stream:
        return self._output

    def configure(self) -> _Configured:
        CONFIGURED_POWER_MODES.append(self._power_mode)
        return _Configured()


class VDevice:
    def __init__(self, params: _Params | None = None) -> None:
        if os.environ.get("FAKE_HAILO_DEVICE") != "present":
            raise HailoRTException(
                "Failed to create vdevice. status=HAILO_OUT_OF_PHYSICAL_DEVICES(74)"
            )

    @staticmethod
    def create_params() -> _Params:
        return _Params()

    def create_infer_model(self, hef: str) -> _InferModel:
        return _InferModel()

    def release(self) -> None:
        pass
