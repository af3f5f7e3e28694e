"""Discrete-event simulation of an outbound campaign floor driving a real pacer.

The simulator drives the very same pacer object as the live dialer (``dialer.pacing``), so
that what supervisors read here (occupancy at an abandonment rate that never exceeds the cap)
is what the production pacing does. A heap of timed events with a seeded RNG keeps runs
reproducible; ``decide`` is called after every floor change and at least once a second.

Compliance is checked, not assumed: an answered call that no agent takes within the connect
deadline is abandoned (safe-harbor message) and counted; the day's abandonment rate over the
cap, a call connected after the deadline or a pacer answering nonsense are violations.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from dialer.pacing import Floor, Outcome, OutcomeKind, Pacer, make_pacer
from dialer.sim_scenario import Scenario, ScenarioError, load_scenario

__all__ = [
    "DayResult",
    "Scenario",
    "ScenarioError",
    "Summary",
    "load_scenario",
    "main",
    "run_seeds",
    "simulate_day",
    "summarize",
]

# event kinds
_OUTCOME, _TALK_END, _WRAP_END, _DEADLINE, _LOGIN, _BREAK, _BREAK_END, _CHANGE = range(8)
# call kinds
_LIVE, _MACHINE, _BUSY, _FAILED, _CONGESTION, _NOANSWER = range(6)
_KIND_NAMES: tuple[OutcomeKind, ...] = (
    "answered",
    "machine",
    "busy",
    "failed",
    "congestion",
    "no-answer",
)
# agent states
_OFF, _READY, _TALK, _WRAP, _BREAK_ST = range(5)

_SAMPLE_EVERY = 60.0  # seconds between samples of the floor for the over-the-day series


@dataclass(slots=True)
class DayResult:
    """One simulated day (one seed)."""

    seed: int
    occupancy: float
    abandon_rate: float
    talk_min_per_agent_hour: float
    dials_per_connect: float
    p95_idle_per_connect: float
    dials: int
    connects: int
    answered: int
    abandoned: int
    violations: list[str] = field(default_factory=list)
    #: (hours into the day, occupancy over the last sample interval, abandonment so far)
    series: list[tuple[float, float, float]] = field(default_factory=list)
    decide_seconds: list[float] = field(default_factory=list)
    decides: int = 0
    wall_seconds: float = 0.0


def _lognormal_sampler(rng: random.Random, mean: float, sd: float) -> Callable[[], float]:
    if sd <= 0.0:
        return lambda: mean
    s2 = math.log(1.0 + (sd / mean) ** 2)
    mu, sigma = math.log(mean) - 0.5 * s2, math.sqrt(s2)
    lv = rng.lognormvariate
    return lambda: lv(mu, sigma)


def simulate_day(sc: Scenario, pacer: Pacer, seed: int, *, time_decide: bool = False) -> DayResult:
    """Run one day of ``sc`` with ``pacer`` (fresh per day) and the RNG seeded with ``seed``."""
    wall0 = time.perf_counter()
    rng = random.Random(seed)
    rand = rng.random
    day_end = sc.day_hours * 3600.0
    clock0 = sc.clock_start
    deadline = sc.connect_deadline
    ring_timeout = sc.ring_timeout
    cap = sc.abandon_cap
    n_agents = sc.agents

    live_s = _lognormal_sampler(rng, sc.live_delay.mean, sc.live_delay.sd)
    mach_s = _lognormal_sampler(rng, sc.machine_answer.mean, sc.machine_answer.sd)
    busy_s = _lognormal_sampler(rng, sc.busy_delay.mean, sc.busy_delay.sd)
    fail_s = _lognormal_sampler(rng, sc.failed_delay.mean, sc.failed_delay.sd)
    cong_s = _lognormal_sampler(rng, sc.congestion_delay.mean, sc.congestion_delay.sd)
    talk_s = _lognormal_sampler(rng, sc.talk.mean, sc.talk.sd)
    wrap_s = _lognormal_sampler(rng, sc.wrap.mean, sc.wrap.sd)
    latest_answer = ring_timeout - 0.05

    def cum_shares(hours: float) -> tuple[float, float, float, float, float]:
        m = sc.mix_at(hours)
        a = m.live
        b = a + m.machine
        c = b + m.busy
        d = c + m.failed
        return a, b, c, d, d + m.congestion

    shares = cum_shares(0.0)

    heap: list[tuple[float, int, int, int]] = []
    push = heapq.heappush
    seq = 0

    def schedule(t: float, kind: int, arg: int) -> None:
        nonlocal seq
        seq += 1
        push(heap, (t, seq, kind, arg))

    # agents
    state = [_OFF] * n_agents
    since = [0.0] * n_agents
    cur_talk = [0.0] * n_agents
    cur_wrap = [0.0] * n_agents
    pending_break = [0.0] * n_agents
    ready: dict[int, float] = {}
    talking: dict[int, float] = {}
    wrapping: dict[int, float] = {}
    for a in range(n_agents):
        login = rand() * sc.login_spread_minutes * 60.0 if sc.login_spread_minutes else 0.0
        schedule(login, _LOGIN, a)
        for b in sc.breaks:
            at = b.at_hours * 3600.0 + rand() * b.spread_minutes * 60.0
            schedule(at, _BREAK, a * 1024 + sc.breaks.index(b))
    for i, ch in enumerate(sc.changes):
        schedule(ch.at_hours * 3600.0, _CHANGE, i)

    # calls
    dialing: dict[int, float] = {}  # call id -> launch time
    call_kind: dict[int, int] = {}
    waiting: dict[int, float] = {}  # call id -> answer (detection) time, oldest first
    next_call = 0

    # accounting
    idle_total = talk_total = wrap_total = 0.0
    idle_per_connect: list[float] = []
    dials = connects = answered = abandoned = 0
    violations: list[str] = []
    series: list[tuple[float, float, float]] = []
    samp_busy = samp_ready = 0
    next_sample = _SAMPLE_EVERY
    next_series = 900.0
    decide_times: list[float] = []
    decides = 0
    perf = time.perf_counter
    observe = pacer.observe
    decide = pacer.decide

    def connect(a: int, cid: int, t: float) -> None:
        nonlocal connects, answered
        tk = talk_s()
        wr = wrap_s()
        cur_talk[a] = tk
        cur_wrap[a] = wr
        state[a] = _TALK
        since[a] = t
        talking[a] = t
        schedule(t + tk, _TALK_END, a)
        connects += 1
        answered += 1
        del call_kind[cid]
        observe(Outcome("answered", clock0 + t, ring_seconds=ring_of.pop(cid), abandoned=False))

    ring_of: dict[int, float] = {}  # call id -> seconds from launch to live detection

    def become_available(a: int, t: float) -> None:
        if pending_break[a] > 0.0:
            state[a] = _BREAK_ST
            since[a] = t
            schedule(t + pending_break[a], _BREAK_END, a)
            pending_break[a] = 0.0
            return
        if waiting:
            cid = next(iter(waiting))
            answered_at = waiting.pop(cid)
            if t - answered_at > deadline + 1e-9:
                violations.append(
                    f"call {cid} connected {t - answered_at:.2f} s after answer "
                    f"(deadline {deadline:g} s)"
                )
            idle_per_connect.append(0.0)
            connect(a, cid, t)
            return
        state[a] = _READY
        since[a] = t
        ready[a] = t

    def close_state(a: int, t: float) -> None:
        nonlocal idle_total, talk_total, wrap_total
        s = state[a]
        d = t - since[a]
        if s == _READY:
            idle_total += d
        elif s == _TALK:
            talk_total += d
        elif s == _WRAP:
            wrap_total += d

    def sample_until(t: float) -> None:
        """The over-the-day series: the floor sampled once a minute, a point per 15 minutes."""
        nonlocal samp_busy, samp_ready, next_sample, next_series
        while t >= next_sample:
            samp_busy += len(talking) + len(wrapping)
            samp_ready += len(ready)
            next_sample += _SAMPLE_EVERY
            if next_sample > next_series:
                tot = samp_busy + samp_ready
                series.append(
                    (next_series / 3600.0, samp_busy / tot if tot else 0.0,
                     abandoned / answered if answered else 0.0)
                )  # fmt: skip
                samp_busy = samp_ready = 0
                next_series += 900.0

    last_decide = -1.0
    t = 0.0
    while True:
        t_next = heap[0][0] if heap else math.inf
        tick = last_decide + 1.0
        if tick < t_next:
            t = tick
            if t >= day_end:
                break
        else:
            t = t_next
            if t >= day_end:
                break
            # process every event at this instant before deciding once
            while heap and heap[0][0] == t:
                _, _, kind, arg = heapq.heappop(heap)
                if kind == _OUTCOME:
                    launch = dialing.pop(arg)
                    ck = call_kind[arg]
                    if ck == _LIVE:
                        ring_of[arg] = t - launch
                        if ready:
                            a = next(iter(ready))
                            idle = t - ready.pop(a)
                            idle_total += idle
                            idle_per_connect.append(idle)
                            connect(a, arg, t)
                        else:
                            waiting[arg] = t
                            schedule(t + deadline, _DEADLINE, arg)
                    else:
                        del call_kind[arg]
                        observe(Outcome(_KIND_NAMES[ck], clock0 + t, ring_seconds=t - launch))
                elif kind == _TALK_END:
                    a = arg
                    talk_total += t - since[a]
                    del talking[a]
                    state[a] = _WRAP
                    since[a] = t
                    wrapping[a] = t
                    schedule(t + cur_wrap[a], _WRAP_END, a)
                elif kind == _WRAP_END:
                    a = arg
                    wrap_total += t - since[a]
                    del wrapping[a]
                    observe(
                        Outcome(
                            "handled",
                            clock0 + t,
                            talk_seconds=cur_talk[a],
                            wrap_seconds=cur_wrap[a],
                        )
                    )
                    become_available(a, t)
                elif kind == _DEADLINE:
                    if arg in waiting:
                        del waiting[arg]
                        call_kind.pop(arg, None)
                        abandoned += 1
                        answered += 1
                        observe(
                            Outcome(
                                "answered",
                                clock0 + t,
                                ring_seconds=ring_of.pop(arg),
                                abandoned=True,
                            )
                        )
                elif kind == _LOGIN:
                    become_available(arg, t)
                elif kind == _BREAK:
                    a, bi = divmod(arg, 1024)
                    minutes = sc.breaks[bi].minutes * 60.0
                    if state[a] == _READY:
                        idle_total += t - ready.pop(a)
                        state[a] = _BREAK_ST
                        since[a] = t
                        schedule(t + minutes, _BREAK_END, a)
                    elif state[a] in (_TALK, _WRAP):
                        pending_break[a] = minutes
                    else:  # not logged in yet or already on a break: take it on return
                        pending_break[a] = max(pending_break[a], minutes)
                elif kind == _BREAK_END:
                    become_available(arg, t)
                elif kind == _CHANGE:
                    shares = cum_shares(sc.changes[arg].at_hours)
        if t >= next_sample:
            sample_until(t)
        # ask the pacer
        floor = Floor(
            clock0 + t,
            len(ready),
            tuple([t - s for s in wrapping.values()]),
            tuple([t - s for s in talking.values()]),
            tuple([t - s for s in dialing.values()]),
            len(waiting),
            answered,
            abandoned,
        )
        if time_decide:
            t0 = perf()
            n = decide(floor)
            decide_times.append(perf() - t0)
        else:
            n = decide(floor)
        decides += 1
        last_decide = t
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            if len(violations) < 20:
                violations.append(f"pacer returned {n!r} at {t:.1f} s (expected an integer >= 0)")
            continue
        live_c, mach_c, busy_c, fail_c, cong_c = shares
        for _ in range(n):
            cid = next_call
            next_call += 1
            u = rand()
            if u < live_c:
                ck, dt = _LIVE, min(live_s(), latest_answer) + sc.amd_live_delay
            elif u < mach_c:
                ck, dt = _MACHINE, min(mach_s(), latest_answer) + sc.amd_machine_delay
            elif u < busy_c:
                ck, dt = _BUSY, min(busy_s(), ring_timeout)
            elif u < fail_c:
                ck, dt = _FAILED, min(fail_s(), ring_timeout)
            elif u < cong_c:
                ck, dt = _CONGESTION, min(cong_s(), ring_timeout)
            else:
                ck, dt = _NOANSWER, ring_timeout
            dialing[cid] = t
            call_kind[cid] = ck
            schedule(t + dt, _OUTCOME, cid)
        dials += n

    # close the books at the end of the day
    sample_until(day_end)
    for a in range(n_agents):
        close_state(a, day_end)
    busy_time = talk_total + wrap_total
    logged = busy_time + idle_total
    occupancy = busy_time / logged if logged else 0.0
    rate = abandoned / answered if answered else 0.0
    if rate > cap + 1e-12:
        violations.append(
            f"abandonment {rate:.2%} over the day exceeds the cap {cap:.2%} "
            f"({abandoned} of {answered} live answers)"
        )
    idle_sorted = sorted(idle_per_connect)
    p95 = (
        idle_sorted[min(len(idle_sorted) - 1, int(0.95 * len(idle_sorted)))] if idle_sorted else 0.0
    )
    return DayResult(
        seed=seed,
        occupancy=occupancy,
        abandon_rate=rate,
        talk_min_per_agent_hour=(talk_total / 60.0) / (logged / 3600.0) if logged else 0.0,
        dials_per_connect=dials / connects if connects else math.inf,
        p95_idle_per_connect=p95,
        dials=dials,
        connects=connects,
        answered=answered,
        abandoned=abandoned,
        violations=violations,
        series=series,
        decide_seconds=decide_times,
        decides=decides,
        wall_seconds=time.perf_counter() - wall0,
    )


# ---- several seeds ------------------------------------------------------------------------

_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean and 95 % confidence half-width (Student t) of one figure over the seeds."""

    mean: float
    ci: float
    worst: float


