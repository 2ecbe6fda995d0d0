"""How much of the prompt an eavesdropper or a curious edge recovers from the activations at each cut.

What crosses the link at split ``s`` (`splitrl.runtime.partition`): ``s = 0`` the token ids
themselves (recovery 1 by definition), ``1 <= s < L`` the hidden state after layer ``s``
(``[T, H]`` per request), ``s = L`` nothing (recovery 0 by definition). For every cut the attacker
is given paired (activation, token) data from *other* text — a probe-train part of WikiText-2 —
and learns an inversion probe; it is scored on a held-out part whose articles it never saw.

Two probes, both closed form (cheap, deterministic) on per-feature standardised activations:

* ``ridge_nn``: ridge regression ``h_s [H] -> input token embedding [H]``, then the nearest
  vocabulary embedding by cosine over the whole vocabulary (top-1 / top-5).
* ``lsq_classifier``: a linear least-squares classifier ``h_s -> one-hot`` over the ``K`` most
  frequent probe-train tokens (a token outside those ``K`` is never recovered).

Each probe's ridge strength is chosen on a validation slice of the probe-train windows; the
reported recovery per cut is that of the probe with the better validation top-1 (chosen without
looking at held-out text). The held-out 95% interval is a block bootstrap over held-out windows
(tokens in one window are correlated). The "most frequent token" baseline is the held-out rate
of the single most frequent probe-train token: what an attacker gets with no activations.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from splitrl.errors import UsageError
from splitrl.eval.corpus import load_wikitext2_test
from splitrl.models import load_model
from splitrl.plotting import pyplot, save_figure
from splitrl.stats import block_bootstrap_ci as bootstrap_blocks

__all__ = ["ProbeConfig", "split_articles", "partition_articles", "sample_windows", "collect_hidden",
           "Design", "RidgeNNProbe", "LsqClassifierProbe", "block_bootstrap_ci", "run_privacy_probe", "plot_privacy"]

# A WikiText-2 article starts with a level-1 heading line " = Title = " (sub-sections use "= =").
_TITLE = re.compile(r"^ = [^=].*[^=] = $")


@dataclass(frozen=True)
class ProbeConfig:
    """One privacy-probe measurement.

    Attributes:
        model: model name or path (`splitrl.models.load_model`).
        train_tokens: probe-train tokens (activation/token pairs the attacker learns from), >= 2 windows.
        heldout_tokens: held-out tokens scored (from articles disjoint from the probe-train ones).
        window: tokens per request window (positions 0..window-1, no BOS, like the perplexity windows).
        heldout_fraction: share of the corpus's articles put in the held-out part, in (0, 1).
        val_fraction: share of probe-train windows used to choose each probe's ridge strength, in (0, 1).
        ridge_grid: ridge strengths tried (relative to the number of samples; standardised features).
        classes: K, the most frequent probe-train tokens the least-squares classifier can name (>= 2).
        val_score_tokens: validation tokens (a seeded sample) on which the two probes' final fits are
            compared to choose the reported one (the whole-vocabulary search is the costly part).
        bootstrap: block-bootstrap resamples for the 95% interval (>= 100).
        batch_windows: windows run through the model at once.
        seed: article split, window choice and bootstrap.
        corpus_path: WikiText-2 test file (None: `splitrl.eval.corpus` default / $SPLITRL_WIKITEXT).
    """

    model: str = "smollm2-135m"
    train_tokens: int = 16384
    heldout_tokens: int = 4096
    window: int = 128
    heldout_fraction: float = 0.3
    val_fraction: float = 0.2
    ridge_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    classes: int = 4096
    val_score_tokens: int = 1024
    bootstrap: int = 2000
    batch_windows: int = 8
    seed: int = 0
    corpus_path: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 2:
            raise UsageError(f"window: must be an integer >= 2, got {self.window!r}")
        for name in ("train_tokens", "heldout_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 2 * self.window:
                raise UsageError(f"{name}: must be an integer >= 2 windows ({2 * self.window} tokens), got {v!r}")
        for name in ("heldout_fraction", "val_fraction"):
            v = getattr(self, name)
            if not 0.0 < float(v) < 1.0:
                raise UsageError(f"{name}: must be in (0, 1), got {v!r}")
        object.__setattr__(self, "ridge_grid", tuple(float(x) for x in self.ridge_grid))
        if not self.ridge_grid or not all(np.isfinite(x) and x > 0 for x in self.ridge_grid):
            raise UsageError(f"ridge_grid: must be positive finite numbers, got {list(self.ridge_grid)[:6]}")
        if not isinstance(self.classes, int) or self.classes < 2:
            raise UsageError(f"classes: must be an integer >= 2, got {self.classes!r}")
        if not isinstance(self.val_score_tokens, int) or self.val_score_tokens < 1:
            raise UsageError(f"val_score_tokens: must be an integer >= 1, got {self.val_score_tokens!r}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 100:
            raise UsageError(f"bootstrap: must be an integer >= 100, got {self.bootstrap!r}")
        if not isinstance(self.batch_windows, int) or self.batch_windows < 1:
            raise UsageError(f"batch_windows: must be an integer >= 1, got {self.batch_windows!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ridge_grid"] = list(self.ridge_grid)
        return d


# ---- held-out text --------------------------------------------------------------------------
def split_articles(text: str) -> list[str]:
    """The corpus cut into articles at each level-1 heading (text before the first one is dropped)."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if _TITLE.match(line)]
    if not starts:
        raise UsageError("corpus: no ' = Title = ' article headings found (is it WikiText-2 raw?)")
    bounds = [*starts, len(lines)]
    return ["\n".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]


