"""Local automatic model tuning's search: the space of hyperparameters and the optimiser over it.

Strategy "Bayesian" is a Gaussian process (scikit-learn) with expected improvement after a few random jobs;
"Random" samples every job at random. Both honour the ranges' ScalingType ("Auto" means logarithmic when a
positive range spans two decades or more) and categorical values. `tune` runs up to `max_jobs` jobs, at most
`max_parallel` at a time in separate processes, on any picklable job function (index, hyperparameters) ->
metrics; the search itself runs in a child of the fork server (pipelines/local/warm.py), where scikit-learn is
imported already. The Tuning step (steps/tuning.py) reads CreateHyperParameterTuningJob into these and shapes
the answer.

Reproducible: job k's hyperparameters depend only on the seed and on jobs 0..k-max_parallel (jobs still
running count as "pending" at the worst objective seen, the "constant liar"), so the same seed gives the
same jobs whatever order parallel jobs finish in.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipelines.local import warm
from pipelines.local.errors import TuningError
from pipelines.local.workers import STOP_SECONDS, checkin, checkout, death, prestart

AUTO_LOG_RATIO = 100.0  # "Auto" scaling is logarithmic when max/min reaches two decades
MIN_RANDOM_JOBS = 3  # Bayesian search starts with max(3, MaxParallelTrainingJobs) random jobs
CANDIDATES = 2000  # random points scored by expected improvement per suggestion
LOCAL_CANDIDATES = 400  # perturbations of the best points so far


# ---------------------------------------------------------------------------------------------
# The search space


@dataclass(frozen=True)
class Parameter:
    """One tuned hyperparameter: `kind` continuous, integer or categorical."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    scaling: str = "Linear"  # resolved: Linear, Logarithmic or ReverseLogarithmic
    values: tuple[str, ...] = ()

    def _bounds(self) -> tuple[float, float]:
        # An integer's range is widened by half a step so that both end values are as likely as the others.
        return (self.low - 0.5, self.high + 0.5) if self.kind == "integer" else (self.low, self.high)

    def values_at(self, units: np.ndarray) -> list:
        """The values at positions `units` (each in [0, 1]) of the range, in the range's scaling."""
        units = np.asarray(units, dtype=np.float64)
        if self.kind == "categorical":
            return [self.values[i] for i in np.minimum((units * len(self.values)).astype(int), len(self.values) - 1)]
        low, high = self._bounds()
        if self.scaling == "Logarithmic":
            values = np.exp(np.log(low) + units * (np.log(high) - np.log(low)))
        elif self.scaling == "ReverseLogarithmic":
            values = 1 - np.exp(np.log(1 - low) + units * (np.log(1 - high) - np.log(1 - low)))
        else:
            values = low + units * (high - low)
        if self.kind == "integer":
            return np.clip(np.round(values), self.low, self.high).astype(int).tolist()
        return np.clip(values, self.low, self.high).tolist()

    def units_of(self, values) -> np.ndarray:
        """The inverse of `values_at` for continuous and integer parameters."""
        values = np.asarray(values, dtype=np.float64)
        low, high = self._bounds()
        if self.scaling == "Logarithmic":
            position = (np.log(values) - np.log(low)) / (np.log(high) - np.log(low))
        elif self.scaling == "ReverseLogarithmic":
            position = (np.log(1 - values) - np.log(1 - low)) / (np.log(1 - high) - np.log(1 - low))
        else:
            position = (values - low) / (high - low) if high > low else np.full(values.shape, 0.5)
        return np.clip(position, 0.0, 1.0)

    def encode(self, values) -> np.ndarray:
        """The values' coordinates for the Gaussian process, a row each: unit position, or one-hot for a category."""
        if self.kind == "categorical":
            return np.array([[value == v for v in self.values] for value in values], dtype=np.float64)
        return self.units_of(values)[:, None]

    def format(self, value) -> str:
        """The value as the training job receives it (hyperparameters are strings)."""
        return value if self.kind == "categorical" else str(value) if self.kind == "integer" else repr(float(value))