def _summary(values: Sequence[float], worst_is_max: bool = True) -> Summary:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return Summary(math.nan, math.nan, math.nan)
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return Summary(m, 0.0, vals[0])
    sd = statistics.stdev(vals)
    t = _T975[len(vals) - 2] if len(vals) - 2 < len(_T975) else 1.96
    return Summary(m, t * sd / math.sqrt(len(vals)), max(vals) if worst_is_max else min(vals))


def summarize(results: Sequence[DayResult]) -> dict[str, Summary]:
    return {
        "occupancy": _summary([r.occupancy for r in results], worst_is_max=False),
        "abandon_rate": _summary([r.abandon_rate for r in results]),
        "talk_min_per_agent_hour": _summary(
            [r.talk_min_per_agent_hour for r in results], worst_is_max=False
        ),
        "dials_per_connect": _summary([r.dials_per_connect for r in results]),
        "p95_idle_per_connect": _summary([r.p95_idle_per_connect for r in results]),
    }


PacerFactory = Callable[[Scenario], Pacer]


def pacer_factory(mode: str) -> PacerFactory:
    """A factory of fresh pacers of ``mode`` with the scenario's compliance settings."""
    make_pacer(mode)  # unknown modes fail here, before any simulation

    def build(sc: Scenario) -> Pacer:
        return make_pacer(mode, sc.abandon_cap, sc.connect_deadline, sc.ring_timeout)

    return build


