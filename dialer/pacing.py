"""Call pacing: how many calls to launch now, under a hard abandonment cap.

Pure and deterministic (no clock reads, no randomness, no I/O) so that the live dialer and the
simulator drive the very same object, and so that any pacing can be evaluated offline.

The predictive pacer fixes the classic "dial level" failure (a single ratio adjusted from
day-to-date totals, which jumps to its maximum at shift start, spends the day's drop budget in
minutes and then sits at 1:1): it forecasts, for the next ring timeout, when agents will free up
and when calls in flight will turn into live answers, and launches the largest number of calls
whose expected abandonments stay under a rate that depends on the budget left in the legal
window (``Floor.answered`` / ``Floor.abandoned``, read from the database so that it survives
restarts). With no budget left it behaves exactly like progressive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

OutcomeKind = Literal["answered", "busy", "no-answer", "congestion", "failed", "machine", "handled"]
_KINDS = frozenset(get_args(OutcomeKind))


@dataclass(frozen=True, slots=True)
class Floor:
    """A snapshot of the campaign floor, as the pacer sees it.

    Tuples hold, per busy agent or in-flight call, the seconds spent in that state so far: the
    pacer needs the elapsed time because the remaining time of a call depends on it.
    """

    now: float
    ready: int
    wrapping: tuple[float, ...] = ()
    talking: tuple[float, ...] = ()
    dialing: tuple[float, ...] = ()
    waiting: int = 0
    answered: int = 0
    abandoned: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a launched call (or, for ``handled``, of an agent's conversation)."""

    kind: OutcomeKind
    at: float
    ring_seconds: float | None = None
    talk_seconds: float | None = None
    wrap_seconds: float | None = None
    abandoned: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(
                f"unknown outcome kind {self.kind!r}; expected one of {sorted(_KINDS)}"
            )


class Pacer(Protocol):
    mode: str

    def decide(self, floor: Floor) -> int: ...

    def observe(self, outcome: Outcome) -> None: ...


def _progressive(floor: Floor) -> int:
    n = floor.ready - len(floor.dialing) - floor.waiting
    return n if n > 0 else 0


class PreviewPacer:
    """The agent dials by hand from the preview pop: the pacer never launches anything."""

    mode = "preview"

    def decide(self, floor: Floor) -> int:
        return 0

    def observe(self, outcome: Outcome) -> None:
        return None


class ProgressivePacer:
    """One call per ready agent not already covered by a call in flight: never abandons."""

    mode = "progressive"

    def decide(self, floor: Floor) -> int:
        return _progressive(floor)

    def observe(self, outcome: Outcome) -> None:
        return None


_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _lognormal_cdf(x: float, mu: float, sigma: float) -> float:
    if x <= 0.0:
        return 0.0
    return 0.5 * math.erfc(-(math.log(x) - mu) / (sigma * _SQRT2))


def _expected_excess(mean: float, var: float) -> float:
    """E[max(Z, 0)] for Z ~ Normal(mean, var): expected calls finding no agent."""
    if var <= 1e-12:
        return mean if mean > 0.0 else 0.0
    sd = math.sqrt(var)
    a = mean / sd
    return mean * 0.5 * math.erfc(-a / _SQRT2) + sd * _INV_SQRT_2PI * math.exp(-0.5 * a * a)


def _expected_sup_excess(mu: list[float], var: list[float]) -> float:
    """E[max(0, Z_0, ..., Z_k)] for a Gaussian path with roughly independent increments.

    Calls that find no agent are lost, so the abandonments by t are the running maximum of
    (live answers - free agents), not its value at any one time (Skorokhod reflection). The
    running maximum is folded in with Clark's moment matching of the max of two Gaussians.
    """
    m, v = mu[0], var[0]
    c = v  # Cov(running max, next Z): independent increments
    erfc, exp, sqrt = math.erfc, math.exp, math.sqrt
    for i in range(1, len(mu)):
        mk, vk = mu[i], var[i]
        th2 = v + vk - 2.0 * c
        if th2 <= 1e-12:
            if mk > m:
                m, v = mk, vk
            c = vk
            continue
        th = sqrt(th2)
        a = (m - mk) / th
        pa = 0.5 * erfc(-a / _SQRT2)
        da = _INV_SQRT_2PI * exp(-0.5 * a * a)
        qa = 1.0 - pa
        m2 = m * pa + mk * qa + th * da
        e2 = (m * m + v) * pa + (mk * mk + vk) * qa + (m + mk) * th * da
        v = e2 - m2 * m2
        if v < 0.0:
            v = 0.0
        m = m2
        c = c * pa + vk * qa
    return _expected_excess(m, v)


