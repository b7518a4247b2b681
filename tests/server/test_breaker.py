"""The circuit breaker's states, on a clock the test moves (no sleeping, no timing asserts)."""

from __future__ import annotations

from inference_server.routing.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[CircuitBreaker, Clock, list[tuple[BreakerState, BreakerState]]]:
    clock = Clock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        failure_threshold=3,
        cooldown=30,
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
    )
    return breaker, clock, changes


def test_opens_after_consecutive_failures_only() -> None:
    breaker, _, changes = make()
    breaker.record_failure("refused")
    breaker.record_failure("refused")
    breaker.record_success()  # the count is of consecutive failures
    breaker.record_failure("refused")
    breaker.record_failure("refused")
    assert breaker.state == "closed"
    breaker.record_failure("timed out")
    assert breaker.state == "open"
    assert not breaker.available()
    assert breaker.last_error == "timed out"
    assert changes == [("closed", "open")]


def test_half_open_lets_one_probe_through_then_closes() -> None:
    breaker, clock, changes = make()
    for _ in range(3):
        breaker.record_failure("refused")
    clock.now += 29
    assert breaker.state == "open"
    assert breaker.retry_in == 1
    assert not breaker.try_acquire_probe()
    clock.now += 1
    assert breaker.state == "half_open"
    assert breaker.probe_free()
    assert breaker.try_acquire_probe()
    assert not breaker.try_acquire_probe()  # a single probe at a time
    assert not breaker.probe_free()
    breaker.record_success()
    assert breaker.state == "closed"
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_failed_probe_opens_again_for_a_full_cooldown() -> None:
    breaker, clock, _ = make()
    for _ in range(3):
        breaker.record_failure("refused")
    clock.now += 30
    assert breaker.try_acquire_probe()
    breaker.record_failure("still refused")
    assert breaker.state == "open"
    assert breaker.retry_in == 30


def test_late_failures_do_not_extend_the_cooldown() -> None:
    breaker, clock, _ = make()
    for _ in range(3):
        breaker.record_failure("refused")
    clock.now += 20
    breaker.record_failure("a request sent before the breaker opened")
    assert breaker.retry_in == 10


def test_a_probe_without_verdict_is_released() -> None:
    breaker, clock, _ = make()
    for _ in range(3):
        breaker.record_failure("refused")
    clock.now += 30
    assert breaker.try_acquire_probe()
    breaker.release_probe()
    assert breaker.try_acquire_probe()