def run_seeds(
    sc: Scenario,
    factory: PacerFactory,
    seeds: int | Sequence[int] = 10,
    *,
    time_decide: bool = False,
) -> list[DayResult]:
    seq = range(1, seeds + 1) if isinstance(seeds, int) else seeds
    return [simulate_day(sc, factory(sc), s, time_decide=time_decide) for s in seq]


# ---- command line -------------------------------------------------------------------------


def _fmt_row(r: DayResult) -> str:
    flag = "  VIOLATION" if r.violations else ""
    return (
        f"{r.seed:>5}  {r.occupancy * 100:8.2f}  {r.abandon_rate * 100:8.2f}  "
        f"{r.talk_min_per_agent_hour:10.1f}  {r.dials_per_connect:10.2f}  "
        f"{r.p95_idle_per_connect:10.1f}  {r.connects:8d}  {r.abandoned:6d}{flag}"
    )


def report(sc: Scenario, mode: str, results: Sequence[DayResult], out: TextIO) -> None:
    print(
        f"scenario {sc.name}: {sc.agents} agents, {sc.day_hours:g} h, pacer {mode}, "
        f"cap {sc.abandon_cap:.1%}, connect deadline {sc.connect_deadline:g} s",
        file=out,
    )
    print(
        " seed  occup.%   aband.%  talk min/h  dials/conn  p95 idle s  connects  aband.",
        file=out,
    )
    for r in results:
        print(_fmt_row(r), file=out)
    s = summarize(results)
    print("summary (mean ± 95% CI over seeds):", file=out)
    o, ab = s["occupancy"], s["abandon_rate"]
    print(f"  occupancy            {o.mean * 100:6.2f} % ± {o.ci * 100:.2f}", file=out)
    print(
        f"  abandonment          {ab.mean * 100:6.2f} % ± {ab.ci * 100:.2f}  "
        f"(worst seed {ab.worst * 100:.2f} %)",
        file=out,
    )
    tm = s["talk_min_per_agent_hour"]
    print(f"  talk min/agent-hour  {tm.mean:6.1f}   ± {tm.ci:.1f}", file=out)
    dc = s["dials_per_connect"]
    print(f"  dials per connect    {dc.mean:6.2f}   ± {dc.ci:.2f}", file=out)
    pi = s["p95_idle_per_connect"]
    print(f"  p95 idle per connect {pi.mean:6.1f} s ± {pi.ci:.1f}", file=out)
    bad = [r for r in results if r.violations]
    if bad:
        print(f"COMPLIANCE VIOLATIONS in {len(bad)} of {len(results)} seeds:", file=out)
        for r in bad:
            for v in r.violations[:5]:
                print(f"  seed {r.seed}: {v}", file=out)
    else:
        print("compliance: no violation", file=out)


