"""dali_snapmix/timing.py: the shuffled rounds every benchmark times with."""

import pytest

from dali_snapmix.timing import clock, medians, shuffled_rounds


def test_each_round_runs_every_variant_once_in_a_fresh_order_and_never_one_twice_in_a_row():
    ran = []
    variants = {n: (lambda n=n: ran.append(n)) for n in "abcde"}
    figure = iter(range(10_000))
    times = shuffled_rounds(variants, rounds=40, warmup=2, seed=3, measure=lambda f: (f(), next(figure))[1])
    rounds = [ran[i:i + 5] for i in range(0, len(ran), 5)]
    assert len(rounds) == 42 and all(sorted(r) == list("abcde") for r in rounds)
    assert all(x != y for x, y in zip(ran, ran[1:]))  # across round boundaries too
    assert len({tuple(r) for r in rounds}) > 20  # fresh orders, not one alternating pair
    assert {r[0] for r in rounds} == set("abcde")  # every variant gets to lead
    # the warm-up's 10 figures are dropped; index k of each list is round k
    for n in "abcde":
        assert len(times[n]) == 40 and all(t >= 10 for t in times[n])
        assert [ran.index(n, 5 * (k + 2)) // 5 - 2 for k in range(40)] == list(range(40))
    assert medians({"a": [3.0, 1.0, 2.0]}) == {"a": 2.0}


def test_the_clock_times_what_it_runs_and_bad_rounds_are_named():
    import time

    assert clock("cpu")(lambda: time.sleep(0.02)) >= 0.02
    with pytest.raises(ValueError, match="rounds must be >= 1 and warmup >= 0, got rounds=0, warmup=1"):
        shuffled_rounds({"a": lambda: None}, rounds=0)
