"""Pacing benchmark: occupancy at a never-exceeded 3 % abandonment cap (issue 5 targets).

Runs the reference scenario with 5, 10, 25, 50 and 100 agents and the noon-halving scenario
with 25 agents, predictive pacing against the progressive baseline, and times ``decide`` at
100 agents. Prints a table, then as its LAST line one JSON object with ``occupancy`` (agents
-> percent, plus "25-noon-halving"), ``max_abandon_pct`` (worst seed of all predictive runs)
and ``decide_ms_p99``.

    .venv/bin/python bench/pacing.py            # 10 seeds, 8 h days (several minutes)
    .venv/bin/python bench/pacing.py --quick    # 3 seeds, 2 h days
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dialer.pacing import Floor, Outcome, Pacer, make_pacer  # noqa: E402
from dialer.simulation import (  # noqa: E402
    load_scenario,
    pacer_factory,
    run_seeds,
    simulate_day,
    summarize,
)

SCEN = ROOT / "config" / "scenarios"
TARGETS = {"5": 75.0, "10": 82.0, "25": 88.0, "50": 92.0, "100": 94.5, "25-noon-halving": 87.0}
CASES = [
    ("5", "reference.toml", 5),
    ("10", "reference.toml", 10),
    ("25", "reference.toml", 25),
    ("50", "reference.toml", 50),
    ("100", "reference.toml", 100),
    ("25-noon-halving", "reference-noon-halving.toml", 25),
]


class _Recorder:
    """Wraps a pacer and keeps every 10th floor it is asked about, for the timing replay."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self.mode = pacer.mode
        self.floors: list[Floor] = []
        self._n = 0

    def decide(self, floor: Floor) -> int:
        self._n += 1
        if self._n % 10 == 0:
            self.floors.append(floor)
        return self.pacer.decide(floor)

    def observe(self, outcome: Outcome) -> None:
        self.pacer.observe(outcome)


def replay_decide_p99(hours: float) -> tuple[float, int]:
    """p99 of decide() over real 100-agent floors, each timed 5 times keeping the best.

    Timing inside the simulation loop on a shared machine measures the neighbours as much
    as the pacer (one preemption is several ms); the best of a few runs of the same floor
    is the pacer's own cost, and the p99 over floors keeps the expensive floors in view.
    """
    sc = replace(load_scenario(SCEN / "reference.toml", agents=100), day_hours=hours)
    rec = _Recorder(make_pacer("predictive", sc.abandon_cap, sc.connect_deadline, sc.ring_timeout))
    simulate_day(sc, rec, 1)
    decide = rec.pacer.decide
    perf = time.perf_counter
    best: list[float] = []
    for f in rec.floors:
        b = 1.0
        for _ in range(5):
            t0 = perf()
            decide(f)
            b = min(b, perf() - t0)
        best.append(b)
    best.sort()
    return best[min(len(best) - 1, int(0.99 * len(best)))] * 1000, len(best)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeds per case (default 10)")
    ap.add_argument("--hours", type=float, default=None, help="shorten the simulated day")
    ap.add_argument("--quick", action="store_true", help="3 seeds of 2 h days")
    ap.add_argument("--no-baseline", action="store_true", help="skip the progressive runs")
    ap.add_argument("--only", help="comma-separated case keys, e.g. 5,25")
    args = ap.parse_args(argv)
    seeds = 3 if args.quick else args.seeds
    hours = 2.0 if args.quick and args.hours is None else args.hours
    only = set(args.only.split(",")) if args.only else None

    print(f"pacing benchmark: {seeds} seeds per case" + (f", {hours:g} h days" if hours else ""))
    head = (
        f"{'case':>16}  {'target':>6}  {'occupancy % (95% CI)':>21}  {'aband. mean':>11}  "
        f"{'worst':>6}  {'dials/conn':>10}  {'p95 idle s':>10}  {'progressive':>11}  "
        f"{'cpu s/seed':>10}"
    )
    print(head)
    print("-" * len(head))
    occupancy: dict[str, float] = {}
    worst = 0.0
    violations = 0
    decide_times: list[float] = []
    for key, file, agents in CASES:
        if only and key not in only:
            continue
        sc = load_scenario(SCEN / file, agents=agents)
        if hours:
            sc = replace(sc, day_hours=hours)
        t0 = time.process_time()
        res = run_seeds(sc, pacer_factory("predictive"), seeds, time_decide=agents == 100)
        per_seed = (time.process_time() - t0) / seeds  # CPU time: the machine may be shared
        for r in res:
            decide_times.extend(r.decide_seconds)
            violations += bool(r.violations)
        s = summarize(res)
        base = ""
        if not args.no_baseline:
            prog = summarize(run_seeds(sc, pacer_factory("progressive"), seeds))
            base = f"{prog['occupancy'].mean * 100:10.2f}%"
        occ, ab = s["occupancy"], s["abandon_rate"]
        occupancy[key] = round(occ.mean * 100, 2)
        worst = max(worst, ab.worst)
        mark = "ok" if occ.mean * 100 >= TARGETS[key] and ab.worst <= sc.abandon_cap else "MISS"
        print(
            f"{key:>16}  {TARGETS[key]:5.1f}%  "
            f"{occ.mean * 100:7.2f} ± {occ.ci * 100:4.2f} {mark:>6}  "
            f"{ab.mean * 100:10.2f}%  {ab.worst * 100:5.2f}%  "
            f"{s['dials_per_connect'].mean:10.2f}  {s['p95_idle_per_connect'].mean:10.1f}  "
            f"{base:>11}  {per_seed:10.1f}",
            flush=True,
        )
    p99 = 0.0
    if decide_times:
        decide_times.sort()
        raw = decide_times[min(len(decide_times) - 1, int(0.99 * len(decide_times)))] * 1000
        print(
            f"decide() at 100 agents, in the loop: p99 {raw:.3f} ms over {len(decide_times)} calls"
        )
    if only is None or "100" in only:
        p99, n = replay_decide_p99(hours or 1.0)
        print(f"decide() at 100 agents, replayed floors (best of 5 each): p99 {p99:.3f} ms, n={n}")
    print(f"compliance violations: {violations} seed(s)")
    print(
        json.dumps(
            {
                "occupancy": occupancy,
                "max_abandon_pct": round(worst * 100, 3),
                "decide_ms_p99": round(p99, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