@dataclass(frozen=True)
class SearchSpace:
    parameters: tuple[Parameter, ...]

    @classmethod
    def from_ranges(cls, ranges: dict) -> SearchSpace:
        """The space of an API ParameterRanges dict (Continuous/Integer/CategoricalParameterRanges)."""
        parameters = []
        for item in ranges.get("ContinuousParameterRanges", []):
            parameters.append(_numeric_parameter(item, "continuous"))
        for item in ranges.get("IntegerParameterRanges", []):
            parameters.append(_numeric_parameter(item, "integer"))
        for item in ranges.get("CategoricalParameterRanges", []):
            values = tuple(str(v) for v in item.get("Values", []))
            if not values:
                raise TuningError(f"categorical range '{item.get('Name')}' has no Values")
            parameters.append(Parameter(name=str(item["Name"]), kind="categorical", values=values))
        if ranges.get("AutoParameters"):
            raise TuningError("AutoParameters (Autotune) are not supported locally; give explicit ranges")
        names = [p.name for p in parameters]
        if not parameters:
            raise TuningError("ParameterRanges defines no hyperparameter to tune")
        if len(set(names)) != len(names):
            raise TuningError(f"a hyperparameter appears in more than one range: {names}")
        return cls(tuple(parameters))

    def random_points(self, rng: np.random.Generator, count: int) -> list[tuple]:
        """`count` points, each parameter uniform on its range's scale."""
        units = rng.random((count, len(self.parameters)))
        return list(zip(*(p.values_at(units[:, i]) for i, p in enumerate(self.parameters)), strict=True))

    def random_point(self, rng: np.random.Generator) -> tuple:
        return self.random_points(rng, 1)[0]

    def perturb(self, points: list[tuple], rng: np.random.Generator, spreads: np.ndarray) -> list[tuple]:
        """A point near each of `points`: unit positions moved by N(0, spread); a category redrawn one time in
        five."""
        columns = []
        for i, parameter in enumerate(self.parameters):
            values = [point[i] for point in points]
            if parameter.kind == "categorical":
                redrawn = parameter.values_at(rng.random(len(points)))
                redraw = rng.random(len(points)) < 0.2
                columns.append([new if change else old
                                for old, new, change in zip(values, redrawn, redraw, strict=True)])
            else:
                moved = parameter.units_of(values) + rng.normal(0.0, spreads)
                columns.append(parameter.values_at(np.clip(moved, 0.0, 1.0)))
        return list(zip(*columns, strict=True))

    def encode(self, points: list[tuple]) -> np.ndarray:
        """The points' coordinates for the Gaussian process, a row each."""
        return np.hstack([p.encode([point[i] for point in points]) for i, p in enumerate(self.parameters)])

    def hyperparameters(self, point: tuple) -> dict[str, str]:
        return {p.name: p.format(v) for p, v in zip(self.parameters, point, strict=True)}


def _numeric_parameter(item: dict, kind: str) -> Parameter:
    name = str(item.get("Name", ""))
    try:
        low, high = (float(item[key]) for key in ("MinValue", "MaxValue"))
    except (KeyError, TypeError, ValueError):
        raise TuningError(f"range '{name}' needs numeric MinValue and MaxValue, got {item}") from None
    if kind == "integer" and (low != int(low) or high != int(high)):
        raise TuningError(f"integer range '{name}' has a non-integer bound: {item}")
    if not low <= high:
        raise TuningError(f"range '{name}' has MinValue {low} above MaxValue {high}")
    scaling = item.get("ScalingType", "Auto")
    if scaling == "Auto":
        scaling = "Logarithmic" if low > 0 and high / low >= AUTO_LOG_RATIO else "Linear"
    if scaling not in ("Linear", "Logarithmic", "ReverseLogarithmic"):
        raise TuningError(f"range '{name}': unknown ScalingType {scaling!r}")
    if scaling == "Logarithmic" and low <= 0:
        raise TuningError(f"range '{name}': Logarithmic scaling needs MinValue > 0")
    if scaling == "ReverseLogarithmic" and (kind == "integer" or not (low >= 0 and high < 1)):
        raise TuningError(f"range '{name}': ReverseLogarithmic scaling needs a continuous range within [0, 1)")
    return Parameter(name=name, kind=kind, low=low, high=high, scaling=scaling)


# ---------------------------------------------------------------------------------------------
# Search strategies


