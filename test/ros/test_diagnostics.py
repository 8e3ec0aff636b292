"""The one definition of counters, rates and the /diagnostics status (usp_ros.support.diagnostics), on a fake clock."""
import math

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from usp_ros.support.diagnostics import PUBLISHED, RECEIVED, Statistics, diagnostics_message


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_rates_are_events_per_second_of_the_period_and_totals_run_on():
    clock = Clock()
    stats = Statistics(("bad",), clock=clock)
    for _ in range(6):
        stats.count(RECEIVED)
    stats.count(PUBLISHED, seconds=0.010)
    stats.count(PUBLISHED, seconds=0.030)
    stats.count("bad", 2)
    clock.now += 2.0
    period = stats.take_period()
    assert period.seconds == 2.0
    assert (period.rate(RECEIVED), period.rate(PUBLISHED), period.rate("bad")) == (3.0, 1.0, 1.0)
    assert math.isclose(period.mean_ms[PUBLISHED], 20.0)

    clock.now += 0.5  # a period without frames: rates 0, totals kept, the last mean duration kept
    stats.count(RECEIVED)
    period = stats.take_period()
    assert period.seconds == 0.5 and period.rate(RECEIVED) == 2.0 and period.rate(PUBLISHED) == 0.0
    assert period.totals == {RECEIVED: 7, PUBLISHED: 2, "bad": 2} and period.counts["bad"] == 0
    assert math.isclose(period.mean_ms[PUBLISHED], 20.0) and stats.total(RECEIVED) == 7


def test_a_timed_counter_has_no_mean_before_its_first_event():
    clock = Clock()
    stats = Statistics(clock=clock)
    assert PUBLISHED not in stats.take_period().mean_ms
    stats.count(PUBLISHED, 0, seconds=0.0)  # declared timed, no event yet
    assert math.isnan(stats.take_period().mean_ms[PUBLISHED])


def status_of(period, warnings=None):
    (status,) = diagnostics_message(Time(sec=5), "/ns/node: task", "cpu", period, warnings or {"bad": "bad frame(s)"},
                                    "waiting for input", {"device": "cpu"}).status
    return status, {value.key: value.value for value in status.values}


def test_status_levels_messages_and_common_keys():
    clock = Clock()
    stats = Statistics(("bad",), clock=clock)
    clock.now += 1.0
    status, values = status_of(stats.take_period())
    assert (status.level, status.message, status.name, status.hardware_id) == \
        (DiagnosticStatus.OK, "waiting for input", "/ns/node: task", "cpu")
    assert values == {"input rate (Hz)": "0.00", "output rate (Hz)": "0.00", "frames received": "0",
                      "frames published": "0", "device": "cpu"}

    stats.count(RECEIVED, 4)
    stats.count(PUBLISHED, 3)
    clock.now += 2.0
    status, values = status_of(stats.take_period())
    assert (status.level, status.message) == (DiagnosticStatus.OK, "running")
    assert (values["input rate (Hz)"], values["output rate (Hz)"], values["frames published"]) == ("2.00", "1.50", "3")

    stats.count(RECEIVED)
    stats.count("bad", 3)
    clock.now += 1.0
    status, _ = status_of(stats.take_period())
    assert (status.level, status.message) == (DiagnosticStatus.WARN, "3 bad frame(s)")
