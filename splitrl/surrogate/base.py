"""The surrogate contract, its four scikit-learn implementations, and safe persistence.

A surrogate predicts the log perplexity increase ``log(ppl / ppl_clean)`` of a cell
``(transport, split, snr_db)`` — mean and an uncertainty — after being fitted on measured cells.
The contract follows mbrl-lib's small ``Model`` interface: ``fit``, ``predict``,
``predict_with_uncertainty``, ``update`` (online refit with appended data), ``save``/``load``.

``X`` is either cells (see `splitrl.surrogate.features.as_cells`: a DataFrame with ``transport``,
``split``, ``snr_db``/``level`` columns, or ``(transport, split, snr_db)`` tuples) or an already
encoded numeric matrix with `FeatureSpec.n_features` columns. Features are standardised with a
scaler fitted on the training data (stored in the JSON metadata, not pickled).

Kinds (`SURROGATE_KINDS`); every ``std`` is the epistemic spread of the MEAN (observation noise
excluded), so that the kinds are comparable:

* ``extratrees`` — `ExtraTreesRegressor`; std = spread of the members' (trees') predictions.
* ``gbr`` — bootstrap ensemble (``members``) of `GradientBoostingRegressor`; mean = members'
  average, std = their spread. (Quantile boosting was not used: it gives aleatoric intervals of
  one observation, not uncertainty about the mean, and needs two extra models per quantile.)
* ``gp`` — `GaussianProcessRegressor` with ``C * Matern(nu=2.5, ARD) + White`` on scaled features,
  ``normalize_y``; std = native posterior std with the fitted White noise removed. ``update``
  warm-starts the kernel hyperparameters from the previous fit.
* ``mlp`` — bootstrap ensemble of `MLPRegressor` (lbfgs); std = members' spread.

All randomness derives from ``seed`` (member seeds and bootstrap draws): the same data and seed
give the same model. ``update`` appends the data and refits (GP: from the previous kernel).

Structural zero: at ``split == L`` nothing crosses the link, so the quality loss is exactly 0;
predictions there are 0 with std 0 (``zero_at_full_split``, default True).

Persistence (`Surrogate.save` / `Surrogate.load`): one JSON file, ``<stem>.json``, holds the
metadata (format, kind, seed, params, feature spec, library versions), the training data (encoded
features and targets) and the fit history (training-set size after the `fit` and after each
`update`). Nothing fitted is stored: `load` replays the fit history on the saved data with the
saved seed, which gives back the same model (every kind is deterministic given data and seed), and
checks its predictions on the training points against the ones recorded at save time. No pickle is
written or read, so a surrogate file from anyone is data, never code; the worst a hostile file can
do is be refused (or, within the size bounds, describe a bad model).
"""
from __future__ import annotations

import abc
import json
import platform
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from splitrl.errors import UsageError
from splitrl.integrity import read_json_object
from splitrl.surrogate.features import FeatureSpec, as_cells

__all__ = [
    "FORMAT", "SURROGATE_KINDS", "ExtraTreesSurrogate", "GaussianProcessSurrogate", "GradientBoostingSurrogate",
    "MLPEnsembleSurrogate", "Surrogate", "SurrogateLoadError", "load_surrogate", "make_surrogate", "surrogate_path",
]

FORMAT = "splitrl-surrogate/2"
MAX_TRAIN_ROWS = 200_000  # a loaded file may not ask for more refitting than this
_CHECK_ROWS = 16  # training points whose predictions are recorded at save time and re-checked on load


class SurrogateLoadError(UsageError):
    """A saved surrogate could not be loaded (missing, unreadable, corrupt, tampered, or wrong spec)."""


def surrogate_path(path: str | Path) -> Path:
    """``<stem>.json`` for a stem or for the JSON file name itself."""
    p = Path(path)
    if p.suffix == ".json":
        return p
    return p.with_name(p.name + ".json")