class RandomSearch:
    def __init__(self, space: SearchSpace, seed: int):
        self.space, self.seed = space, seed

    def suggest(self, index: int, observed: list[tuple[tuple, float]], pending: list[tuple]) -> tuple:
        return self.space.random_point(np.random.default_rng([self.seed, index]))


class BayesianSearch(RandomSearch):
    """Gaussian-process regression of the objective; the next point maximises expected improvement."""

    def __init__(self, space: SearchSpace, seed: int, maximize: bool, random_jobs: int):
        super().__init__(space, seed)
        self.sign = 1.0 if maximize else -1.0
        self.random_jobs = random_jobs

    def suggest(self, index: int, observed: list[tuple[tuple, float]], pending: list[tuple]) -> tuple:
        if index < self.random_jobs or len(observed) < 2:
            return super().suggest(index, observed, pending)
        from scipy.stats import norm
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
        from threadpoolctl import threadpool_limits

        rng = np.random.default_rng([self.seed, index])
        values = self.sign * np.array([value for _, value in observed])
        # Jobs still running are assumed to score the worst value seen (the "constant liar").
        points = [point for point, _ in observed] + pending
        targets = np.concatenate([values, np.full(len(pending), values.min())])
        encoded = self.space.encode(points)
        kernel = (ConstantKernel(1.0, (1e-3, 1e3))
                  * Matern(length_scale=np.full(encoded.shape[1], 0.3), length_scale_bounds=(1e-2, 1e1), nu=2.5)
                  + WhiteKernel(1e-3, (1e-6, 1e-1)))
        model = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2,
                                         random_state=int(rng.integers(2**31)))
        best_points = [points[i] for i in np.argsort(-values)[:3]]
        candidates = self.space.random_points(rng, CANDIDATES)
        candidates += self.space.perturb([best_points[i % len(best_points)] for i in range(LOCAL_CANDIDATES)], rng,
                                         np.where(np.arange(LOCAL_CANDIDATES) % 2, 0.05, 0.15))
        # Small matrices: BLAS threads only add contention (10x slower on a busy 2-core machine).
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bound-hitting length scales are expected on few points
            model.fit(encoded, targets)
            mean, std = model.predict(self.space.encode(candidates), return_std=True)
        improvement = mean - values.max() - 0.01 * (values.std() or 1.0)
        z = improvement / np.maximum(std, 1e-12)
        expected = np.where(std > 1e-12, improvement * norm.cdf(z) + std * norm.pdf(z), np.maximum(improvement, 0))
        return candidates[int(np.argmax(expected))]


class Suggester:
    """A search's `suggest` in a child of the fork server, where scikit-learn is imported already (a second
    here); the child ends with this process, however this one ends."""

    def __init__(self, search: RandomSearch):
        self.connection, child = warm.context.Pipe()
        self.process = warm.context.Process(target=_serve_suggestions, args=(search, child), daemon=True,
                                            name="livetrain-tuner-search")
        self.process.start()
        child.close()

    def __enter__(self) -> Suggester:
        return self

    def __exit__(self, *exc_info) -> None:
        self.connection.close()  # the child's recv ends: it returns
        self.process.join(STOP_SECONDS)
        if self.process.is_alive():  # still working out a suggestion nobody waits for
            self.process.kill()
            self.process.join()

    def suggest(self, index: int, observed: list[tuple[tuple, float]], pending: list[tuple]) -> tuple:
        self.connection.send((index, observed, pending))
        try:
            point, error = self.connection.recv()
        except EOFError:
            raise TuningError(f"the search's process ended unexpectedly ({death(self.process)})") from None
        if error is not None:
            raise error
        return point


def _serve_suggestions(search: RandomSearch, connection) -> None:
    warm.exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        try:
            reply = (search.suggest(*request), None)
        except Exception as exc:  # raised in the parent
            reply = (None, exc)
        try:
            connection.send(reply)
        except OSError:  # the parent closed its end: nobody waits
            return


# ---------------------------------------------------------------------------------------------
# The optimiser core


