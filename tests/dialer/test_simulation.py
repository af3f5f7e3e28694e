"""The campaign-floor simulator on the small scenario, and scenario files."""

from __future__ import annotations

import io
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from dialer.pacing import Floor, Outcome, make_pacer
from dialer.sim_scenario import Change
from dialer.simulation import (
    ScenarioError,
    load_scenario,
    main,
    pacer_factory,
    run_seeds,
    simulate_day,
)

SCEN = Path(__file__).resolve().parents[2] / "config" / "scenarios"
SMALL = SCEN / "small.toml"


@pytest.fixture
def tiny(tmp_path) -> Path:
    """The small scenario cut to 20 minutes, for the command-line tests."""
    path = tmp_path / "tiny.toml"
    path.write_text(SMALL.read_text().replace("day_hours = 1.0", "day_hours = 0.33"))
    return path


@pytest.fixture(scope="module")
def small():
    return load_scenario(SMALL)


@pytest.fixture(scope="module")
def predictive_days(small):
    return run_seeds(small, pacer_factory("predictive"), 2)


@pytest.fixture(scope="module")
def progressive_days(small):
    return run_seeds(small, pacer_factory("progressive"), 3)


class Reckless:
    """A pacer that dials five lines per agent, whatever the floor: it must be caught."""

    mode = "reckless"

    def decide(self, floor: Floor) -> int:
        agents = floor.ready + len(floor.talking) + len(floor.wrapping)
        return max(0, 5 * agents - len(floor.dialing))

    def observe(self, outcome: Outcome) -> None:
        pass


def test_same_seed_same_day_other_seed_other_day(small) -> None:
    short = replace(small, day_hours=0.4)
    a = simulate_day(short, make_pacer("predictive"), 7)
    b = simulate_day(short, make_pacer("predictive"), 7)
    c = simulate_day(short, make_pacer("predictive"), 8)
    key = lambda r: (r.occupancy, r.abandoned, r.dials, r.connects, r.series)  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_progressive_never_abandons_and_is_the_baseline(progressive_days) -> None:
    for r in progressive_days:
        assert r.abandoned == 0 and not r.violations
        assert 0.45 < r.occupancy < 0.80
        assert 3.0 < r.dials_per_connect < 5.5  # about 1 / 25 % live


def test_predictive_beats_progressive_within_the_cap(predictive_days, progressive_days) -> None:
    for r in predictive_days:
        assert r.abandon_rate <= 0.03 and not r.violations
        assert r.connects > 50
    mean = lambda rs: sum(r.occupancy for r in rs) / len(rs)  # noqa: E731
    assert mean(predictive_days) > mean(progressive_days) + 0.03


def test_figures_are_consistent(predictive_days) -> None:
    for r in predictive_days:
        assert 0.0 < r.occupancy < 1.0
        assert r.answered >= r.connects >= 1
        assert r.answered == r.connects + r.abandoned or r.answered <= r.connects + r.abandoned
        # talk minutes per logged-in hour cannot exceed occupancy * 60
        assert 0.0 < r.talk_min_per_agent_hour < r.occupancy * 60.0
        assert r.p95_idle_per_connect >= 0.0
        hours = [p[0] for p in r.series]
        assert hours == sorted(hours) and len(hours) == 4  # 15-minute points over 1 h


def test_preview_places_no_call(small) -> None:
    r = simulate_day(small, make_pacer("preview"), 1)
    assert r.dials == 0 and r.connects == 0 and r.occupancy == 0.0 and not r.violations


def test_reckless_pacer_is_reported(small) -> None:
    r = simulate_day(small, Reckless(), 1)
    assert r.abandon_rate > 0.03
    assert any("exceeds the cap" in v for v in r.violations)


def test_pacer_answering_nonsense_is_reported(small) -> None:
    class Negative(Reckless):
        def decide(self, floor: Floor) -> int:
            return -1

    r = simulate_day(replace(small, day_hours=0.05), Negative(), 1)
    assert r.violations and "pacer returned -1" in r.violations[0]


def test_breaks_and_staggered_logins_reduce_logged_in_time(small) -> None:
    no_breaks = replace(small, breaks=(), login_spread_minutes=0.0)
    with_breaks = simulate_day(small, make_pacer("progressive"), 3)
    plain = simulate_day(no_breaks, make_pacer("progressive"), 3)
    # fewer agent-hours logged in: fewer connects for the same pacing
    assert with_breaks.connects < plain.connects