class _LogNormalFit:
    """Exponentially forgetting lognormal fit, starting from a prior worth a few observations.

    Weights grow geometrically instead of decaying old sums, so an observation costs O(1).
    """

    __slots__ = ("growth", "s0", "s1", "s2", "w")

    def __init__(self, median: float, sigma: float, prior_weight: float, half_life: float) -> None:
        mu = math.log(median)
        self.s0 = prior_weight
        self.s1 = prior_weight * mu
        self.s2 = prior_weight * (sigma * sigma + mu * mu)
        self.w = 1.0
        self.growth = 2.0 ** (1.0 / half_life)

    def add(self, x: float) -> None:
        lx = math.log(x)
        w = self.w
        self.s0 += w
        self.s1 += w * lx
        self.s2 += w * lx * lx
        self.w = w * self.growth
        if self.w > 1e100:
            k = 1.0 / self.w
            self.s0 *= k
            self.s1 *= k
            self.s2 *= k
            self.w = 1.0

    def params(self) -> tuple[float, float]:
        mu = self.s1 / self.s0
        var = self.s2 / self.s0 - mu * mu
        return mu, math.sqrt(max(var, 0.0025))


@dataclass(frozen=True, slots=True)
class PredictiveTuning:
    """Knobs of the predictive pacer; defaults are those the simulator targets were met with."""

    #: realized abandonment rate aimed at, as a fraction of the cap (the rest is the margin)
    target_factor: float = 0.9
    #: step of the calibration loop per live answer (log of the forecast threshold)
    eta: float = 0.3
    #: starting forecast threshold, and its bounds, as fractions of the cap
    threshold_init: float = 0.1
    threshold_min: float = 0.002
    threshold_max: float = 1.0
    #: budget (in abandoned calls) kept in reserve: below it the pacer only takes near-zero risk
    reserve: float = 1.0
    #: budget above the reserve over which the threshold opens from nothing to full
    ramp: float = 2.0
    #: forecast threshold while the budget is thin but not spent (e.g. at shift start)
    floor_rate: float = 0.0002
    #: forgetting of the dial outcome statistics (dials) and of talk/wrap times (conversations)
    dial_half_life: float = 400.0
    handled_half_life: float = 300.0
    #: forecast the running maximum of the shortfall (True) or its worst single checkpoint
    sup: bool = True
    #: weight of the agents' own uncertainty in the forecast variance
    agent_variance: float = 1.0