def _versions() -> dict[str, str]:
    import sklearn

    return {"sklearn": sklearn.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


_CONTROLLER = None


def _one_thread():
    """Run BLAS/OpenMP single-threaded: the matrices here are tiny, and threads only contend
    (with torch, or with each other) — 2x faster on 2 cores, and deterministic."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)


class Surrogate(abc.ABC):
    """Contract of a quality surrogate: log(ppl/ppl_clean) of (transport, split, SNR) cells.

    Args:
        spec: the feature mapping (`FeatureSpec`).
        seed: the one seed every random choice derives from.
        **params: kind-specific hyperparameters (see each class's ``DEFAULTS``).
    """

    kind: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: FeatureSpec, *, seed: int = 0, **params: Any) -> None:
        if not isinstance(spec, FeatureSpec):
            raise TypeError(f"spec must be a FeatureSpec, got {type(spec).__name__}")
        unknown = set(params) - set(self.DEFAULTS) - {"zero_at_full_split"}
        if unknown:
            raise UsageError(f"{self.kind}: unknown parameters {sorted(unknown)}; allowed {sorted(self.DEFAULTS)}")
        self.spec = spec
        self.seed = int(seed)
        self.params: dict[str, Any] = {"zero_at_full_split": True, **self.DEFAULTS, **params}
        self.X_train = np.zeros((0, spec.n_features))
        self.y_train = np.zeros(0)
        self.scaler_mean: np.ndarray | None = None
        self.scaler_scale: np.ndarray | None = None
        self.n_updates = 0
        self.fit_sizes: list[int] = []  # training-set size after fit and after each update (replayed on load)
        self._state: Any = None  # fitted sklearn objects (never saved)

    # --- data ---------------------------------------------------------------------------
    def features(self, X: Any) -> np.ndarray:
        """Encoded feature matrix of ``X`` (cells, or an already-encoded numeric matrix)."""
        if isinstance(X, np.ndarray) and X.dtype.kind in "fiu" and X.ndim == 2:
            if X.shape[1] != self.spec.n_features:
                raise UsageError(f"feature matrix has {X.shape[1]} columns, the spec has {self.spec.n_features}")
            return X.astype(float)
        return self.spec.encode(X)

    def _splits_of(self, F: np.ndarray) -> np.ndarray:
        return np.rint(F[:, 0]).astype(int)

    def _scale(self, F: np.ndarray) -> np.ndarray:
        if self.scaler_mean is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X, y) first")
        return (F - self.scaler_mean) / self.scaler_scale

    @property
    def n_train(self) -> int:
        return int(len(self.y_train))

    @property
    def is_fitted(self) -> bool:
        return self._state is not None

    def _member_seeds(self, n: int) -> list[int]:
        return [int(x) for x in np.random.SeedSequence(self.seed).generate_state(n)]

    # --- contract -----------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> "Surrogate":
        """Fit on cells ``X`` with measured log(ppl/ppl_clean) ``y`` (replaces any previous data)."""
        F, y = self._check_xy(X, y)
        if len(y) < 2:
            raise UsageError(f"need at least 2 measurements to fit, got {len(y)}")
        self.X_train, self.y_train = F, y
        self.scaler_mean = F.mean(axis=0)
        sd = F.std(axis=0)
        self.scaler_scale = np.where(sd > 1e-12, sd, 1.0)
        with _one_thread():
            self._state = self._fit(self._scale(F), y, warm=False)
        self.fit_sizes = [len(y)]
        self.n_updates = 0
        return self

    def update(self, X: Any, y: Any) -> "Surrogate":
        """Online refit: append the new measurements to the training data and refit (warm-started
        where the kind supports it). The scaler stays the one of the first `fit` so that features
        keep their meaning; an unfitted surrogate is simply fitted."""
        F, y = self._check_xy(X, y)
        if not self.is_fitted:
            return self.fit(F, y)
        if len(y) == 0:
            return self
        self.X_train = np.concatenate([self.X_train, F])
        self.y_train = np.concatenate([self.y_train, y])
        with _one_thread():
            self._state = self._fit(self._scale(self.X_train), self.y_train, warm=True)
        self.n_updates += 1
        self.fit_sizes.append(len(self.y_train))
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted mean log(ppl/ppl_clean) of each cell (equal to ``predict_with_uncertainty(X)[0]``)."""
        F = self.features(X)
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X, y) first")
        if len(F) == 0:
            return np.zeros(0)
        with _one_thread():
            mean = np.array(self._predict_mean(self._scale(F)), dtype=float).reshape(-1)
        if self.params["zero_at_full_split"]:
            mean[self._splits_of(F) == self.spec.num_layers] = 0.0
        return mean

    def predict_with_uncertainty(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` of each cell; std is the epistemic std of the mean (see module doc)."""
        F = self.features(X)
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X, y) first")
        if len(F) == 0:
            return np.zeros(0), np.zeros(0)
        with _one_thread():
            mean, std = self._predict(self._scale(F))
        mean, std = np.asarray(mean, float).reshape(-1), np.maximum(np.asarray(std, float).reshape(-1), 0.0)
        if self.params["zero_at_full_split"]:
            full = self._splits_of(F) == self.spec.num_layers
            mean[full], std[full] = 0.0, 0.0
        return mean, std

    def _check_xy(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        F = self.features(X)
        y = np.asarray(y, dtype=float).reshape(-1)
        if len(y) != len(F):
            raise UsageError(f"X has {len(F)} rows but y has {len(y)} values")
        if not np.isfinite(y).all():
            raise UsageError("y (log ppl ratios) must be finite")
        return F, y

    @abc.abstractmethod
    def _fit(self, Z: np.ndarray, y: np.ndarray, *, warm: bool) -> Any:
        """Fit on scaled features; return the fitted state (picklable sklearn objects)."""

    @abc.abstractmethod
    def _predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) on scaled features."""

    def _predict_mean(self, Z: np.ndarray) -> np.ndarray:
        """Mean only (kinds override it where skipping the std is cheaper)."""
        return self._predict(Z)[0]

    # --- persistence --------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "kind": self.kind, "seed": self.seed, "params": _jsonable(self.params),
            "spec": self.spec.to_dict(), "spec_fingerprint": self.spec.fingerprint(),
            "feature_names": self.spec.feature_names,
            "scaler": None if self.scaler_mean is None else {"mean": self.scaler_mean.tolist(), "scale": self.scaler_scale.tolist()},
            "n_train": self.n_train, "n_updates": self.n_updates, "versions": _versions(),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``<stem>.json`` (see module doc: data + seed + fit history, no fitted objects);
        returns its path. Written to a temporary name and renamed, so a reader never sees half a file."""
        if not self.is_fitted:
            raise RuntimeError("refusing to save an unfitted surrogate")
        js = surrogate_path(path)
        js.parent.mkdir(parents=True, exist_ok=True)
        k = min(_CHECK_ROWS, self.n_train)
        meta = self.metadata()
        meta.update({
            "X_train": self.X_train.tolist(), "y_train": self.y_train.tolist(), "fit_sizes": list(self.fit_sizes),
            "check": {"rows": k, "mean": self.predict(self.X_train[:k]).tolist()},
        })
        tmp = js.with_name(js.name + ".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(js)
        return js

    @classmethod
    def load(cls, path: str | Path, expected_spec: FeatureSpec | None = None) -> "Surrogate":
        """Load a saved surrogate by refitting it from its saved data, seed and fit history.

        Raises `SurrogateLoadError` (one line naming the file) when the file is missing, unreadable,
        not this format (e.g. an old pickle-based one), malformed, of another kind than ``cls``, or
        ``expected_spec`` differs from the saved spec. Warns when the refitted model's predictions
        differ from those recorded at save time (another scikit-learn version).
        """
        js = surrogate_path(path)
        meta = read_json_object(js, SurrogateLoadError, missing="no surrogate file at this path",
                                what=f"a {FORMAT} surrogate file")
        if meta.get("format") != FORMAT:
            got = meta.get("format")
            hint = " (an older pickle-based surrogate: it is not loaded; refit it)" if got == "splitrl-surrogate/1" else ""
            raise SurrogateLoadError(f"{js} is not a {FORMAT} surrogate file{hint}")
        kind = meta.get("kind")
        if kind not in SURROGATE_KINDS:
            raise SurrogateLoadError(f"{js}: unknown surrogate kind {str(kind)[:40]!r}; known {sorted(SURROGATE_KINDS)}")
        target = SURROGATE_KINDS[kind]
        if cls is not Surrogate and target is not cls:
            raise SurrogateLoadError(f"{js} holds a {kind!r} surrogate, not {cls.kind!r}")
        try:
            spec = FeatureSpec.from_dict(meta["spec"])
        except (KeyError, TypeError, ValueError) as e:
            raise SurrogateLoadError(f"{js}: invalid feature spec: {str(e)[:200]}") from None
        if expected_spec is not None and spec.fingerprint() != expected_spec.fingerprint():
            raise SurrogateLoadError(
                f"{js}: feature spec differs from the expected one in {spec.differences(expected_spec)}; "
                "refit the surrogate for this spec")
        try:
            X = np.asarray(meta["X_train"], dtype=float)
            y = np.asarray(meta["y_train"], dtype=float)
            sizes = [int(n) for n in meta["fit_sizes"]]
            params = dict(meta.get("params") or {})
            seed = int(meta.get("seed", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise SurrogateLoadError(f"{js}: malformed training data: {type(e).__name__}") from None
        n = len(y)
        if (X.ndim != 2 or X.shape != (n, spec.n_features) or not np.isfinite(X).all() or not np.isfinite(y).all()
                or not 2 <= n <= MAX_TRAIN_ROWS or not sizes or sizes[0] < 2 or sizes[-1] != n
                or any(b <= a for a, b in zip(sizes, sizes[1:])) or len(sizes) > 10_000):
            raise SurrogateLoadError(
                f"{js}: training data must be finite, {spec.n_features} features x 2..{MAX_TRAIN_ROWS} rows, "
                "with an increasing fit history ending at the row count")
        try:
            obj = target(spec, seed=seed, **params)
        except (TypeError, ValueError) as e:
            raise SurrogateLoadError(f"{js}: bad parameters: {str(e)[:200]}") from None
        saved = meta.get("versions", {}).get("sklearn") if isinstance(meta.get("versions"), dict) else None
        try:
            obj.fit(X[: sizes[0]], y[: sizes[0]])
            for a, b in zip(sizes, sizes[1:]):
                obj.update(X[a:b], y[a:b])
        except (ValueError, TypeError) as e:
            raise SurrogateLoadError(f"{js}: refitting failed: {str(e)[:200]}") from None
        check = meta.get("check")
        if isinstance(check, dict):
            k = int(check.get("rows", 0))
            want = np.asarray(check.get("mean", []), dtype=float)
            if 0 < k <= n and want.shape == (k,):
                got = obj.predict(X[:k])
                if not np.allclose(got, want, rtol=1e-6, atol=1e-9):
                    import sklearn

                    warnings.warn(f"{js}: the refitted surrogate predicts differently from the saved one "
                                  f"(max |diff| {float(np.max(np.abs(got - want))):.3g}); written with scikit-learn "
                                  f"{saved}, running {sklearn.__version__}", UserWarning, stacklevel=2)
        return obj

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_train={self.n_train}, seed={self.seed}, features={self.spec.n_features})"


class ExtraTreesSurrogate(Surrogate):
    """Extremely randomised trees; std = spread of the trees' predictions."""

    kind = "extratrees"
    DEFAULTS = {"n_estimators": 100, "min_samples_leaf": 1, "max_features": 1.0}

    def _fit(self, Z, y, *, warm):
        from sklearn.ensemble import ExtraTreesRegressor

        p = self.params
        m = ExtraTreesRegressor(n_estimators=int(p["n_estimators"]), min_samples_leaf=int(p["min_samples_leaf"]),
                                max_features=p["max_features"], random_state=self.seed, n_jobs=1)
        return m.fit(Z, y)

    def _per_tree(self, Z):
        # tree_.predict on float32 is what each tree's predict() does, minus its input validation
        # (which dominates for hundreds of small trees).
        Zf = np.ascontiguousarray(Z, dtype=np.float32)
        return np.stack([t.tree_.predict(Zf).reshape(len(Zf), -1)[:, 0] for t in self._state.estimators_])

    def _predict(self, Z):
        per_tree = self._per_tree(Z)
        return per_tree.mean(axis=0), per_tree.std(axis=0)

    def _predict_mean(self, Z):
        return self._per_tree(Z).mean(axis=0)


class _BootstrapEnsemble(Surrogate):
    """Members fitted on bootstrap resamples (member i: seed-derived draw and random_state)."""

    def _member(self, seed: int):
        raise NotImplementedError

    def _fit(self, Z, y, *, warm):
        n_members = int(self.params["members"])
        seeds = self._member_seeds(2 * n_members)
        members = []
        with warnings.catch_warnings():
            from sklearn.exceptions import ConvergenceWarning

            warnings.simplefilter("ignore", ConvergenceWarning)
            for i in range(n_members):
                rng = np.random.default_rng(seeds[2 * i])
                idx = rng.integers(0, len(y), len(y)) if n_members > 1 else np.arange(len(y))
                members.append(self._member(seeds[2 * i + 1] % (2**31 - 1)).fit(Z[idx], y[idx]))
        return members

    def _predict(self, Z):
        preds = np.stack([m.predict(Z) for m in self._state])
        return preds.mean(axis=0), preds.std(axis=0)


class GradientBoostingSurrogate(_BootstrapEnsemble):
    """Bootstrap ensemble of gradient-boosted trees; std = members' spread."""

    kind = "gbr"
    DEFAULTS = {"members": 5, "n_estimators": 300, "learning_rate": 0.05, "max_depth": 3, "subsample": 1.0}

    def _member(self, seed):
        from sklearn.ensemble import GradientBoostingRegressor

        p = self.params
        return GradientBoostingRegressor(n_estimators=int(p["n_estimators"]), learning_rate=float(p["learning_rate"]),
                                         max_depth=int(p["max_depth"]), subsample=float(p["subsample"]), random_state=seed)


class MLPEnsembleSurrogate(_BootstrapEnsemble):
    """Bootstrap ensemble of small MLPs (lbfgs, standardised target); std = members' spread."""

    kind = "mlp"
    DEFAULTS = {"members": 5, "hidden": [64, 64], "alpha": 1e-3, "max_iter": 2000, "activation": "tanh"}

    def _member(self, seed):
        from sklearn.compose import TransformedTargetRegressor
        from sklearn.neural_network import MLPRegressor
        from sklearn.preprocessing import StandardScaler

        p = self.params
        mlp = MLPRegressor(hidden_layer_sizes=tuple(int(h) for h in p["hidden"]), activation=str(p["activation"]),
                           solver="lbfgs", alpha=float(p["alpha"]), max_iter=int(p["max_iter"]), random_state=seed)
        return TransformedTargetRegressor(regressor=mlp, transformer=StandardScaler())


class GaussianProcessSurrogate(Surrogate):
    """GP with ``C * Matern(nu=2.5, ARD) + White`` on scaled features; native std minus the noise."""

    kind = "gp"
    DEFAULTS = {"nu": 2.5, "n_restarts_optimizer": 2, "ard": True}

    def _kernel(self, d: int):
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        ls = np.ones(d) if self.params["ard"] else 1.0
        return (ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=ls, length_scale_bounds=(1e-2, 1e3), nu=float(self.params["nu"]))
                + WhiteKernel(1e-2, (1e-6, 1e1)))

    def _fit(self, Z, y, *, warm):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor

        kernel = self._state.kernel_ if (warm and self._state is not None) else self._kernel(Z.shape[1])
        gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=self.seed,
                                      n_restarts_optimizer=int(self.params["n_restarts_optimizer"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return gp.fit(Z, y)

    def _predict_mean(self, Z):
        return self._state.predict(Z)

    def _predict(self, Z):
        gp = self._state
        mean, std = gp.predict(Z, return_std=True)
        noise = float(gp.kernel_.k2.noise_level) * float(np.square(np.atleast_1d(gp._y_train_std)).mean())
        return mean, np.sqrt(np.maximum(std**2 - noise, 0.0))


SURROGATE_KINDS: dict[str, type[Surrogate]] = {
    c.kind: c for c in (ExtraTreesSurrogate, GradientBoostingSurrogate, GaussianProcessSurrogate, MLPEnsembleSurrogate)
}


def make_surrogate(kind: str, spec: FeatureSpec, *, seed: int = 0, **params: Any) -> Surrogate:
    """A new, unfitted surrogate of ``kind`` (`SURROGATE_KINDS`)."""
    try:
        cls = SURROGATE_KINDS[kind]
    except KeyError:
        raise UsageError(f"unknown surrogate kind {kind!r}; choose one of {', '.join(SURROGATE_KINDS)}") from None
    return cls(spec, seed=seed, **params)


def load_surrogate(path: str | Path, expected_spec: FeatureSpec | None = None) -> Surrogate:
    """`Surrogate.load` of any kind."""
    return Surrogate.load(path, expected_spec=expected_spec)


def cells_frame(cells: Any):
    """Cells as a DataFrame (``transport``, ``split``, ``snr_db``)."""
    import pandas as pd

    t, s, q = as_cells(cells)
    return pd.DataFrame({"transport": t, "split": s, "snr_db": q})
