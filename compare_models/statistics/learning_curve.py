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

With p parameters and k runs the residuals' standard deviation s = sqrt(RSS / (k - p)) has
k - p degrees of freedom. The intervals (both at `coverage`, Student's t with k - p degrees of
freedom), each with its own variance:

* **tonight's residual from the curve**: a new run at n images falls within
  f(n) ± t * sqrt(s^2 + Var f(n)), where Var f(n) = g' C g is the fitted curve's own
  uncertainty at n (g the gradient of f in the parameters, C their covariance);
* **tonight's difference from another run at the same size** (the champion re-scored on
  tonight's images): within ± t * sqrt(2) * s, two runs' noise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import t as student_t

CurveForm = Literal["power-law", "log-linear"]

#: Runs (on at least three sizes) from which the three-parameter power law is fitted.
POWER_LAW_MIN_RUNS = 6

#: Images per unit of n in the fit: thousands keep the parameters of order one.
SCALE = 1000.0


class CurvePoint(BaseModel):
    """One run on the curve: its training images and its accuracy (or a class's recall)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    run_id: str
    train_images: int = Field(gt=0)
    value: float


class LearningCurve(BaseModel):
    """A fitted learning curve: enough to evaluate it and its intervals at any size, and to
    draw it (the report does, from the run's record)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    form: CurveForm
    parameters: dict[str, float] = Field(description="a, b (and c for the power law)")
    covariance: list[list[float]] = Field(description="the parameters' covariance, in order")
    dof: int = Field(ge=1, description="degrees of freedom the fit leaves: runs - parameters")
    sigma: float = Field(ge=0, description="the residuals' standard deviation, sqrt(RSS / dof)")
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

    def residual_half_width(self, n: float | np.ndarray) -> np.ndarray:
        """Half-width of the interval for a new run's value at n around the curve."""
        return self.quantile * np.sqrt(self.sigma**2 + self.curve_variance(n))

    def difference_half_width(self) -> float:
        """Half-width of the interval for the difference of two new runs at one size."""
        return self.quantile * math.sqrt(2.0) * self.sigma

    def describe(self) -> str:
        p = self.parameters
        if self.form == "power-law":
            shape = f"{p['a']:.3f} - {p['b']:.3f} * (n/1000)^-{p['c']:.3f}"
        else:
            shape = f"{p['a']:.3f} + {p['b']:.4f} * ln(n/1000)"
        return (
            f"{self.form} {shape} fitted to {len(self.points)} runs "
            f"(residual s = {100 * self.sigma:.2f} points, {self.dof} degrees of freedom)"
        )


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
    automatic power law that does not converge falls back to the log-linear form."""
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
    names = ["a", "b", "c"][: len(theta)]
    return LearningCurve(
        form=chosen,
        parameters=dict(zip(names, map(float, theta), strict=True)),
        covariance=cov.tolist(),
        dof=dof,
        sigma=math.sqrt(rss / dof),
        coverage=coverage,
        points=list(points),
    )


def _fit(form: CurveForm, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if form == "log-linear":
        start, bounds = [float(y.mean()), 0.0], ([-np.inf, 0.0], [np.inf, np.inf])
    else:
        start = [min(1.0, float(y.max()) + 0.05), max(1e-3, float(y.max() - y.min())), 0.5]
        bounds = ([-np.inf, 0.0, 1e-3], [1.0, np.inf, 5.0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            theta, cov = curve_fit(_FORMS[form], x, y, p0=start, bounds=bounds, maxfev=5000)
    except (RuntimeError, ValueError, OptimizeWarning, np.linalg.LinAlgError):
        return None
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(cov))):
        return None
    return theta, cov
