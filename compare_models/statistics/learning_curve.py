"""A learning curve: test accuracy (or one class's recall) against the number of training
images, fitted to a track's runs on data that grows, and the prediction intervals around it.

Test accuracy against training-set size follows a saturating power law closely (Hestness et
al. 2017, "Deep Learning Scaling is Predictable, Empirically"; Rosenfeld et al. 2020), so the
curve fitted to a track's history predicts tonight's accuracy, and the scatter of the runs
around it is the recipe's run-to-run noise, without the rise that growth brings.

Two forms, both fitted by least squares with `scipy.optimize.curve_fit` and both monotone
(never falling as the data grows):

* `power-law`: y = a - b * n^(-c) with b >= 0, c > 0, a <= 1 (n in thousands of images): it
  saturates. Three parameters, used from `POWER_LAW_MIN_RUNS` runs on at least three sizes:
  with fewer, the exponent is barely determined and the fit leaves one or two degrees of
  freedom, where Student's t quantile (12.7 for one at 95%, 4.3 for two) makes any band
  useless;
* `log-linear`: y = a + b * ln(n) with b >= 0. Two parameters: on a short stretch of the
  curve a power law is close to a straight line in ln(n), and the fit leaves one more degree
  of freedom.

Each run's accuracy is measured on its own version's test set, so its scatter around the curve
has two parts: the recipe's own run-to-run noise (the seed, the hardware), and the test set's
binomial sampling, p(1 - p) / m for m test images, which is known. A comparison with the
champion on tonight's test images carries only the first. When every run's test count is known,
the two are separated as in a random-effects meta-regression with known within-study variances:
with tau^2 the run-to-run variance, the curve is fitted by weighted least squares with weights
1 / (tau^2 + v_i), and tau^2 is the Paule-Mandel estimate, where the weighted residual sum
Q(tau^2) = sum r_i^2 / (tau^2 + v_i) equals the degrees of freedom k - p (zero when Q(0) is
smaller). The intervals account for the estimate's own uncertainty, which is large with a
few runs: Q(tau^2) ~ chi2(k - p) (the Q-profile, Viechtbauer 2007), so each quantile W of
chi2(k - p) gives the tau^2 solving Q(tau^2) = W, a generalized pivot (Weerahandi 1993), and
an interval's half-width h is where the normal's coverage, averaged over those draws, is
`coverage`. With no sampling part (v_i = 0) this is exactly Student's t interval. When the
scatter is smaller than the sampling alone would make it (Q(0) below chi2's 1 - coverage
quantile: the runs' test sets are not independent draws, or their counts are wrong), or a
run's test count is unknown (records written before counts were kept), nothing is separated and
tau is the residuals' standard deviation sqrt(RSS / (k - p)), as if all were run-to-run noise.

The two intervals, at `coverage`, each with its own variance:

* **tonight's residual from the curve**: a new run at n images, scored on m test images, falls
  within f(n) ± h for the variance tau^2 + f(n)(1 - f(n)) / m + Var f(n), where
  Var f(n) = g' C g is the fitted curve's own uncertainty at n (g the gradient of f in the
  parameters, C their covariance, which follows each draw of tau^2 through the weights);
* **tonight's difference from another run at the same size, on the same test images** (the
  champion re-scored on tonight's images): within ± h for the variance 2 tau^2, two runs' own
  noise; the test images they share are the paired test's business, not the band's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import cached_property
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import OptimizeWarning, brentq, curve_fit
from scipy.stats import chi2, norm
from scipy.stats import t as student_t

CurveForm = Literal["power-law", "log-linear"]

#: Runs (on at least three sizes) from which the three-parameter power law is fitted.
POWER_LAW_MIN_RUNS = 6

#: Images per unit of n in the fit: thousands keep the parameters of order one.
SCALE = 1000.0

#: Evenly spaced quantiles of chi2(dof) that stand for the run-to-run variance's uncertainty
#: (deterministic: the same history gives the same band).
PIVOT_DRAWS = 2000

#: Bisection steps: each halves the bracket, so 60 leave 1e-18 of it.
_STEPS = 60


class CurvePoint(BaseModel):
    """One run on the curve: its training images and its accuracy (or a class's recall)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    run_id: str
    train_images: int = Field(gt=0)
    value: float
    test_images: int | None = Field(
        default=None, gt=0, description="the test images behind `value` (None: unknown)"
    )

    def sampling_variance(self) -> float:
        """The binomial variance of `value` from its test images alone, p(1 - p) / m (p kept
        half an image from 0 and 1, where the variance would vanish)."""
        m = float(self.test_images or 0)
        if m <= 0:
            return 0.0
        p = min(max(self.value, 0.5 / m), 1.0 - 0.5 / m)
        return p * (1.0 - p) / m


class LearningCurve(BaseModel):
    """A fitted learning curve: enough to evaluate it and its intervals at any size, and to
    draw it (the report does, from the run's record)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    form: CurveForm
    parameters: dict[str, float] = Field(description="a, b (and c for the power law)")
    covariance: list[list[float]] = Field(description="the parameters' covariance, in order")
    dof: int = Field(ge=1, description="degrees of freedom the fit leaves: runs - parameters")
    sigma: float = Field(
        ge=0,
        description="the runs' own standard deviation around the curve, tau: beyond their test "
        "sets' sampling when `sampling`, else the residuals' sqrt(RSS / dof)",
    )
    residual_sigma: float | None = Field(
        default=None,
        ge=0,
        description="the residuals' standard deviation sqrt(RSS / dof), sampling included "
        "(None in records written before it was kept: then `sigma`)",
    )
    sampling: bool = Field(
        default=False,
        description="whether each run's test-sampling variance was separated from `sigma`",
    )
    coverage: float = Field(gt=0, lt=1)
    points: list[CurvePoint]

    def __call__(self, n: float | np.ndarray) -> np.ndarray:
        return _FORMS[self.form](np.asarray(n, dtype=np.float64) / SCALE, *self._theta())

    def _theta(self) -> np.ndarray:
        return np.asarray(list(self.parameters.values()), dtype=np.float64)

    @property
    def quantile(self) -> float:
        return float(student_t.ppf(0.5 + self.coverage / 2, df=self.dof))

    def predict(self, n: float) -> float:
        return float(self(n))

    def curve_variance(self, n: float | np.ndarray) -> np.ndarray:
        """Var f(n) = g' C g: how uncertain the fitted curve itself is at n."""
        x = np.atleast_1d(np.asarray(n, dtype=np.float64)) / SCALE
        gradient = _GRADIENTS[self.form](x, *self._theta())  # (parameters, sizes)
        cov = np.asarray(self.covariance, dtype=np.float64)
        return np.maximum(np.einsum("pi,pq,qi->i", gradient, cov, gradient), 0.0)

    def residuals(self) -> np.ndarray:
        """Each run's value minus the curve at its size."""
        values = np.asarray([p.value for p in self.points], dtype=np.float64)
        return values - self([p.train_images for p in self.points])

    @cached_property
    def _variance_draws(self) -> np.ndarray:
        """tau^2 at each of `PIVOT_DRAWS` quantiles W of chi2(dof): the root of Q(tau^2) = W,
        0 where Q(0) <= W (Q falls as tau^2 grows; bisection on all draws at once)."""
        w = chi2.ppf((np.arange(PIVOT_DRAWS) + 0.5) / PIVOT_DRAWS, self.dof)
        r2 = self.residuals() ** 2
        v = _sampling_variances(self.points)
        lo, hi = np.zeros_like(w), r2.sum() / w  # Q(hi) <= sum r^2 / hi = W
        for _ in range(_STEPS):
            mid = (lo + hi) / 2
            above = (r2 / (mid[:, None] + v)).sum(axis=1) > w
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return np.where((r2 / v).sum() > w, hi, 0.0)

    def _curve_variance_draws(self, n: float | np.ndarray) -> np.ndarray:
        """Var f(n) at each draw of tau^2, (sizes, draws): g' (J' diag(1 / (tau^2 + v)) J)^-1 g,
        J the curve's gradient at the runs' sizes, since the fit's weights follow tau^2."""
        x = np.asarray([p.train_images for p in self.points], dtype=np.float64) / SCALE
        jacobian = _GRADIENTS[self.form](x, *self._theta())  # (parameters, runs)
        v = _sampling_variances(self.points)
        weights = 1.0 / (self._variance_draws[:, None] + v)  # (draws, runs)
        information = np.einsum("pi,di,qi->dpq", jacobian, weights, jacobian)
        covariance = np.linalg.pinv(information, hermitian=True)
        at = np.atleast_1d(np.asarray(n, dtype=np.float64)) / SCALE
        gradient = _GRADIENTS[self.form](at, *self._theta())  # (parameters, sizes)
        return np.maximum(np.einsum("pi,dpq,qi->id", gradient, covariance, gradient), 0.0)

    def _half_width(self, variance: np.ndarray) -> np.ndarray:
        """Per row of `variance` (sizes, draws): the h where N(0, variance), averaged over the
        draws, lies within ± h with probability `coverage`."""
        sd = np.sqrt(variance)
        lo, hi = np.zeros(len(sd)), norm.ppf(0.5 + self.coverage / 2) * sd.max(axis=1)
        safe = np.where(sd > 0, sd, 1.0)
        for _ in range(_STEPS):
            mid = (lo + hi) / 2
            covered = np.where(sd > 0, 2 * norm.cdf(mid[:, None] / safe) - 1, 1.0).mean(axis=1)
            below = covered < self.coverage
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return hi

    def residual_half_width(
        self, n: float | np.ndarray, test_images: int | None = None
    ) -> np.ndarray:
        """Half-width of the interval for a new run's value at n around the curve, the run
        scored on `test_images` images (their sampling variance at the curve's value; None:
        no sampling part, as for a run scored on the curve's own images)."""
        if not self.sampling:
            return self.quantile * np.sqrt(self.sigma**2 + self.curve_variance(n))
        variance = self._variance_draws[None, :] + self._curve_variance_draws(n)
        if test_images:
            p = np.clip(self(np.atleast_1d(n)), 0.0, 1.0)
            variance = variance + (p * (1 - p) / test_images)[:, None]
        return self._half_width(variance)

    def difference_half_width(self) -> float:
        """Half-width of the interval for the difference of two new runs at one size, scored
        on the same test images."""
        if not self.sampling:
            return self.quantile * math.sqrt(2.0) * self.sigma
        return float(self._half_width(2.0 * self._variance_draws[None, :])[0])

    def describe(self) -> str:
        p = self.parameters
        if self.form == "power-law":
            shape = f"{p['a']:.3f} - {p['b']:.3f} * (n/1000)^-{p['c']:.3f}"
        else:
            shape = f"{p['a']:.3f} + {p['b']:.4f} * ln(n/1000)"
        spread = f"residual s = {100 * (self.residual_sigma or self.sigma):.2f} points"
        if self.sampling:
            spread += (
                f", of which the runs' own beyond their test sets' sampling "
                f"tau = {100 * self.sigma:.2f}"
            )
        return (
            f"{self.form} {shape} fitted to {len(self.points)} runs "
            f"({spread}, {self.dof} degrees of freedom)"
        )


def _sampling_variances(points: Sequence[CurvePoint]) -> np.ndarray:
    """Each point's binomial variance from its test images (0 where unknown)."""
    return np.asarray([p.sampling_variance() for p in points], dtype=np.float64)


def _power_law(x, a, b, c):
    return a - b * np.power(x, -c)


def _log_linear(x, a, b):
    return a + b * np.log(x)


def _power_law_gradient(x, a, b, c):
    xc = np.power(x, -c)
    return np.stack([np.ones_like(x), -xc, b * xc * np.log(x)])


def _log_linear_gradient(x, a, b):
    return np.stack([np.ones_like(x), np.log(x)])


_FORMS = {"power-law": _power_law, "log-linear": _log_linear}
_GRADIENTS = {"power-law": _power_law_gradient, "log-linear": _log_linear_gradient}
#: the forms' exact Jacobians, (sizes, parameters), for curve_fit: no finite differences
_JACOBIANS = {form: (lambda x, *p, g=g: g(x, *p).T) for form, g in _GRADIENTS.items()}


def form_for(
    sizes: Sequence[int], requested: Literal["auto", "power-law", "log-linear"] = "auto"
) -> CurveForm | None:
    """The form to fit to runs at `sizes` (None: too few runs or sizes for any fit with a
    degree of freedom left)."""
    distinct = len(set(sizes))
    power_law = len(sizes) >= POWER_LAW_MIN_RUNS and distinct >= 3
    log_linear = len(sizes) >= 3 and distinct >= 2
    if requested == "power-law":
        return "power-law" if power_law else None
    if requested == "log-linear":
        return "log-linear" if log_linear else None
    return "power-law" if power_law else ("log-linear" if log_linear else None)


def fit_curve(
    points: Sequence[CurvePoint],
    *,
    coverage: float,
    form: Literal["auto", "power-law", "log-linear"] = "auto",
) -> LearningCurve | None:
    """The learning curve through `points` (None: too few for the form, see `form_for`). An
    automatic power law that does not converge falls back to the log-linear form. When every
    point has its test count, the run-to-run variance is separated from the test sampling
    (see the module's docstring)."""
    sizes = [p.train_images for p in points]
    chosen = form_for(sizes, form)
    if chosen is None:
        return None
    x = np.asarray(sizes, dtype=np.float64) / SCALE
    y = np.asarray([p.value for p in points], dtype=np.float64)
    fitted = _fit(chosen, x, y)
    if fitted is None and chosen == "power-law" and form == "auto":
        chosen, fitted = "log-linear", _fit("log-linear", x, y)
    if fitted is None:
        return None
    theta, cov = fitted
    dof = len(points) - len(theta)
    rss = float(np.sum((y - _FORMS[chosen](x, *theta)) ** 2))
    sigma, sampling = math.sqrt(rss / dof), False
    if all(p.test_images for p in points):
        v = _sampling_variances(points)
        separated = _separate(chosen, x, y, v, dof, theta, coverage)
        if separated is not None:
            theta, cov, tau2 = separated
            rss = float(np.sum((y - _FORMS[chosen](x, *theta)) ** 2))
            sigma, sampling = math.sqrt(tau2), True
    names = ["a", "b", "c"][: len(theta)]
    return LearningCurve(
        form=chosen,
        parameters=dict(zip(names, map(float, theta), strict=True)),
        covariance=cov.tolist(),
        dof=dof,
        sigma=sigma,
        residual_sigma=math.sqrt(rss / dof),
        sampling=sampling,
        coverage=coverage,
        points=list(points),
    )


def _separate(
    form: CurveForm,
    x: np.ndarray,
    y: np.ndarray,
    v: np.ndarray,
    dof: int,
    start: np.ndarray,
    coverage: float,
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The weighted fit at the Paule-Mandel tau^2, and tau^2 (None: the scatter is too small
    for the sampling variances `v` to be independent, or a weighted fit failed)."""

    def fit_at(tau2: float) -> tuple[np.ndarray, np.ndarray, float]:
        fitted = _fit(form, x, y, sigma=np.sqrt(tau2 + v), start=start)
        if fitted is None:
            raise _NoFit
        theta, cov = fitted
        return theta, cov, float(np.sum((y - _FORMS[form](x, *theta)) ** 2 / (tau2 + v)))

    try:
        theta, cov, q0 = fit_at(0.0)
        if q0 < chi2.ppf(1 - coverage, dof):
            return None
        if q0 <= dof:
            return theta, cov, 0.0
        # the unweighted residuals bound Q: Q(tau^2) <= RSS / tau^2, so Q(RSS / dof) <= dof
        high = float(np.sum((y - _FORMS[form](x, *start)) ** 2)) / dof
        tau2 = brentq(lambda t: fit_at(t)[2] - dof, 0.0, high, xtol=1e-12, rtol=1e-10)
        theta, cov, _ = fit_at(tau2)
    except (_NoFit, ValueError):
        return None
    return theta, cov, float(tau2)


class _NoFit(Exception):
    """A weighted fit did not converge."""


def _fit(
    form: CurveForm,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Least squares of `form` through (x, y): unweighted, or weighted by known standard
    deviations `sigma` (the covariance then in their units)."""
    if form == "log-linear":
        p0, bounds = [float(y.mean()), 0.0], ([-np.inf, 0.0], [np.inf, np.inf])
    else:
        p0 = [min(1.0, float(y.max()) + 0.05), max(1e-3, float(y.max() - y.min())), 0.5]
        bounds = ([-np.inf, 0.0, 1e-3], [1.0, np.inf, 5.0])
    if start is not None:
        p0 = np.clip(start, *bounds).tolist()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            theta, cov = curve_fit(
                _FORMS[form], x, y, p0=p0, bounds=bounds, maxfev=5000,
                sigma=sigma, absolute_sigma=sigma is not None, jac=_JACOBIANS[form],
            )  # fmt: skip
    except (RuntimeError, ValueError, OptimizeWarning, np.linalg.LinAlgError):
        return None
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(cov))):
        return None
    return theta, cov