def partition_articles(n_articles: int, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(probe-train article indices, held-out article indices): a seeded random, disjoint split."""
    if n_articles < 2:
        raise UsageError(f"corpus: needs >= 2 articles to hold some out, found {n_articles}")
    perm = np.random.default_rng([seed, 1]).permutation(n_articles)
    n_held = int(np.clip(round(heldout_fraction * n_articles), 1, n_articles - 1))
    return sorted(perm[n_held:].tolist()), sorted(perm[:n_held].tolist())


def sample_windows(ids: torch.Tensor, n_tokens: int, window: int, what: str) -> torch.Tensor:
    """``n_tokens // window`` non-overlapping windows ``[n, window]`` spread evenly over ``ids [N]``."""
    n = n_tokens // window
    if ids.numel() < n * window:
        raise UsageError(f"{what}: asks for {n * window} tokens but its articles hold {ids.numel()}; ask for fewer")
    starts = np.linspace(0, ids.numel() - window, n).astype(np.int64) if n > 1 else np.zeros(1, np.int64)
    return torch.stack([ids[s:s + window] for s in starts.tolist()])


@torch.inference_mode()
def collect_hidden(view, windows: torch.Tensor, batch_windows: int = 8, *, progress: bool = False,
                   desc: str = "activations") -> torch.Tensor:
    """Hidden states at every cut in one pass: ``[L + 1, n * T, H]`` (index ``c``: entering layer ``c``;
    0 is the embeddings output, ``L`` the last layer's output before the final norm)."""
    n, T = windows.shape
    L, H = view.num_layers, view.hidden_size
    out = torch.empty(L + 1, n * T, H, dtype=torch.float32)
    for b in tqdm(range(0, n, batch_windows), desc=desc, unit="batch", disable=not progress):
        ids = windows[b:b + batch_windows].to(view.device)  # [B, T]
        B = ids.shape[0]
        pos = torch.arange(T, device=ids.device).unsqueeze(0).expand(B, T)  # [B, T]
        hidden = view.embed(ids, pos)  # [B, T, H]
        rows = slice(b * T, (b + B) * T)
        out[0, rows] = hidden.reshape(B * T, H).float()
        for layer in range(L):
            hidden = view.run_layers(hidden, layer, layer + 1, pos)  # [B, T, H]
            out[layer + 1, rows] = hidden.reshape(B * T, H).float()
    return out


# ---- probes ---------------------------------------------------------------------------------
class _Standardiser:
    """Per-feature mean/std of the probe-train activations (deep layers have huge outlier features)."""

    def __init__(self, x: torch.Tensor) -> None:  # x [N, H]
        x64 = x.double()
        self.mean = x64.mean(0)
        self.std = x64.std(0).clamp_min(1e-6)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() - self.mean) / self.std


