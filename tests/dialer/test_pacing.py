"""The pacing interface of issue 5, exercised with plain data (no simulator)."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialer.pacing import Floor, Outcome, PredictivePacer, make_pacer

T0 = 1_790_000_000.0  # an arbitrary clock: pacers must not assume time starts at 0


def feed(pacer, rng: random.Random, n: int, live: float = 0.25, at: float = T0) -> None:
    """Dial outcomes with a given live share, plus conversations of about 2 min 20 s."""
    for i in range(n):
        u = rng.random()
        if u < live:
            pacer.observe(Outcome("answered", at + i, ring_seconds=rng.uniform(5, 15)))
            pacer.observe(
                Outcome(
                    "handled",
                    at + i,
                    talk_seconds=rng.lognormvariate(4.44, 0.83),
                    wrap_seconds=rng.lognormvariate(2.88, 0.47),
                )
            )
        elif u < live + 0.2:
            pacer.observe(Outcome("machine", at + i, ring_seconds=rng.uniform(6, 18)))
        elif u < live + 0.3:
            pacer.observe(Outcome("busy", at + i, ring_seconds=rng.uniform(2, 4)))
        else:
            pacer.observe(Outcome("no-answer", at + i, ring_seconds=25.0))


def busy_floor(now: float = T0, **kw) -> Floor:
    base = dict(
        now=now,
        ready=2,
        wrapping=(3.0, 12.0, 15.0),
        talking=tuple(float(x) for x in range(10, 400, 20)),
        dialing=(0.5, 4.0, 9.0),
        waiting=0,
        answered=2000,
        abandoned=10,
    )
    base.update(kw)
    return Floor(**base)


# ---- interface -----------------------------------------------------------------------------


def test_issue_example_runs() -> None:
    t = T0
    pacer = make_pacer("predictive", abandon_cap=0.03, connect_deadline=2.0, ring_timeout=25.0)
    n = pacer.decide(
        Floor(
            now=t,
            ready=3,
            wrapping=(12.0, 3.5),
            talking=(40.0, 190.0),
            dialing=(1.2, 8.0),
            waiting=0,
            answered=412,
            abandoned=9,
        )
    )
    assert isinstance(n, int) and n >= 1  # 3 ready agents, 2 calls in flight: at least one call
    pacer.observe(Outcome(kind="answered", at=t, ring_seconds=9.0, abandoned=False))
    pacer.observe(Outcome(kind="no-answer", at=t, ring_seconds=25.0))
    pacer.observe(Outcome(kind="handled", at=t, talk_seconds=180.0, wrap_seconds=25.0))


def test_unknown_mode_and_outcome_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown pacing mode"):
        make_pacer("turbo")
    with pytest.raises(ValueError, match="unknown outcome kind"):
        Outcome(kind="hangup", at=T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_pacer("predictive", abandon_cap=0.0)


# ---- progressive and preview ------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "dialing", "waiting", "expected"),
    [(5, 0, 0, 5), (5, 2, 0, 3), (5, 2, 1, 2), (1, 4, 0, 0), (0, 0, 3, 0), (0, 0, 0, 0)],
)
def test_progressive_covers_each_ready_agent_once(ready, dialing, waiting, expected) -> None:
    pacer = make_pacer("progressive")
    floor = Floor(T0, ready, dialing=tuple([3.0] * dialing), waiting=waiting)
    assert pacer.decide(floor) == expected


def test_preview_never_dials() -> None:
    pacer = make_pacer("preview")
    assert pacer.decide(Floor(T0, ready=10)) == 0
    assert pacer.decide(busy_floor(ready=50)) == 0


# ---- predictive: the budget is a hard rule ----------------------------------------------


def test_exhausted_budget_means_exactly_progressive() -> None:
    pacer = make_pacer("predictive")
    feed(pacer, random.Random(1), 3000)
    for answered, abandoned in ((1000, 30), (1000, 31), (500, 40)):
        for ready, dialing in ((0, ()), (3, ()), (3, (1.0,)), (10, (1.0, 2.0)), (1, (1.0, 2.0))):
            floor = busy_floor(ready=ready, dialing=dialing, answered=answered, abandoned=abandoned)
            assert pacer.decide(floor) == max(0, ready - len(dialing)), (answered, abandoned)


def test_more_budget_never_means_fewer_calls() -> None:
    pacer = make_pacer("predictive")
    feed(pacer, random.Random(2), 3000)
    calls = [
        pacer.decide(busy_floor(answered=1000, abandoned=ab)) for ab in (30, 29, 28, 25, 20, 5)
    ]
    assert calls == sorted(calls)
    assert calls[-1] > calls[0]  # a healthy budget is spent on more calls than progressive


def test_shift_start_does_not_jump_to_max_dial_level() -> None:
    """VICIdial's failure: all agents ready at 08:00, nothing answered yet."""
    pacer = make_pacer("predictive")
    floor = Floor(T0, ready=25)
    n = pacer.decide(floor)
    assert 25 <= n <= 60  # some over-dialing, but far from a 4:1 ratio (100 calls)
    # with those calls in flight, the next decision a moment later adds nothing
    again = pacer.decide(Floor(T0 + 0.01, ready=25, dialing=tuple([0.01] * n)))
    assert again == 0
    # the forecast threshold stays near zero until the budget has been earned
    assert pacer.allowed_rate(floor) == pytest.approx(0.0002)