@dataclass
class Trial:
    """One training job of a tuning job, in launch order (`index` from 0)."""

    index: int
    point: tuple
    hyperparameters: dict[str, str]
    created: float
    status: str = "InProgress"  # Completed or Failed when done
    metrics: dict[str, float] = field(default_factory=dict)
    objective: float | None = None
    failure_reason: str | None = None
    start: float | None = None
    end: float | None = None
    pid: int | None = None


def _pool_shape(max_jobs: int, max_parallel: int) -> tuple[int, int]:
    """(worker processes, BLAS threads per worker) for a tuning job with these limits."""
    workers = max(1, min(max_parallel, max_jobs))
    return workers, max(1, (os.cpu_count() or 1) // workers)


def warm_up(max_jobs: int, max_parallel: int, preload: tuple[str, ...] = ()) -> None:
    """Start the worker processes `tune` with these arguments will need, so they warm up while other work runs."""
    workers, threads = _pool_shape(max_jobs, max_parallel)
    prestart(workers, preload, threads)


def tune(space: SearchSpace, job: Callable[[int, dict[str, str]], dict[str, float]], *, max_jobs: int,
         max_parallel: int, objective_metric: str, maximize: bool, strategy: str = "Bayesian", seed: int = 0,
         on_trial: Callable[[Trial, list[Trial]], None] | None = None, preload: tuple[str, ...] = ()) -> list[Trial]:
    """Run `max_jobs` calls of `job(index, hyperparameters)` in warm worker processes, `max_parallel` at a time.

    `job` must be picklable (a module-level function or a partial of one) and return metrics by name; the
    objective is `metrics[objective_metric]`. `on_trial(trial, trials)` runs in this process as each job
    ends. The workers import `preload` before their first job and are kept for the next call with the same
    shape (pipelines/local/workers.py). Returns the trials in launch order.
    """
    if strategy == "Bayesian":
        search = BayesianSearch(space, seed, maximize, random_jobs=min(max_jobs, max(MIN_RANDOM_JOBS, max_parallel)))
    elif strategy == "Random":
        search = RandomSearch(space, seed)
    else:
        raise TuningError(f"tuning strategy {strategy!r} is not supported locally; use Bayesian or Random")
    trials: list[Trial] = []

    def finish(trial: Trial, outcome: dict) -> None:
        trial.start, trial.end, trial.pid = outcome["start"], outcome["end"], outcome["pid"]
        trial.metrics = outcome.get("metrics", {})
        trial.failure_reason = outcome.get("failure_reason")
        if trial.failure_reason is None and objective_metric not in trial.metrics:
            trial.failure_reason = (f"ClientError: the job did not emit the objective metric {objective_metric}; "
                                    f"it emitted {', '.join(sorted(trial.metrics)) or 'none'}")
        if trial.failure_reason is None:
            trial.status, trial.objective = "Completed", trial.metrics[objective_metric]
        else:
            trial.status = "Failed"
        if on_trial:
            on_trial(trial, trials)

    def wait_for(trial: Trial) -> None:
        while trial.status == "InProgress":
            for index, outcome in pool.wait():
                finish(trials[index], outcome)

    workers, threads = _pool_shape(max_jobs, max_parallel)
    pool = checkout(workers, preload, threads)
    try:
        with Suggester(search) as suggester:
            for index in range(max_jobs):
                settled = index - workers  # jobs up to this one are finished before job `index` is chosen
                if settled >= 0:
                    wait_for(trials[settled])
                observed = [(t.point, t.objective) for t in trials[:settled + 1] if t.objective is not None]
                pending = [t.point for t in trials[max(settled + 1, 0):]]
                point = suggester.suggest(index, observed, pending)
                trial = Trial(index=index, point=point, hyperparameters=space.hyperparameters(point),
                              created=time.time())
                trials.append(trial)
                pool.submit(index, job, index, trial.hyperparameters)
        for trial in trials:
            wait_for(trial)
    except BaseException:
        pool.close()  # jobs still running are stopped with the step
        raise
    checkin(pool)
    return trials


def best_first(trials: list[Trial], maximize: bool) -> list[Trial]:
    """Completed trials from best to worst objective (ties: earlier launch first), then failed ones."""
    done = [t for t in trials if t.objective is not None]
    done.sort(key=lambda t: (-t.objective if maximize else t.objective, t.index))
    return done + [t for t in trials if t.objective is None]