class PredictivePacer:
    """Launch the most calls whose forecast abandonments stay within the budget.

    For checkpoints ``t`` over the next ring timeout it forecasts two counting processes with
    their variances: live answers by ``t`` (calls waiting, in-flight calls conditioned on how
    long they have rung, and ``n`` new calls; from learned hit rate and ring-time histogram) and
    agents free by ``t + connect_deadline`` (ready agents; wrapping and talking agents from
    lognormal talk/wrap fits, conditioned on the time already spent). The expected running
    maximum of the first minus the second (normal approximation) is the forecast of abandoned
    calls; ``n`` is the largest keeping it under ``threshold * expected lives``.

    The threshold is calibrated in closed loop from the abandoned flag of answered outcomes
    (see ``_calibrate``) so that the realized rate settles at ``target_factor`` of the cap,
    and it is scaled down to nothing as the budget left in the window shrinks to the reserve;
    with the budget spent the pacer is exactly progressive. At shift start (nothing answered
    yet) only near-zero-risk over-dialing is allowed until the budget has been earned.
    """

    mode = "predictive"

    _DIAL_BIN = 0.5
    _TALK_STEP = 2.0
    _TALK_ROWS = 600  # up to 20 min of talk; longer calls use the last row
    _WRAP_STEP = 0.5
    _WRAP_ROWS = 600  # up to 5 min of wrap-up

    def __init__(
        self,
        abandon_cap: float = 0.03,
        connect_deadline: float = 2.0,
        ring_timeout: float = 25.0,
        tuning: PredictiveTuning | None = None,
    ) -> None:
        if not 0.0 < abandon_cap < 1.0:
            raise ValueError("abandon_cap must be between 0 and 1")
        if connect_deadline < 0.0 or ring_timeout <= 0.0:
            raise ValueError("connect_deadline must be >= 0 and ring_timeout > 0")
        self.abandon_cap = abandon_cap
        self.connect_deadline = connect_deadline
        self.ring_timeout = ring_timeout
        self.tuning = tuning or PredictiveTuning()
        horizon = ring_timeout + 2.0
        self._checkpoints: tuple[float, ...] = (
            *(c for c in (0.0, 2.0, 4.0, 6.0, 9.0, 12.0, 16.0, 20.0) if c < horizon),
            horizon,
        )
        self._k = len(self._checkpoints)
        # ring time histograms (all outcomes / live answers), forgetting by dial count
        self._nbins = int((ring_timeout + 20.0) / self._DIAL_BIN) + 1
        self._all = [0.0] * self._nbins
        self._live = [0.0] * self._nbins
        self._dial_w = 1.0
        self._dial_growth = 2.0 ** (1.0 / self.tuning.dial_half_life)
        self._seed_dial_prior()
        self._dial_dirty = 0
        self._dial_rows: list[tuple[float, ...]] = []
        self._rebuild_dial_table()
        # conservative priors: long talks, short rings, high hit rate (all mean fewer calls)
        hl = self.tuning.handled_half_life
        self._talk = _LogNormalFit(180.0, 0.8, 5.0, hl)
        self._wrap = _LogNormalFit(30.0, 0.5, 5.0, hl)
        self._handled_since_fit = 0
        self._table_params = (0.0, 0.0, 0.0, 0.0)
        self._talk_rows: list[tuple[float, ...]] = []
        self._wrap_rows: list[tuple[float, ...]] = []
        self._rebuild_agent_tables()
        # calibration of the forecast threshold, and how far the budget lets it open
        cap = abandon_cap
        self._log_min = math.log(cap * self.tuning.threshold_min)
        self._log_max = math.log(cap * self.tuning.threshold_max)
        self._log_threshold = math.log(cap * self.tuning.threshold_init)
        self._threshold = math.exp(self._log_threshold)
        self._opened = 0.0

    # ---- learning -------------------------------------------------------------------------

    def _seed_dial_prior(self) -> None:
        """Twenty pseudo-dials: 40 % live answers after 4-12 s, the rest spread to the timeout."""
        for i in range(8):
            t = 4.0 + i
            self._add_dial(t, live=True, weight=1.0)
        for i in range(6):
            self._add_dial(1.0 + i * 2.0, live=False, weight=1.0)
        self._add_dial(self.ring_timeout, live=False, weight=6.0)

    def _add_dial(self, seconds: float, live: bool, weight: float) -> None:
        i = int(seconds / self._DIAL_BIN)
        if i < 0:
            i = 0
        elif i >= self._nbins:
            i = self._nbins - 1
        self._all[i] += weight
        if live:
            self._live[i] += weight

    def observe(self, outcome: Outcome) -> None:
        kind = outcome.kind
        if kind == "handled":
            talk, wrap = outcome.talk_seconds, outcome.wrap_seconds
            if talk is not None and talk > 0.0:
                self._talk.add(talk)
            if wrap is not None and wrap > 0.0:
                self._wrap.add(wrap)
            self._handled_since_fit += 1
            if self._handled_since_fit >= 50:
                self._handled_since_fit = 0
                self._maybe_rebuild_agent_tables()
            return
        if kind == "answered" and self._opened >= 0.5:
            self._calibrate(outcome.abandoned)
        ring = outcome.ring_seconds
        if ring is None:
            ring = self.ring_timeout if kind == "no-answer" else 0.0
        self._add_dial(ring, live=kind == "answered", weight=self._dial_w)
        self._dial_w *= self._dial_growth
        if self._dial_w > 1e100:
            k = 1.0 / self._dial_w
            self._all = [x * k for x in self._all]
            self._live = [x * k for x in self._live]
            self._dial_w = 1.0
        self._dial_dirty += 1
        if self._dial_dirty >= 25:
            self._rebuild_dial_table()

    def _calibrate(self, abandoned: bool) -> None:
        """Stochastic approximation of the forecast threshold giving the target realized rate.

        The one-window forecast is optimistic in closed loop (later launches compete for the
        same agents), by a factor that depends on the floor; rather than model it, the log of
        the threshold moves down on every abandoned live answer and up a little on every
        connected one, settling where the realized rate equals the target.
        """
        t = self.tuning
        target = t.target_factor * self.abandon_cap
        step = t.eta * ((1.0 - target) if abandoned else -target)
        lam = self._log_threshold - step
        self._log_threshold = min(max(lam, self._log_min), self._log_max)
        self._threshold = math.exp(self._log_threshold)

    @property
    def threshold(self) -> float:
        """The calibrated forecast threshold (expected abandonments per expected live answer)."""
        return self._threshold

    @property
    def hit_rate(self) -> float:
        """Learned share of dials that end in a live answer (recent dials weigh most)."""
        return sum(self._live) / sum(self._all)

    @property
    def talk_wrap_params(self) -> tuple[float, float, float, float]:
        """Learned (mu, sigma) of log talk seconds and of log wrap seconds."""
        return (*self._talk.params(), *self._wrap.params())

    # ---- forecast tables ------------------------------------------------------------------

    def _rebuild_dial_table(self) -> None:
        """Per elapsed ring time: P(live answer by +t) and its variance, for each checkpoint."""
        self._dial_dirty = 0
        nb = self._nbins
        cum_live = [0.0] * (nb + 1)
        for i, x in enumerate(self._live):
            cum_live[i + 1] = cum_live[i] + x
        tail = [0.0] * (nb + 1)
        for i in range(nb - 1, -1, -1):
            tail[i] = tail[i + 1] + self._all[i]
        steps = [round(t / self._DIAL_BIN) for t in self._checkpoints]
        last = cum_live[nb]
        shifted = [cum_live[s:] + [last] * s for s in steps]
        zeros = (0.0,) * (2 * self._k)
        rows: list[tuple[float, ...]] = []
        for i in range(nb):
            denom = tail[i]
            if denom <= 0.0:
                rows.append(zeros)
                continue
            base = cum_live[i]
            inv = 1.0 / denom
            qs = [(sh[i] - base) * inv for sh in shifted]
            rows.append((*qs, *[q * (1.0 - q) for q in qs]))
        self._dial_rows = rows

    def _maybe_rebuild_agent_tables(self) -> None:
        p = self.talk_wrap_params
        old = self._table_params
        if max(abs(a - b) for a, b in zip(p, old, strict=True)) > 0.04:
            self._rebuild_agent_tables()

    def _rebuild_agent_tables(self) -> None:
        """Per elapsed talk/wrap time: P(agent free by +t+deadline), mean and variance."""
        tmu, tsig, wmu, wsig = self.talk_wrap_params
        self._table_params = (tmu, tsig, wmu, wsig)
        offsets = [t + self.connect_deadline for t in self._checkpoints]
        # wrap-up quantiles for the talk+wrap convolution (3-point equal-weight quadrature)
        zs = (-0.9674, 0.0, 0.9674)
        wq = [math.exp(wmu + wsig * z) for z in zs]
        cdf = _lognormal_cdf
        talk_rows: list[tuple[float, ...]] = []
        for r in range(self._TALK_ROWS):
            e = r * self._TALK_STEP + 0.5 * self._TALK_STEP
            fe = cdf(e, tmu, tsig)
            surv = max(1.0 - fe, 1e-12)
            ps = []
            for off in offsets:
                acc = 0.0
                for w in wq:
                    x = e + off - w
                    if x > e:
                        acc += cdf(x, tmu, tsig) - fe
                p = min(max(acc / (3.0 * surv), 0.0), 1.0)
                ps.append(p)
            talk_rows.append(tuple(ps) + tuple(p * (1.0 - p) for p in ps))
        wrap_rows: list[tuple[float, ...]] = []
        for r in range(self._WRAP_ROWS):
            e = r * self._WRAP_STEP + 0.5 * self._WRAP_STEP
            fe = cdf(e, wmu, wsig)
            surv = max(1.0 - fe, 1e-12)
            ps = [min(max((cdf(e + off, wmu, wsig) - fe) / surv, 0.0), 1.0) for off in offsets]
            wrap_rows.append(tuple(ps) + tuple(p * (1.0 - p) for p in ps))
        self._talk_rows = talk_rows
        self._wrap_rows = wrap_rows

    @staticmethod
    def _sum_rows(
        table: list[tuple[float, ...]], elapsed: tuple[float, ...], scale: float, width: int
    ) -> list[float]:
        if not elapsed:
            return [0.0] * width
        last = len(table) - 1
        try:
            if min(elapsed) < 0.0:
                raise IndexError
            rows = [table[int(e * scale)] for e in elapsed]
        except IndexError:
            rows = [table[min(max(int(e * scale), 0), last)] for e in elapsed]
        return [sum(col) for col in zip(*rows, strict=True)]

    # ---- decision -------------------------------------------------------------------------

    def allowed_rate(self, floor: Floor) -> float | None:
        """Forecast threshold the budget affords now; None means strictly progressive.

        The threshold is the calibrated one (see ``observe``), scaled down to nothing as the
        budget left in the legal window shrinks towards the reserve.
        """
        t = self.tuning
        budget = self.abandon_cap * floor.answered - floor.abandoned
        if budget <= 0.0 and floor.abandoned > 0:
            self._opened = 0.0
            return None
        opened = (budget - t.reserve) / t.ramp
        opened = 0.0 if opened < 0.0 else 1.0 if opened > 1.0 else opened
        self._opened = opened
        rate = self._threshold * opened
        return rate if rate > t.floor_rate else t.floor_rate

    def decide(self, floor: Floor) -> int:
        prog = _progressive(floor)
        rate = self.allowed_rate(floor)
        if rate is None:
            return prog
        k = self._k
        w2 = 2 * k
        talk = self._sum_rows(self._talk_rows, floor.talking, 1.0 / self._TALK_STEP, w2)
        wrap = self._sum_rows(self._wrap_rows, floor.wrapping, 1.0 / self._WRAP_STEP, w2)
        dial = self._sum_rows(self._dial_rows, floor.dialing, 1.0 / self._DIAL_BIN, w2)
        ready = float(floor.ready)
        waiting = float(floor.waiting)
        # excess of live answers over free agents, per checkpoint: mean and variance
        mu = [waiting + dial[i] - ready - talk[i] - wrap[i] for i in range(k)]
        av = self.tuning.agent_variance
        var = [dial[k + i] + av * (talk[k + i] + wrap[k + i]) for i in range(k)]
        q0 = self._dial_rows[0]
        qm = q0[:k]
        qv = q0[k:]
        lives0 = waiting + dial[k - 1]
        qlast = qm[k - 1]
        excess = _expected_excess
        checks = range(k)

        sup = self.tuning.sup

        def within(n: float) -> bool:
            limit = rate * (lives0 + n * qlast + 0.5)
            if sup:
                mus = [mu[i] + n * qm[i] for i in checks]
                vs = [var[i] + n * qv[i] for i in checks]
                return _expected_sup_excess(mus, vs) <= limit
            for i in checks:
                if excess(mu[i] + n * qm[i], var[i] + n * qv[i]) > limit:
                    return False
            return True

        if not within(0):
            return prog
        lo, hi = 0, 1
        while within(hi):
            lo = hi
            hi *= 2
            if hi > 4096:
                return max(prog, lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if within(mid):
                lo = mid
            else:
                hi = mid
        return lo if lo > prog else prog


def make_pacer(
    mode: str,
    abandon_cap: float = 0.03,
    connect_deadline: float = 2.0,
    ring_timeout: float = 25.0,
) -> PreviewPacer | ProgressivePacer | PredictivePacer:
    """The pacer of a campaign mode: "predictive", "progressive" or "preview"."""
    if mode == "predictive":
        return PredictivePacer(abandon_cap, connect_deadline, ring_timeout)
    if mode == "progressive":
        return ProgressivePacer()
    if mode == "preview":
        return PreviewPacer()
    raise ValueError(f"unknown pacing mode {mode!r}; expected predictive, progressive or preview")