def test_changes_over_the_day(small) -> None:
    halved = replace(small, changes=(Change(at_hours=0.0, live_factor=0.5),))
    r = simulate_day(replace(halved, day_hours=0.5), make_pacer("progressive"), 2)
    base = simulate_day(replace(small, day_hours=0.5), make_pacer("progressive"), 2)
    assert r.dials_per_connect > base.dials_per_connect * 1.5


# ---- main() ---------------------------------------------------------------------------------


def test_main_prints_seeds_and_summary(tiny) -> None:
    out = io.StringIO()
    assert main(str(tiny), "predictive", seeds=2, out=out) == 0
    text = out.getvalue()
    assert "occupancy" in text and "95% CI" in text and "no violation" in text
    assert len([ln for ln in text.splitlines() if ln.strip().startswith(("1 ", "2 "))]) == 2


def test_main_reports_violation_with_exit_1(tiny) -> None:
    # everyone goes on a break at the same moment, with a cap so low that the few calls
    # stranded in flight are over it: the run must say so and exit 1
    tiny.write_text(
        tiny.read_text()
        .replace("at_hours = 0.5", "at_hours = 0.1")
        .replace("spread_minutes = 10", "spread_minutes = 0")
        .replace("abandon_cap = 0.03", "abandon_cap = 0.001")
    )
    out = io.StringIO()
    rc = main(str(tiny), "predictive", seeds=2, out=out)
    assert rc == 1
    assert "COMPLIANCE VIOLATIONS" in out.getvalue() and "exceeds the cap" in out.getvalue()


@pytest.mark.slow
def test_main_agents_override_and_plot(tmp_path, tiny) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "day.png"
    out = io.StringIO()
    assert main(str(tiny), "progressive", seeds=2, plot=str(png), out=out, agents=3) == 0
    assert "3 agents" in out.getvalue()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("[agents]\nlogin_spread_minutes = 1\n", "agents.count"),
        ("[agents]\ncount = 0\n", "agents.count"),
        ("[agents]\ncount = 5\nbogus = 1\n", "agents.bogus"),
        ("colour = 'red'\n[agents]\ncount = 5\n", "colour"),
        ("[agents]\ncount = 5\n[outcomes]\nlive = 0.7\nmachine = 0.5\n", "outcomes"),
        ("[agents]\ncount = 5\n[talk]\nmean = -3\n", "talk.mean"),
        ("[agents]\ncount = 5\n[wrap]\nmean = 'long'\n", "wrap.mean"),
        ("[agents]\ncount = 5\n[answer_delay]\nlive = 4\n", "answer_delay.live"),
        ("ring_timeout = 0\n[agents]\ncount = 5\n", "ring_timeout"),
        ("[agents]\ncount = 5\n[[changes]]\nlive_factor = 0.5\n", "changes[0].at_hours"),
        ("[agents]\ncount = 5\n[[agents.breaks]]\nat_hours = 1\n", "agents.breaks[0].minutes"),
        ("[agents\ncount = 5\n", "not valid TOML"),
    ],
)
def test_bad_scenario_files_name_the_key(tmp_path, body, needle) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(body))
    with pytest.raises(ScenarioError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_scenario(path)
    out = io.StringIO()
    assert main(str(path), out=out) == 2
    assert needle in out.getvalue()


def test_missing_file_and_unknown_pacer_exit_2(tmp_path) -> None:
    out = io.StringIO()
    assert main(str(tmp_path / "nope.toml"), out=out) == 2
    assert "not found" in out.getvalue()
    out = io.StringIO()
    assert main(str(SMALL), pacer="turbo", out=out) == 2
    assert "unknown pacing mode" in out.getvalue()


def test_shipped_scenarios_load() -> None:
    ref = load_scenario(SCEN / "reference.toml")
    assert (ref.mix.live, ref.mix.machine, ref.mix.busy, ref.mix.failed) == (0.25, 0.2, 0.1, 0.05)
    assert ref.mix.no_answer == pytest.approx(0.40)
    assert (ref.talk.mean, ref.talk.sd, ref.wrap.mean, ref.wrap.sd) == (120, 120, 20, 10)
    assert ref.day_hours == 8 and ref.login_spread_minutes == 0
    noon = load_scenario(SCEN / "reference-noon-halving.toml", agents=25)
    assert noon.agents == 25
    assert noon.mix_at(3.9).live == pytest.approx(0.25)
    assert noon.mix_at(4.0).live == pytest.approx(0.125)