def plot_day(results: Sequence[DayResult], path: str, title: str, cap: float | None = None) -> None:
    """Occupancy and abandonment over the day, one thin line per seed and the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for r in results:
        hours = [p[0] for p in r.series]
        ax1.plot(hours, [p[1] * 100 for p in r.series], color="tab:blue", alpha=0.25, lw=0.8)
        ax2.plot(hours, [p[2] * 100 for p in r.series], color="tab:red", alpha=0.25, lw=0.8)
    n = min((len(r.series) for r in results), default=0)
    if n:
        hours = [results[0].series[i][0] for i in range(n)]
        for ax, idx, color in ((ax1, 1, "tab:blue"), (ax2, 2, "tab:red")):
            mean = [statistics.fmean(r.series[i][idx] for r in results) * 100 for i in range(n)]
            ax.plot(hours, mean, color=color, lw=2.0)
    if cap is not None:
        ax2.axhline(cap * 100, color="black", ls="--", lw=1.0, label="cap")
        ax2.legend(loc="upper left")
    ax1.set_ylabel("occupancy % (15 min)")
    ax2.set_ylabel("abandonment % (since start)")
    ax2.set_xlabel("hours into the day")
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(
    scenario: str,
    pacer: str = "predictive",
    seeds: int = 10,
    plot: str | None = None,
    out: TextIO | None = None,
    *,
    agents: int | None = None,
) -> int:
    """Simulate ``seeds`` days; 0 when compliant, 1 on a compliance violation, 2 on bad input.
    `out` defaults to the sys.stdout of the call (not of the import: a test may swap it)."""
    out = sys.stdout if out is None else out
    try:
        sc = load_scenario(scenario, agents=agents)
    except ScenarioError as e:
        print(f"error: {e}", file=out)
        return 2
    try:
        factory = pacer_factory(pacer)
    except ValueError as e:
        print(f"error: {e}", file=out)
        return 2
    if seeds < 1:
        print("error: --seeds must be at least 1", file=out)
        return 2
    results = run_seeds(sc, factory, seeds)
    report(sc, pacer, results, out)
    if plot:
        try:
            plot_day(results, plot, f"{sc.name}: {sc.agents} agents, {pacer}", sc.abandon_cap)
            print(f"plot written to {plot}", file=out)
        except ImportError:
            print("plot skipped: matplotlib is not installed (pip install .[plot])", file=out)
    return 1 if any(r.violations for r in results) else 0
