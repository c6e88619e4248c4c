"""A trial's reports to Tune (tuner.trial.run.Reporter): in order, waiting for the driver only where it can matter."""

import threading
import time

import pytest

from tuner.trial.run import HEAR_S, Reporter


class SlowDriver:
    """Stands in for ``tune.report``: holds each report until the test answers it, and keeps the order."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.answer = threading.Semaphore(0)
        self.stop_at: int | None = None

    def __call__(self, metrics: dict, folder: str | None) -> None:
        self.answer.acquire()
        if metrics["epoch"] == self.stop_at:
            raise SystemExit(0)  # as Tune ends a stopped trial inside its report
        self.got.append(metrics["epoch"])


def _timed(call) -> float:
    t0 = time.monotonic()
    call()
    return time.monotonic() - t0


def test_reports_between_answer_epochs_do_not_wait_and_keep_their_order():
    driver = SlowDriver()
    reporter = Reporter(answer_epochs=(4,), send=driver)
    for epoch in (1, 2, 3):  # the driver has answered none yet: the trial goes on all the same
        assert _timed(lambda e=epoch: reporter.report({"epoch": e}, None)) < 0.05
    waiter = threading.Thread(target=reporter.report, args=({"epoch": 4}, None))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # epoch 4 may be stopped there: it waits for 1-3, then for its own answer
    for _ in range(4):
        driver.answer.release()
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert driver.got == [1, 2, 3, 4]
    reporter.close()


def test_each_report_says_when_its_epoch_ended_not_when_tune_took_it():
    sent = []
    reporter = Reporter(send=lambda metrics, folder: (time.sleep(0.3), sent.append(metrics)))
    time.sleep(0.1)
    reporter.report({"epoch": 1}, None)
    reporter.report({"epoch": 2}, None)  # handed over at once, while the first still waits for the driver
    reporter.close()
    first, second = (m["time_this_iter_s"] for m in sent)
    assert 0.1 <= first < 0.25 and second < 0.05


def test_a_checkpoint_waits_for_its_report():
    driver = SlowDriver()
    reporter = Reporter(send=driver)
    reporter.report({"epoch": 1}, None)
    waiter = threading.Thread(target=reporter.report, args=({"epoch": 2}, "/a/lent/folder"))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # the folder is only lent for the call
    driver.answer.release()
    driver.answer.release()
    waiter.join(timeout=5)
    assert driver.got == [1, 2]


def test_a_stop_met_by_a_queued_report_ends_the_trial_at_its_next_report():
    driver = SlowDriver()
    driver.stop_at = 2
    reporter = Reporter(send=driver)
    reporter.report({"epoch": 1}, None)
    reporter.report({"epoch": 2}, None)
    reporter.report({"epoch": 3}, None)  # queued behind the stop: never sent
    for _ in range(3):
        driver.answer.release()
    deadline = time.monotonic() + 5
    while reporter._stop is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(SystemExit):
        reporter.report({"epoch": 4}, None)
    reporter.close()
    assert driver.got == [1]


def test_close_hands_over_every_queued_report():
    driver = SlowDriver()
    reporter = Reporter(send=driver)
    for epoch in (1, 2, 3):
        reporter.report({"epoch": epoch}, None)
    for _ in range(3):
        driver.answer.release()
    reporter.close()
    assert driver.got == [1, 2, 3]
    reporter.raise_stop()  # nothing met


def test_a_driver_falling_behind_makes_the_trial_wait():
    driver = SlowDriver()
    reporter = Reporter(send=driver)
    reporter.report({"epoch": 1}, None)
    time.sleep(HEAR_S)  # epoch 1 handed over HEAR_S ago and still unanswered: a stop must reach the trial soon
    waiter = threading.Thread(target=reporter.report, args=({"epoch": 2}, None))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()
    driver.answer.release()
    driver.answer.release()
    waiter.join(timeout=5)
    assert driver.got == [1, 2]


def test_a_long_epoch_alone_does_not_make_the_trial_wait():
    reporter = Reporter(send=lambda metrics, folder: time.sleep(0.5 if metrics["epoch"] == 2 else 0))
    reporter.report({"epoch": 1}, None)
    time.sleep(HEAR_S + 0.1)  # an epoch longer than HEAR_S, every report answered meanwhile
    assert _timed(lambda: reporter.report({"epoch": 2}, None)) < 0.05  # the driver takes 0.5 s to answer it
    reporter.close()


def test_every_scheduler_waits_where_it_decides():
    from search_spaces import Budget
    from tuner import schedulers

    budget = Budget(num_samples=8, max_epochs=16, grace_period=2, reduction_factor=2)
    assert schedulers.get("asha").answer_epochs(budget) == (2, 4, 8, 16)
    assert schedulers.get("hyperband").answer_epochs(budget) == (2, 4, 8, 16)
    assert schedulers.get("pbt").answer_epochs(budget) == (2, 4, 6, 8, 10, 12, 14, 16)
    assert schedulers.get("median").answer_epochs(budget) == tuple(range(2, 17))
    assert schedulers.get("fifo").answer_epochs(budget) == (16,)