class Design:
    """One cut's probe-train activations, standardised, with XᵀX — computed once for the rows that
    fit during the ridge-strength search (``~val``) and once for all rows (the final fit); both
    probes share them."""

    def __init__(self, x: torch.Tensor, val: torch.Tensor) -> None:  # x [N, H], val [N] bool
        self.x, self.val = x, val
        self.parts = {}
        for name, rows in (("fit", ~val), ("all", torch.ones_like(val))):
            st = _Standardiser(x[rows])
            xs = st(x[rows])  # [n, H] float64
            self.parts[name] = (rows, st, xs, xs.T @ xs)


def _ridge_solve(gram: torch.Tensor, xty: torch.Tensor, lam: float, n: int) -> torch.Tensor:
    """(XᵀX + λ n I)⁻¹ Xᵀ Y in float64 via Cholesky (features standardised, so one λ fits all)."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    chol = torch.linalg.cholesky(gram + lam * n * eye)
    return torch.cholesky_solve(xty, chol)


class RidgeNNProbe:
    """Ridge ``h -> token embedding``, then the nearest vocabulary embedding by cosine."""

    name = "ridge_nn"

    def __init__(self, embeddings: torch.Tensor) -> None:  # [V, H]
        self.emb = embeddings.float()
        self.emb_unit = torch.nn.functional.normalize(self.emb, dim=1)  # [V, H]

    def fit(self, d: Design, tokens: torch.Tensor, grid: Sequence[float], val_sample: torch.Tensor) -> dict:
        """Fit on the cut's activations / ``tokens [N]``; choose λ by mean cosine error on the
        validation rows; ``val_sample`` (row indices) scores the final fit for choosing a probe."""
        y = self.emb[tokens].double()  # [N, H]
        x, val = d.x, d.val

        def solve(part: str, lam: float):
            rows, st, xs, gram = d.parts[part]
            ym = y[rows].mean(0)
            w = _ridge_solve(gram, xs.T @ (y[rows] - ym), lam, xs.shape[0])
            return st, w, ym

        losses = []
        for lam in grid:
            st, w, ym = solve("fit", lam)
            pred = st(x[val]) @ w + ym  # [Nv, H]
            losses.append(float((1 - torch.nn.functional.cosine_similarity(pred, y[val], dim=1)).mean()))
        self.lam = float(grid[int(np.argmin(losses))])
        self.st, self.w, self.ym = solve("all", self.lam)
        self.val_top1 = float(self.rank(x[val_sample], tokens[val_sample])[0].mean())
        return {"lambda": self.lam, "val_cosine_error": dict(zip(map(str, grid), losses))}

    @torch.inference_mode()
    def rank(self, x: torch.Tensor, tokens: torch.Tensor, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(top-1 correct [N] bool, top-5 correct [N] bool)."""
        top1, top5 = [], []
        for i in range(0, x.shape[0], chunk):
            pred = (self.st(x[i:i + chunk]) @ self.w + self.ym).float()  # [c, H]
            sims = torch.nn.functional.normalize(pred, dim=1) @ self.emb_unit.T  # [c, V]
            best = sims.topk(5, dim=1).indices  # [c, 5]
            hit = best == tokens[i:i + chunk, None]
            top1.append(hit[:, 0].numpy())
            top5.append(hit.any(1).numpy())
        return np.concatenate(top1), np.concatenate(top5)


