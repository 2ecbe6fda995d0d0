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

Persistence (`Surrogate.save` / `Surrogate.load`): ``<stem>.joblib`` holds the fitted sklearn
objects and the training data; ``<stem>.json`` holds the metadata (format, kind, seed, params,
feature spec, scaler, training size, library versions, SHA-256 of the joblib file). joblib files
are pickles: `load` checks the SHA-256 recorded in the metadata BEFORE unpickling and refuses a
mismatch. (This guards against corrupted or swapped model files; it is not a signature — a
party who can rewrite both files can make them agree. Load only files you wrote.)
"""
from __future__ import annotations

import abc
import json
import platform
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from splitrl.integrity import sha256_file as _sha256
from splitrl.surrogate.features import FeatureSpec, as_cells

__all__ = [
    "FORMAT", "SURROGATE_KINDS", "ExtraTreesSurrogate", "GaussianProcessSurrogate", "GradientBoostingSurrogate",
    "MLPEnsembleSurrogate", "Surrogate", "SurrogateLoadError", "load_surrogate", "make_surrogate", "surrogate_paths",
]

FORMAT = "splitrl-surrogate/1"


class SurrogateLoadError(ValueError):
    """A saved surrogate could not be loaded (missing, unreadable, corrupt, tampered, or wrong spec)."""


def surrogate_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<stem>.joblib, <stem>.json)`` for a stem, or for either of the two file names."""
    p = Path(path)
    if p.suffix in (".joblib", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".joblib"), p.with_name(p.name + ".json")