def test_budget_opens_gradually() -> None:
    pacer = PredictivePacer()
    rates = [pacer.allowed_rate(busy_floor(answered=a, abandoned=0)) for a in (0, 50, 100, 500)]
    assert rates[0] is not None and rates[-1] is not None
    assert rates == sorted(rates) and rates[-1] > 10 * rates[0]


def test_negative_or_odd_elapsed_times_do_not_crash() -> None:
    pacer = make_pacer("predictive")
    n = pacer.decide(busy_floor(talking=(-1.0, 1e7), wrapping=(-0.5, 1e5), dialing=(-2.0, 500.0)))
    assert n >= 0


_SHARED = make_pacer("predictive")


@settings(max_examples=120, deadline=None)
@given(
    ready=st.integers(0, 120),
    talking=st.lists(st.floats(0, 5000), max_size=100),
    wrapping=st.lists(st.floats(0, 600), max_size=50),
    dialing=st.lists(st.floats(0, 60), max_size=200),
    waiting=st.integers(0, 10),
    answered=st.integers(0, 100_000),
    abandoned=st.integers(0, 5_000),
)
def test_decide_is_never_negative(ready, talking, wrapping, dialing, waiting, answered, abandoned):
    pacer = _SHARED
    floor = Floor(T0, ready, tuple(wrapping), tuple(talking), tuple(dialing), waiting, answered,
                  abandoned)  # fmt: skip
    n = pacer.decide(floor)
    assert isinstance(n, int) and n >= max(0, ready - len(dialing) - waiting)
    assert n <= 4096


# ---- predictive: learning ------------------------------------------------------------------


def test_learns_hit_rate_and_dials_more_when_fewer_people_answer() -> None:
    high, low = PredictivePacer(), PredictivePacer()
    feed(high, random.Random(3), 4000, live=0.40)
    feed(low, random.Random(3), 4000, live=0.10)
    assert high.hit_rate == pytest.approx(0.40, abs=0.05)
    assert low.hit_rate == pytest.approx(0.10, abs=0.03)
    # ten agents ready, budget healthy: cover them with enough calls to reach them all
    floor = busy_floor(ready=10, dialing=())
    assert low.decide(floor) > 1.5 * high.decide(floor) > 10


def test_tracks_a_change_in_answer_rate() -> None:
    pacer = PredictivePacer()
    feed(pacer, random.Random(4), 3000, live=0.30)
    assert pacer.hit_rate == pytest.approx(0.30, abs=0.05)
    feed(pacer, random.Random(5), 3000, live=0.15, at=T0 + 3600)
    assert pacer.hit_rate == pytest.approx(0.15, abs=0.04)


def test_learns_talk_and_wrap_times() -> None:
    pacer = PredictivePacer()
    feed(pacer, random.Random(6), 8000)
    tmu, tsig, wmu, wsig = pacer.talk_wrap_params
    assert tmu == pytest.approx(4.44, abs=0.15) and tsig == pytest.approx(0.83, abs=0.12)
    assert wmu == pytest.approx(2.88, abs=0.1) and wsig == pytest.approx(0.47, abs=0.1)


def test_agents_about_to_free_up_are_dialed_for() -> None:
    pacer = make_pacer("predictive")
    feed(pacer, random.Random(7), 3000)
    long_talks = busy_floor(ready=3, dialing=(), wrapping=(), talking=(5.0,) * 10)
    ending = busy_floor(ready=3, dialing=(), wrapping=(30.0,) * 10, talking=())
    assert pacer.decide(ending) > 3 * pacer.decide(long_talks) >= 9


def test_abandonments_make_it_more_careful() -> None:
    pacer = PredictivePacer()
    feed(pacer, random.Random(8), 3000)
    floor = busy_floor(answered=5000, abandoned=20)
    pacer.decide(floor)  # the budget is open: calibration is active
    before = pacer.threshold
    for i in range(20):
        pacer.observe(Outcome("answered", T0 + i, ring_seconds=8.0, abandoned=True))
    assert pacer.threshold < before
    assert pacer.decide(floor) <= pacer.decide(floor)


def test_deterministic_and_clock_origin_free() -> None:
    def run(origin: float) -> list[int]:
        pacer = make_pacer("predictive")
        rng = random.Random(9)
        out = []
        for step in range(300):
            feed(pacer, rng, 5, at=origin + step)
            out.append(pacer.decide(busy_floor(now=origin + step, ready=step % 4)))
        return out

    assert run(T0) == run(T0) == run(0.0) == run(-5e6)


def test_decide_is_fast_at_100_agents() -> None:
    pacer = make_pacer("predictive")
    rng = random.Random(10)
    feed(pacer, rng, 5000)
    floors = [
        Floor(
            T0 + i,
            ready=rng.randint(0, 5),
            wrapping=tuple(rng.uniform(0, 30) for _ in range(15)),
            talking=tuple(rng.uniform(0, 600) for _ in range(82)),
            dialing=tuple(rng.uniform(0, 25) for _ in range(45)),
            answered=10_000,
            abandoned=200,
        )
        for i in range(300)
    ]
    times = []
    for f in floors:
        t0 = time.perf_counter()
        pacer.decide(f)
        times.append(time.perf_counter() - t0)
    times.sort()
    # the issue asks < 1 ms; the median keeps this robust on a loaded CI machine
    assert times[len(times) // 2] < 0.001