class LsqClassifierProbe:
    """Least-squares linear classifier ``h -> one-hot`` over the K most frequent probe-train tokens."""

    name = "lsq_classifier"

    def __init__(self, classes: torch.Tensor) -> None:  # [K] token ids, most frequent first
        self.classes = classes

    def _targets(self, tokens: torch.Tensor) -> torch.Tensor:
        lut = torch.full((max(int(tokens.max()), int(self.classes.max())) + 1,), -1, dtype=torch.long)
        lut[self.classes] = torch.arange(len(self.classes))
        return lut[tokens]

    def _xty(self, xs: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        # Xᵀ Y for one-hot Y without building Y [N, K]: add each row of X to its class's column.
        keep = cls >= 0
        xty = torch.zeros(len(self.classes), xs.shape[1], dtype=xs.dtype)
        xty.index_add_(0, cls[keep], xs[keep])
        return xty.T  # [H, K]

    def fit(self, d: Design, tokens: torch.Tensor, grid: Sequence[float], val_sample: torch.Tensor) -> dict:
        """Fit on the cut's activations / ``tokens [N]``; choose λ by top-1 on the validation rows."""
        cls = self._targets(tokens)
        x, val = d.x, d.val

        def solve(part: str, lam: float):
            rows, st, xs, gram = d.parts[part]
            prior = torch.bincount(cls[rows][cls[rows] >= 0], minlength=len(self.classes)).double() / xs.shape[0]
            # xs is centred on these rows, so Xᵀ(Y - prior) = XᵀY.
            w = _ridge_solve(gram, self._xty(xs, cls[rows]), lam, xs.shape[0])
            return st, w.float(), prior.float()

        accs = []
        for lam in grid:
            self.st, self.w, self.prior = solve("fit", lam)
            accs.append(float(self.rank(x[val], tokens[val])[0].mean()))
        self.lam = float(grid[int(np.argmax(accs))])
        self.st, self.w, self.prior = solve("all", self.lam)
        self.val_top1 = float(self.rank(x[val_sample], tokens[val_sample])[0].mean())
        return {"lambda": self.lam, "val_top1": dict(zip(map(str, grid), accs))}

    @torch.inference_mode()
    def rank(self, x: torch.Tensor, tokens: torch.Tensor, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        top1, top5 = [], []
        for i in range(0, x.shape[0], chunk):
            scores = self.st(x[i:i + chunk]).float() @ self.w + self.prior  # [c, K]
            best = self.classes[scores.topk(min(5, len(self.classes)), dim=1).indices]  # [c, 5] token ids
            hit = best == tokens[i:i + chunk, None]
            top1.append(hit[:, 0].numpy())
            top5.append(hit.any(1).numpy())
        return np.concatenate(top1), np.concatenate(top5)


def block_bootstrap_ci(correct: np.ndarray, window: int, resamples: int, seed: int) -> tuple[float, float]:
    """95% interval of the mean of ``correct [n * window]``, resampling whole windows (the probe's
    windows are independent text samples: `splitrl.stats.block_bootstrap_ci` with fixed blocks)."""
    return bootstrap_blocks(correct, window, resamples, np.random.default_rng([seed, 2]), overlapping=False)


# ---- the measurement ------------------------------------------------------------------------
@dataclass
class _Part:
    windows: torch.Tensor  # [n, T] token ids
    articles: list[int] = field(default_factory=list)


def _parts(cfg: ProbeConfig, tokenizer) -> tuple[_Part, _Part, dict]:
    articles = split_articles(load_wikitext2_test(cfg.corpus_path))
    train_idx, held_idx = partition_articles(len(articles), cfg.heldout_fraction, cfg.seed)

    def ids_of(idx: list[int]) -> torch.Tensor:
        text = "\n".join(articles[i] for i in idx)
        return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)

    train_ids, held_ids = ids_of(train_idx), ids_of(held_idx)
    info = {"articles": len(articles), "train_articles": len(train_idx), "heldout_articles": len(held_idx),
            "train_part_tokens": int(train_ids.numel()), "heldout_part_tokens": int(held_ids.numel())}
    train = _Part(sample_windows(train_ids, cfg.train_tokens, cfg.window, "train_tokens"), train_idx)
    held = _Part(sample_windows(held_ids, cfg.heldout_tokens, cfg.window, "heldout_tokens"), held_idx)
    return train, held, info


_DEFINITION = (
    "top1_recovery[s]: share of held-out prompt tokens an attacker holding what crosses the link at split s "
    "names exactly. s=0: token ids cross (1 by definition); 1<=s<L: the hidden state after layer s, attacked "
    "with the probe whose probe-train validation top-1 is higher; s=L: nothing crosses (0 by definition). "
    "probes[*] hold each probe's measured held-out numbers at every cut index (index s = the activations "
    "entering layer s; index 0 the embeddings output, index L the last layer's output).")


@dataclass
class _Targets:
    """What the attacker aims at, from probe-train counts: the classifier's classes, the frequent-token baseline."""

    classes: torch.Tensor  # [K] token ids, most frequent first
    frequent: int
    baseline: float  # held-out share of the most frequent probe-train token


def _validation_mask(n_win: int, window: int, val_fraction: float) -> tuple[torch.Tensor, int]:
    """(mask [n_win * window] of the probe-train tokens held back for choosing ridge strengths, windows held back)."""
    n_val = max(1, int(round(val_fraction * n_win)))
    val = torch.zeros(n_win, window, dtype=torch.bool)
    val[n_win - n_val:] = True  # the last windows (their own stretch of the probe-train articles)
    return val.reshape(-1), n_val


def _targets(y_train: torch.Tensor, y_held: torch.Tensor, vocab_size: int, classes: int) -> _Targets:
    """The ``classes`` most frequent probe-train tokens (stable order) and the most-frequent-token baseline."""
    counts = torch.bincount(y_train, minlength=vocab_size)
    order = torch.argsort(counts, descending=True, stable=True)
    frequent = int(order[0])
    baseline = float((y_held == frequent).double().mean())
    return _Targets(order[: min(classes, int((counts > 0).sum()))], frequent, baseline)


def _val_sample(val: torch.Tensor, seed: int, n: int) -> torch.Tensor:
    """A seeded sample of ``n`` validation rows, in row order, on which the probes' final fits are compared."""
    val_rows = torch.nonzero(val).reshape(-1)
    pick = torch.randperm(len(val_rows), generator=torch.Generator().manual_seed(seed))[:n]
    return val_rows[pick.sort().values]


def _fit_probes_per_cut(cfg: ProbeConfig, L: int, h_train: torch.Tensor, h_held: torch.Tensor,
                        y_train: torch.Tensor, y_held: torch.Tensor, val: torch.Tensor, val_sample: torch.Tensor,
                        emb: torch.Tensor, classes: torch.Tensor,
                        progress: bool) -> tuple[dict[str, dict[str, list]], list[str]]:
    """(each probe's held-out numbers at every cut, the probe chosen at each cut by its validation top-1)."""
    probes: dict[str, dict[str, list]] = {p: {"top1": [], "top5": [], "top1_ci95": [], "val_top1": [], "fit": []}
                                          for p in ("ridge_nn", "lsq_classifier")}
    chosen: list[str] = []
    for s in tqdm(range(L + 1), desc="probes per cut", unit="cut", disable=not progress):
        results = {}
        design = Design(h_train[s], val)
        for probe in (RidgeNNProbe(emb), LsqClassifierProbe(classes)):
            fit = probe.fit(design, y_train, cfg.ridge_grid, val_sample)
            c1, c5 = probe.rank(h_held[s], y_held)
            rec = probes[probe.name]
            rec["top1"].append(float(c1.mean()))
            rec["top5"].append(float(c5.mean()))
            rec["top1_ci95"].append(list(block_bootstrap_ci(c1, cfg.window, cfg.bootstrap, cfg.seed)))
            rec["val_top1"].append(probe.val_top1)
            rec["fit"].append(fit)
            results[probe.name] = probe.val_top1
        chosen.append(max(results, key=lambda k: (results[k], k == "ridge_nn")))  # a tie goes to ridge_nn
    return probes, chosen


def _reported_recovery(probes: dict[str, dict[str, list]], chosen: list[str], L: int) -> tuple[list, list, list]:
    """(top-1, top-5, top-1 95% interval) per split: the chosen probe's, but fixed by definition at s = 0 and s = L."""
    top1, top5, ci = [], [], []
    for s, best in enumerate(chosen):
        if s == 0:  # the runtime sends token ids at s = 0: the edge reads the prompt
            top1.append(1.0), top5.append(1.0), ci.append([1.0, 1.0])
        elif s == L:  # everything runs on the UE: nothing crosses
            top1.append(0.0), top5.append(0.0), ci.append([0.0, 0.0])
        else:
            top1.append(probes[best]["top1"][s]), top5.append(probes[best]["top5"][s])
            ci.append(probes[best]["top1_ci95"][s])
    return top1, top5, ci


def run_privacy_probe(cfg: ProbeConfig, *, loaded=None, progress: bool = True) -> dict[str, Any]:
    """Measure token recovery per cut (see module docstring). Returns a JSON-ready dict."""
    t0 = time.perf_counter()
    loaded = loaded or load_model(cfg.model)
    view = loaded.view
    L = view.num_layers
    train, held, info = _parts(cfg, loaded.tokenizer)
    h_train = collect_hidden(view, train.windows, cfg.batch_windows, progress=progress, desc="probe-train activations")
    h_held = collect_hidden(view, held.windows, cfg.batch_windows, progress=progress, desc="held-out activations")
    y_train, y_held = train.windows.reshape(-1), held.windows.reshape(-1)  # [N]
    val, n_val = _validation_mask(train.windows.shape[0], cfg.window, cfg.val_fraction)
    targets = _targets(y_train, y_held, view.vocab_size, cfg.classes)
    emb = view.embed_tokens.weight.detach()  # [V, H]: the attacker knows the public model's embeddings
    val_sample = _val_sample(val, cfg.seed, cfg.val_score_tokens)
    probes, chosen = _fit_probes_per_cut(cfg, L, h_train, h_held, y_train, y_held, val, val_sample, emb,
                                         targets.classes, progress)
    top1, top5, ci = _reported_recovery(probes, chosen, L)
    return {
        "model": cfg.model,
        "num_layers": L,
        "hidden_size": view.hidden_size,
        "vocab_size": view.vocab_size,
        "splits": list(range(L + 1)),
        "top1_recovery": top1,
        "top1_ci95": ci,
        "top5_recovery": top5,
        "frequent_token_baseline": targets.baseline,
        "frequent_token_id": targets.frequent,
        "frequent_token": loaded.tokenizer.decode([targets.frequent]) if hasattr(loaded.tokenizer, "decode") else None,
        "chosen_probe": chosen,
        "probes": probes,
        "definition": _DEFINITION,
        "settings": cfg.to_dict(),
        "train_tokens": int(y_train.numel()),
        "heldout_tokens": int(y_held.numel()),
        "train_windows": int(train.windows.shape[0]),
        "heldout_windows": int(held.windows.shape[0]),
        "val_windows": n_val,
        "classifier_classes": int(len(targets.classes)),
        "heldout_in_classes": float(torch.isin(y_held, targets.classes).double().mean()),
        "train_article_ids": train.articles,
        "heldout_article_ids": held.articles,
        **info,
        "seconds": time.perf_counter() - t0,
    }


def plot_privacy(result: dict, out) -> None:
    """Top-1 (with 95% interval) and top-5 recovery vs split, both probes and the frequent-token baseline."""
    plt = pyplot()

    s = np.asarray(result["splits"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ci = np.asarray(result["top1_ci95"])
    ax.fill_between(s, ci[:, 0], ci[:, 1], color="C0", alpha=0.25, lw=0)
    ax.plot(s, result["top1_recovery"], "o-", color="C0", ms=3, label="top-1 recovery (what crosses; 95% CI)")
    ax.plot(s, result["top5_recovery"], "s--", color="C1", ms=3, label="top-5 recovery")
    for name, style in (("ridge_nn", ":"), ("lsq_classifier", "-.")):
        ax.plot(s, result["probes"][name]["top1"], style, color="gray", lw=1, label=f"probe {name} top-1")
    ax.axhline(result["frequent_token_baseline"], color="k", ls="--", lw=1,
               label=f"most frequent token baseline ({result['frequent_token_baseline']:.3f})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("split s (layers on the UE; 0: token ids cross, L: nothing crosses)")
    ax.set_ylabel("share of held-out tokens recovered")
    ax.set_title(f"{result['model']}: prompt recovery from what crosses each cut\n"
                 f"({result['heldout_tokens']} held-out WikiText-2 tokens, {result['train_tokens']} probe-train)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    save_figure(fig, out, dpi=110)