def _versions() -> dict[str, str]:
    import joblib
    import sklearn

    return {"sklearn": sklearn.__version__, "numpy": np.__version__, "joblib": joblib.__version__,
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
            raise ValueError(f"{self.kind}: unknown parameters {sorted(unknown)}; allowed {sorted(self.DEFAULTS)}")
        self.spec = spec
        self.seed = int(seed)
        self.params: dict[str, Any] = {"zero_at_full_split": True, **self.DEFAULTS, **params}
        self.X_train = np.zeros((0, spec.n_features))
        self.y_train = np.zeros(0)
        self.scaler_mean: np.ndarray | None = None
        self.scaler_scale: np.ndarray | None = None
        self.n_updates = 0
        self._state: Any = None  # fitted sklearn objects

    # --- data ---------------------------------------------------------------------------
    def features(self, X: Any) -> np.ndarray:
        """Encoded feature matrix of ``X`` (cells, or an already-encoded numeric matrix)."""
        if isinstance(X, np.ndarray) and X.dtype.kind in "fiu" and X.ndim == 2:
            if X.shape[1] != self.spec.n_features:
                raise ValueError(f"feature matrix has {X.shape[1]} columns, the spec has {self.spec.n_features}")
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
            raise ValueError(f"need at least 2 measurements to fit, got {len(y)}")
        self.X_train, self.y_train = F, y
        self.scaler_mean = F.mean(axis=0)
        sd = F.std(axis=0)
        self.scaler_scale = np.where(sd > 1e-12, sd, 1.0)
        with _one_thread():
            self._state = self._fit(self._scale(F), y, warm=False)
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
            raise ValueError(f"X has {len(F)} rows but y has {len(y)} values")
        if not np.isfinite(y).all():
            raise ValueError("y (log ppl ratios) must be finite")
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
        """Write ``<stem>.joblib`` and ``<stem>.json`` (see module doc); returns the JSON path."""
        import joblib

        if not self.is_fitted:
            raise RuntimeError("refusing to save an unfitted surrogate")
        jl, js = surrogate_paths(path)
        jl.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"state": self._state, "X_train": self.X_train, "y_train": self.y_train}, jl, compress=3)
        meta = self.metadata()
        meta["joblib_file"] = jl.name
        meta["joblib_sha256"] = _sha256(jl)
        js.write_text(json.dumps(meta, indent=1))
        return js

    @classmethod
    def load(cls, path: str | Path, expected_spec: FeatureSpec | None = None) -> "Surrogate":
        """Load a saved surrogate, verifying before unpickling.

        Raises `SurrogateLoadError` when the metadata is missing or unreadable, the joblib file is
        missing, its SHA-256 differs from the metadata's (never unpickled then), it cannot be
        unpickled, the kind is not ``cls``'s, or ``expected_spec`` differs from the saved spec.
        Warns when the scikit-learn version differs from the one that wrote the file.
        """
        import joblib
        import sklearn

        jl, js = surrogate_paths(path)
        if not js.is_file():
            raise SurrogateLoadError(f"no surrogate metadata at {js}")
        try:
            meta = json.loads(js.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SurrogateLoadError(f"unreadable surrogate metadata {js}: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SurrogateLoadError(f"{js} is not a {FORMAT} metadata file")
        kind = meta.get("kind")
        if kind not in SURROGATE_KINDS:
            raise SurrogateLoadError(f"{js}: unknown surrogate kind {kind!r}; known {sorted(SURROGATE_KINDS)}")
        target = SURROGATE_KINDS[kind]
        if cls is not Surrogate and target is not cls:
            raise SurrogateLoadError(f"{js} holds a {kind!r} surrogate, not {cls.kind!r}")
        try:
            spec = FeatureSpec.from_dict(meta["spec"])
        except (KeyError, TypeError, ValueError) as e:
            raise SurrogateLoadError(f"{js}: invalid feature spec: {e}") from None
        if expected_spec is not None and spec.fingerprint() != expected_spec.fingerprint():
            raise SurrogateLoadError(
                f"{js}: feature spec differs from the expected one in {spec.differences(expected_spec)}; "
                "refit the surrogate for this spec")
        if not jl.is_file():
            raise SurrogateLoadError(f"surrogate model file {jl} (named by {js.name}) is missing")
        digest = _sha256(jl)
        if digest != meta.get("joblib_sha256"):
            raise SurrogateLoadError(
                f"SHA-256 mismatch for {jl}: metadata says {meta.get('joblib_sha256')}, file is {digest}; "
                "refusing to unpickle a file that is not the one that was saved")
        saved = meta.get("versions", {}).get("sklearn")
        if saved and saved.split(".")[:2] != sklearn.__version__.split(".")[:2]:
            warnings.warn(f"{jl} was written with scikit-learn {saved}, running {sklearn.__version__}; "
                          "predictions may differ", UserWarning, stacklevel=2)
        try:
            blob = joblib.load(jl)
            state, X_train, y_train = blob["state"], blob["X_train"], blob["y_train"]
        except Exception as e:  # noqa: BLE001  (any unpickling failure is a corrupt file)
            raise SurrogateLoadError(f"corrupt surrogate model file {jl}: {type(e).__name__}: {e}") from None
        params = {k: v for k, v in meta.get("params", {}).items()}
        obj = target(spec, seed=int(meta.get("seed", 0)), **params)
        obj._state = state
        obj.X_train, obj.y_train = np.asarray(X_train, float), np.asarray(y_train, float)
        sc = meta.get("scaler")
        if sc is None:
            raise SurrogateLoadError(f"{js} has no scaler (was an unfitted surrogate saved?)")
        obj.scaler_mean, obj.scaler_scale = np.asarray(sc["mean"], float), np.asarray(sc["scale"], float)
        obj.n_updates = int(meta.get("n_updates", 0))
        if obj.scaler_mean.shape != (spec.n_features,) or obj.X_train.shape[1:] != (spec.n_features,):
            raise SurrogateLoadError(f"{js}: scaler/training data do not match the spec's {spec.n_features} features")
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
        raise ValueError(f"unknown surrogate kind {kind!r}; choose one of {', '.join(SURROGATE_KINDS)}") from None
    return cls(spec, seed=seed, **params)


def load_surrogate(path: str | Path, expected_spec: FeatureSpec | None = None) -> Surrogate:
    """`Surrogate.load` of any kind."""
    return Surrogate.load(path, expected_spec=expected_spec)


def cells_frame(cells: Any):
    """Cells as a DataFrame (``transport``, ``split``, ``snr_db``)."""
    import pandas as pd

    t, s, q = as_cells(cells)
    return pd.DataFrame({"transport": t, "split": s, "snr_db": q})
