import math

from retina.training.progress import RunProgress, clock


def test_clock_reads_like_a_duration():
    assert clock(0) == "0:00"
    assert clock(65.4) == "1:05"
    assert clock(3723) == "1:02:03"


def test_time_left_counts_from_the_end_of_the_first_step():
    run = RunProgress(total_steps=101)
    assert run.seconds_left(0, now=0.0) is None
    run.step_done(1, now=30.0)  # the first step also paid for start-up: not counted
    assert run.seconds_left(1, now=30.0) is None
    run.step_done(11, now=50.0)  # 10 steps in 20 s -> 2 s/step, 90 steps left
    assert run.seconds_per_step(11, now=50.0) == 2.0
    assert run.seconds_left(11, now=50.0) == 180.0


def test_no_estimate_without_a_step_limit():
    run = RunProgress(total_steps=math.inf)
    run.step_done(1, now=0.0)
    assert run.seconds_left(5, now=4.0) is None
