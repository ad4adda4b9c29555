"""Stage ``evaluate``: the DAE against identity, static EQ and static EQ + gain.

For each group, every test segment goes through the same metric code for every
method (``dsp/metrics.py``): spectral MAE and log-spectral distance on the
magnitude frames of the test cache, multi-resolution STFT distance, SI-SDR with
the raw phase (the paper's reconstruction) and with the stem's own phase (an
oracle ablation: how much of the error is phase), and mixing-feature
differences on the waveforms rebuilt by inverse STFT. Spreads are over test
segments. A ground-truth chain check (``chaincheck.py``) runs where the demo
corpus left ``<Song>_CHAINS.json``.

Champion: decided on **validation songs only**, never on the test songs: the
group's validation songs are the ones training held out of the training songs
(``data.split_songs`` with the group's ``training.val_fraction`` and seed);
their unshifted segments go through the same metric code. A registered model
version gets the alias ``champion`` only when its mean
``evaluation.champion_metric`` on those songs is lower than that of every
baseline (and it gave no non-finite output, a safety exclusion); otherwise the
previous champion keeps the alias and the report says why. The static EQ is
fitted on the training songs *without* the validation songs (the data the DAE
was trained on), so it is a fair opponent on them; its least-squares vs
weighted-median choice is made inside those training songs
(``baselines.fit_static_eq``). Changing the test songs changes no decision
(``tests/test_selection.py``).

Outputs: ``reports/metrics.json``, ``reports/evaluation.md``,
``reports/plots/per_bin_error.csv``, ``reports/figures/`` (PNGs and
``per_bin_error_by_group.csv``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdae import baselines, chaincheck, plots
from stemdae.config import Params, Paths
from stemdae.dsp import metrics as M
from stemdae.dsp.stft import istft, magnitude_phase
from stemdae.errors import ModelError, StemdaeError
from stemdae.io import write_text
from stemdae.summary import Summary
from stemdae.writeguard import writing

log = logging.getLogger(__name__)

METHODS = ("dae", "identity", "static_eq", "static_eq_gain")
BASELINES = METHODS[1:]
CORE = ("spectral_mae", "lsd_db", "mrstft", "si_sdr", "si_sdr_oracle", "si_sdr_phase_gap")
HIGHER_IS_BETTER = {"si_sdr", "si_sdr_oracle"}


@dataclass
class GroupResult:
    """What one group's evaluation produced (rows: one per segment and method)."""

    group: str
    status: str = "not evaluated"
    messages: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    per_bin_sum: dict[str, np.ndarray] = field(default_factory=dict)
    per_bin_frames: dict[str, int] = field(default_factory=dict)
    chain_records: list[dict[str, Any]] = field(default_factory=list)
    eq: baselines.StaticEQ | None = None
    dae_nonfinite: int = 0
    champion: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    # The same evaluation on the validation songs (carved from the training songs): decides the champion.
    validation: GroupResult | None = None
    validation_songs: list[str] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def has(self, method: str) -> bool:
        return any(r["method"] == method for r in self.rows)


# ------------------------------------------------------------------ loading


def _open(path: Path, n_bins: int):
    from stemdae.features import open_cache

    return open_cache(path, n_bins=n_bins)


def _load_predictor(model_dir: Path, params: Params):
    """The group's model; its saved front end must be the one the test features were made with."""
    from stemdae.frontend import FrontEnd
    from stemdae.predictor import load_predictor

    predictor = load_predictor(model_dir)
    want = FrontEnd.from_params(params)
    if predictor.frontend != want:
        raise ModelError(f"{model_dir}/model.pt: trained with front end {predictor.frontend}, but the features "
                         f"are made with {want}; retrain (`dvc repro`)")
    return predictor


def _pair_meta(paths: Paths) -> pd.DataFrame:
    """``pair_id -> stem_id`` (for the chain check) from work/pairs.csv, when present."""
    try:
        return pd.read_csv(paths.pairs_csv, dtype=str).set_index("pair_id")
    except (OSError, ValueError, KeyError):
        return pd.DataFrame()


# ------------------------------------------------------------------ one segment


def _outputs(raw_mag: np.ndarray, stem_mag: np.ndarray, predictor: Any, eq: baselines.StaticEQ | None,
             *, sr: int, n_fft: int) -> dict[str, np.ndarray]:
    outs = {"identity": baselines.identity(raw_mag)}
    if predictor is not None:
        outs["dae"] = np.asarray(predictor.predict_magnitude(np.array(raw_mag, dtype=np.float32)))
    if eq is not None:
        outs["static_eq"] = eq.apply(raw_mag)
        outs["static_eq_gain"] = baselines.static_eq_gain(raw_mag, eq, stem_mag, sr=sr, n_fft=n_fft)
    return outs


def _segment_metrics(out_mag: np.ndarray, stem_mag: np.ndarray, raw_phase: np.ndarray, stem_phase: np.ndarray,
                     stem_wave: np.ndarray, stem_feats: dict[str, float], params: Params,
                     wave: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Every metric of one method on one segment; ``wave``: the method's own waveform (a time-domain
    model such as the chain), else ``out_mag`` on the raw's phase."""
    f, ev, sr = params.features, params.evaluation, params.segments.sr
    n = stem_wave.size
    if wave is None:
        wave = istft(out_mag.T, raw_phase.T, n_fft=f.n_fft, hop=f.hop, length=n)
    oracle = istft(out_mag.T, stem_phase.T, n_fft=f.n_fft, hop=f.hop, length=n)
    m = {
        "spectral_mae": M.spectral_mae(out_mag, stem_mag),
        "lsd_db": M.log_spectral_distance(out_mag, stem_mag),
        "mrstft": M.mrstft_distance(wave, stem_wave, ffts=ev.mrstft_ffts),
        "si_sdr": M.si_sdr(wave, stem_wave),
        "si_sdr_oracle": M.si_sdr(oracle, stem_wave),
    }
    m["si_sdr_phase_gap"] = m["si_sdr_oracle"] - m["si_sdr"]
    feats = M.mixing_features(wave, sr=sr, n_fft=f.n_fft, hop=f.hop, band_edges_hz=ev.band_edges_hz)
    m.update(M.feature_differences(feats, stem_feats))
    return m, wave


#: A time-domain method evaluated beside the DAE: the raw segment's waveform -> the output waveform (same length).
WaveMethod = Callable[[np.ndarray], np.ndarray]


def _evaluate_segment(res: GroupResult, row: pd.Series, cache: Any, predictor: Any, chain: list | None,
                      params: Params, paths: Paths, extra: dict[str, WaveMethod] | None = None) -> None:
    f, sr = params.features, params.segments.sr
    pid = str(row["pair_id"])
    seg_path = paths.segments_dir / f"{pid}.npy"
    try:
        seg = np.load(seg_path, mmap_mode="r")
    except (OSError, ValueError) as err:
        res.messages.append(f"{seg_path}: cannot read the segment ({err}); pair skipped")
        return
    a, n = int(row["row_start"]), int(row["n_frames"])
    if seg.ndim != 2 or seg.shape[0] != 2 or 1 + seg.shape[1] // f.hop != n:
        res.messages.append(f"{seg_path}: shape {seg.shape}, expected (2, n) matching {n} cached frames; "
                            "pair skipped")
        return
    raw_mag, stem_mag = np.asarray(cache.raw[a:a + n], np.float32), np.asarray(cache.stem[a:a + n], np.float32)
    raw_wave, stem_wave = np.asarray(seg[0], np.float32), np.asarray(seg[1], np.float32)
    if not (np.isfinite(raw_wave).all() and np.isfinite(stem_wave).all() and np.any(stem_wave)):
        res.messages.append(f"{seg_path}: non-finite samples or a silent stem; pair skipped")
        return
    if cache.raw_phase is not None:
        raw_phase = np.asarray(cache.raw_phase[a:a + n], np.float32)
    else:
        raw_phase = magnitude_phase(raw_wave, n_fft=f.n_fft, hop=f.hop)[1].T
    stem_phase = magnitude_phase(stem_wave, n_fft=f.n_fft, hop=f.hop)[1].T
    ev = params.evaluation
    stem_feats = M.mixing_features(stem_wave, sr=sr, n_fft=f.n_fft, hop=f.hop, band_edges_hz=ev.band_edges_hz)
    try:
        outs = _outputs(raw_mag, stem_mag, predictor, res.eq, sr=sr, n_fft=f.n_fft)
    except Exception as err:  # a model that fails on one input must not hide the baselines
        res.messages.append(f"{pid}: the DAE failed ({type(err).__name__}: {err}); DAE skipped for this pair")
        outs = _outputs(raw_mag, stem_mag, None, res.eq, sr=sr, n_fft=f.n_fft)
    waves: dict[str, np.ndarray] = {}
    for method, fn in (extra or {}).items():  # e.g. the chain model, rendered on the raw's waveform
        try:
            waves[method] = np.asarray(fn(raw_wave), np.float32).reshape(-1)[:raw_wave.size]
            outs[method] = magnitude_phase(waves[method], n_fft=f.n_fft, hop=f.hop)[0].T
        except Exception as err:  # one failing method must not hide the others
            res.messages.append(f"{pid}: {method} failed ({type(err).__name__}: {err}); skipped for this pair")
    if len(res.examples) < params.evaluation.n_examples:
        res.examples.append({"pair_id": pid, "raw": raw_mag, "stem": stem_mag,
                             **{m: o for m, o in outs.items() if m in ("dae", "static_eq_gain")}})
    for method, out in outs.items():
        if out.shape != stem_mag.shape or not np.isfinite(out).all():
            bad = int(out.size - np.isfinite(out).sum()) if out.shape == stem_mag.shape else out.size
            res.messages.append(f"{pid}: {method} output has {bad} non-finite values or shape {out.shape} "
                                f"(expected {stem_mag.shape}); excluded for this pair")
            if method == "dae":
                res.dae_nonfinite += 1
            continue
        m, wave = _segment_metrics(out, stem_mag, raw_phase, stem_phase, stem_wave, stem_feats, params,
                                   waves.get(method))
        res.rows.append({"group": res.group, "pair_id": pid, "song": str(row["song"]),
                         "instrument": str(row["instrument"]), "method": method, **m})
        res.per_bin_sum[method] = res.per_bin_sum.get(method, 0) + np.abs(out - stem_mag).sum(axis=0)
        res.per_bin_frames[method] = res.per_bin_frames.get(method, 0) + n
        if chain is not None:
            cm = chaincheck.chain_measures(raw_wave, stem_wave, wave, sr=sr, hop=f.hop)
            res.chain_records.append({"group": res.group, "pair_id": pid, "method": method,
                                      "effects": chaincheck.effect_types(chain), **cm})


# ------------------------------------------------------------------ one group


def evaluate_group(group: str, params: Params, paths: Paths, *, model_dir: Path | None = None,
                   extra: dict[str, WaveMethod] | None = None) -> GroupResult:
    """Evaluate one group's DAE (``model_dir``, default ``models/<group>``) and the baselines on its
    test segments, and on its validation songs; never raises for bad input.

    ``extra``: more methods, each a function of the raw segment's waveform (``stemdae chain evaluate``
    puts the chain models here), scored with the same metrics on the same segments."""
    res = GroupResult(group)
    test_dir = paths.features_group("test", group)
    try:
        cache = _open(test_dir, params.features.n_bins)
    except (StemdaeError, OSError, ValueError) as err:
        res.status = "no test data"
        res.messages.append(f"{test_dir}: cannot open the test cache ({err})")
        return res
    index = cache.index
    if "shift_cents" in index:
        index = index[index["shift_cents"].astype(float) == 0]
    if len(index) == 0:
        res.status = "empty test split"
        res.messages.append(f"{test_dir}: the test split of {group!r} has no segments")
        return res
    train_dir = paths.features_group("train", group)
    tcache = None
    try:
        tcache = _open(train_dir, params.features.n_bins)
        res.validation_songs = validation_songs(tcache.index, params, group)
        fit_index = tcache.index[~tcache.index["song"].astype(str).isin(res.validation_songs)]
        res.eq = baselines.fit_static_eq(tcache.raw, tcache.stem, fit_index)
    except (StemdaeError, OSError, ValueError) as err:
        res.messages.append(f"{train_dir}: static EQ baselines not fitted ({err})")
    predictor = None
    model_dir = Path(model_dir or paths.model_dir(group))
    try:
        predictor = _load_predictor(model_dir, params)
    except Exception as err:  # missing files, a torch state-dict mismatch, ...: all mean "no model"
        res.messages.append(f"{model_dir}: no usable model ({type(err).__name__}: {err}); "
                            "only the baselines are evaluated")
    if tcache is not None and res.validation_songs:
        res.validation = GroupResult(group, eq=res.eq)
        vindex = tcache.index[tcache.index["song"].astype(str).isin(res.validation_songs)
                              & (tcache.index["shift_cents"].astype(float) == 0)]
        for _, row in vindex.iterrows():
            _evaluate_segment(res.validation, row, tcache, predictor, None, params, paths, extra)
        res.validation.examples.clear()
    meta = _pair_meta(paths)
    corpus_root = paths.corpus_root(params.corpus)
    chains_by_song: dict[str, Any] = {}
    for _, row in index.iterrows():
        song = str(row["song"])
        if song not in chains_by_song:
            chains_by_song[song] = chaincheck.load_chains(corpus_root, song)
        stem_id = meta["stem_id"].get(str(row["pair_id"])) if "stem_id" in meta else None
        chain = chaincheck.chain_for_stem(chains_by_song[song], stem_id) if stem_id is not None else None
        _evaluate_segment(res, row, cache, predictor, chain, params, paths, extra)
    if res.dae_nonfinite:
        res.messages.append(f"the DAE gave non-finite output on {res.dae_nonfinite} segment(s): "
                            "not eligible for champion")
    res.status = "evaluated" if res.has("dae") else ("baselines only" if res.rows else "no segment evaluated")
    return res


def validation_songs(index: pd.DataFrame, params: Params, group: str) -> list[str]:
    """The songs training held out of ``index`` (a training cache's) for validation: the same draw as ``data.py``."""
    from stemdae.data import split_songs  # level 5 like this module; lazy: Lightning is only needed here

    t = params.training_for(group)
    return split_songs(index, val_fraction=t.val_fraction, seed=t.seed)[1]


def decide_champion(res: GroupResult, params: Params) -> str:
    """``"yes: ..."`` / ``"no: ..."``: the champion rule applied to the validation songs, never the test songs."""
    if not res.has("dae"):
        return f"no: no DAE output was evaluated ({res.status})"
    if res.dae_nonfinite:
        return f"no: the DAE gave non-finite output on {res.dae_nonfinite} test segment(s)"
    v = res.validation
    if v is None or not v.rows:
        return "no: no validation songs to decide on (the test songs are never used for this decision)"
    ok, why = beats_every_baseline(v, summary_table(v, params.evaluation.confidence), params.evaluation.champion_metric)
    return ("yes: " if ok else "no: ") + f"on {len(res.validation_songs)} validation song(s), " + why


# ------------------------------------------------------------------ aggregation


def summary_table(res: GroupResult, confidence: float) -> dict[str, dict[str, dict[str, float]]]:
    """``method -> metric -> mean_ci(...)`` over the group's segments."""
    df = res.table
    out: dict[str, dict[str, dict[str, float]]] = {}
    if df.empty:
        return out
    metric_cols = [c for c in df.columns if c not in ("group", "pair_id", "song", "instrument", "method")]
    for method, sub in df.groupby("method"):
        out[str(method)] = {c: M.mean_ci(sub[c].to_numpy(), confidence=confidence) for c in metric_cols}
    return out


def compare(stats: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """DAE vs each baseline: ``dae/baseline`` for lower-better metrics, ``dae - baseline`` (dB) for SI-SDR."""
    out: dict[str, dict[str, float]] = {}
    if "dae" not in stats:
        return out
    for b in BASELINES:
        if b not in stats:
            continue
        d: dict[str, float] = {}
        for metric, s in stats["dae"].items():
            if metric == "si_sdr_phase_gap" or metric not in stats[b]:
                continue
            x, y = s["mean"], stats[b][metric]["mean"]
            if metric in HIGHER_IS_BETTER:
                d[metric] = x - y
            elif y > 0:
                d[metric] = x / y
        out[b] = d
    return out


def losses(ratios: dict[str, dict[str, float]]) -> list[str]:
    """Metrics on which the DAE is worse than a baseline, as ``metric vs baseline``."""
    lost = []
    for b, d in ratios.items():
        for metric, v in d.items():
            if (metric in HIGHER_IS_BETTER and v < 0) or (metric not in HIGHER_IS_BETTER and v > 1):
                lost.append(f"{metric} vs {b}")
    return lost


def beats_every_baseline(res: GroupResult, stats: dict, metric: str) -> tuple[bool, str]:
    """The champion rule; returns (decision, reason)."""
    if "dae" not in stats:
        return False, "no DAE output was evaluated"
    if res.dae_nonfinite:
        return False, f"the DAE gave non-finite output on {res.dae_nonfinite} segment(s)"
    missing = [b for b in BASELINES if b not in stats]
    if missing:
        return False, f"baseline(s) {', '.join(missing)} could not be evaluated, so the rule cannot be checked"
    dae = stats["dae"][metric]["mean"]
    worse = [f"{b} ({stats[b][metric]['mean']:.4g})" for b in BASELINES if not dae < stats[b][metric]["mean"]]
    if worse:
        return False, f"DAE {metric} {dae:.4g} does not beat " + ", ".join(worse)
    best = min(stats[b][metric]["mean"] for b in BASELINES)
    return True, f"DAE {metric} {dae:.4g} < best baseline {best:.4g}"


def metrics_json(results: list[GroupResult], confidence: float) -> dict[str, Any]:
    """Nested ``group -> method -> metric -> mean`` plus ratios, counts and the champion flag (numbers only)."""
    out: dict[str, Any] = {}
    for res in results:
        stats = summary_table(res, confidence)
        g: dict[str, Any] = {"n_segments": int(res.table["pair_id"].nunique()) if res.rows else 0}
        for method, ms in stats.items():
            g[method] = {k: v["mean"] for k, v in ms.items() if np.isfinite(v["mean"])}
        for b, d in compare(stats).items():
            g[f"dae_vs_{b}"] = {k: v for k, v in d.items() if np.isfinite(v)}
        g["champion"] = int(res.champion.startswith("yes"))
        if res.validation is not None and res.validation.rows:
            vstats = summary_table(res.validation, confidence)
            g["validation"] = {m: {k: v["mean"] for k, v in ms.items() if k in CORE and np.isfinite(v["mean"])}
                               for m, ms in vstats.items()}
        out[res.group] = g
    return out


def per_bin_frame(results: list[GroupResult], sr: int, n_fft: int) -> pd.DataFrame:
    """MAE per bin pooled over all test frames of the groups where every method was evaluated.

    When no group has all four methods, each method is pooled over the groups that have it.
    """
    complete = [r for r in results if all(m in r.per_bin_frames for m in METHODS)]
    pool = complete or results
    df = pd.DataFrame({"frequency_hz": np.fft.rfftfreq(n_fft, 1 / sr)})
    for m in METHODS:
        tot = sum((r.per_bin_sum[m] for r in pool if m in r.per_bin_sum), np.zeros(len(df)))
        n = sum(r.per_bin_frames.get(m, 0) for r in pool)
        df[m] = tot / n if n else np.nan
    return df


# ------------------------------------------------------------------ champion and MLflow


def _connect(params: Params, paths: Paths, results: list[GroupResult]) -> Any:
    """The ``tracking`` module, configured; None (with a message per group) when MLflow is unavailable."""
    try:
        from stemdae import tracking

        tracking.configure(params.tracking, paths.root)
        return tracking
    except Exception as err:
        for res in (r for r in results if r.has("dae")):
            if res.champion.startswith("yes"):
                res.champion = f"no (MLflow unavailable, alias not set); {res.champion[5:]}"
            res.messages.append(f"MLflow not reached ({type(err).__name__}: {err}); nothing logged")
        return None


def _promote(tracking: Any, params: Params, paths: Paths, results: list[GroupResult]) -> dict[str, dict]:
    """Set the ``champion`` alias where the rule allows it; returns the run info per group."""
    infos: dict[str, dict] = {}
    for res in results:
        if not res.has("dae"):
            continue
        model_dir = paths.model_dir(res.group)
        try:
            infos[res.group] = info = tracking.read_run_info(model_dir)
        except Exception as err:
            res.messages.append(f"{model_dir}/mlflow.json: unreadable ({err}); metrics not logged, no alias set")
            if res.champion.startswith("yes"):
                res.champion = f"no (no registered version to promote); {res.champion[5:]}"
            continue
        name = f"{params.tracking.registry_prefix}{res.group}"
        version = info.get("registered_version")
        try:
            previous = tracking.get_alias_version(name, "champion")
        except Exception:
            previous = None
        if res.champion.startswith("yes") and version is not None:
            try:
                tracking.set_alias(name, version, "champion")
                res.champion += f"; {name} version {version} is now champion (was {previous or 'none'})"
            except Exception as err:
                res.champion = f"no (setting the alias failed: {err}); {res.champion[5:]}"
        elif res.champion.startswith("yes"):
            res.champion = f"no (the model has no registered version); {res.champion[5:]}"
        else:
            res.champion += f"; champion stays {f'version {previous}' if previous else 'unset'}"
    return infos


def _log_runs(tracking: Any, infos: dict[str, dict], results: list[GroupResult], artifacts: list[Path],
              flat: dict[str, dict[str, float]]) -> list[str]:
    """Log each group's metrics and the report files to its training run; returns failure messages."""
    problems = []
    for res in results:
        run_id = infos.get(res.group, {}).get("run_id")
        if not run_id:
            continue
        try:
            tracking.log_metrics_to_run(run_id, flat.get(res.group, {}))
            tracking.log_artifacts_to_run(run_id, [p for p in artifacts if p.exists()])
        except Exception as err:
            problems.append(f"{res.group}: logging to MLflow run {run_id} failed ({err})")
    return problems


def _flat_for_mlflow(results: list[GroupResult], confidence: float) -> dict[str, dict[str, float]]:
    out = {}
    for res in results:
        stats = summary_table(res, confidence)
        d: dict[str, float] = {}
        for method, ms in stats.items():
            for k in CORE:
                if k in ms and np.isfinite(ms[k]["mean"]):
                    d[f"eval_{k}" if method == "dae" else f"eval_{method}_{k}"] = ms[k]["mean"]
        for b, r in compare(stats).items():
            d.update({f"eval_dae_vs_{b}_{k}": v for k, v in r.items() if k in CORE and np.isfinite(v)})
        out[res.group] = d
    return out


# ------------------------------------------------------------------ report


def _fmt(s: dict[str, float]) -> str:
    if not np.isfinite(s["mean"]):
        return "n/a"
    return f"{s['mean']:.4g} ± {s['std']:.3g} [{s['ci_low']:.4g}, {s['ci_high']:.4g}]"


def _method_table(stats: dict, cols: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for m in METHODS:
        if m in stats:
            lines.append(f"| {m} | " + " | ".join(_fmt(stats[m][c]) if c in stats[m] else "n/a" for c in cols) + " |")
    return lines


def _instrument_table(res: GroupResult, metric: str) -> list[str]:
    df = res.table
    lines = [f"| instrument | segments | " + " | ".join(METHODS) + " | DAE loses to |", "|---|---|" + "---|" * 5]
    for inst, sub in df.groupby("instrument"):
        means = sub.groupby("method")[metric].mean()
        cells = [f"{means[m]:.4g}" if m in means else "n/a" for m in METHODS]
        lost = [b for b in BASELINES if "dae" in means and b in means and not means["dae"] < means[b]]
        lost_txt = ", ".join(lost) if "dae" in means else "n/a"
        lines.append(f"| {inst} | {sub['pair_id'].nunique()} | " + " | ".join(cells) + f" | {lost_txt or '-'} |")
    return lines


def render_report(results: list[GroupResult], params: Params, chain_md: str) -> str:
    """``reports/evaluation.md``: status, tables, ratios, champion decision per group, chain check."""
    ev = params.evaluation
    conf = f"{100 * ev.confidence:.0f} %"
    lines = [
        "# Evaluation on held-out songs", "",
        f"Methods: the DAE and three baselines (`identity`, `static_eq`, `static_eq_gain`, see "
        f"`baselines.py`), all through the same metric code on the same test segments. Cells: "
        f"mean ± std [{conf} t-interval] over segments. SI-SDR uses the raw phase (as the paper); "
        f"`si_sdr_oracle` uses the stem's own phase, `si_sdr_phase_gap` is the difference. "
        f"Champion metric: `{ev.champion_metric}` (lower is better).", "",
        "| group | status | segments | champion |", "|---|---|---|---|",
    ]
    for r in results:
        n = r.table["pair_id"].nunique() if r.rows else 0
        lines.append(f"| {r.group} | {r.status} | {n} | {r.champion or 'no'} |")
    for r in results:
        lines += ["", f"## {r.group}", "", f"Status: **{r.status}**."]
        lines += [f"- {m}" for m in r.messages]
        if not r.rows:
            continue
        if r.eq is not None:
            val = ", ".join(f"{k} {v:.4g}" for k, v in r.eq.validation_mae.items()) or "no validation songs"
            lines.append(f"- static EQ: `{r.eq.method}` fit on {r.eq.n_frames} training frames (validation MAE: {val})")
        stats = summary_table(r, ev.confidence)
        lines += ["", "### Spectral and waveform metrics", ""] + _method_table(stats, list(CORE))
        feat_cols = [c for c in next(iter(stats.values())) if c.endswith("_diff")]
        lines += ["", "### Mixing-feature differences |output − stem|", ""] + _method_table(stats, feat_cols)
        ratios = compare(stats)
        if ratios:
            lines += ["", "### DAE vs baselines (ratio DAE/baseline; SI-SDR: difference in dB)", "",
                      "| baseline | " + " | ".join(CORE[:5]) + " |", "|---|" + "---|" * 5]
            for b, d in ratios.items():
                lines.append(f"| {b} | " + " | ".join(f"{d[k]:.3g}" if k in d else "n/a" for k in CORE[:5]) + " |")
            lost = losses(ratios)
            core = [x for x in lost if x.split(" vs ")[0] in CORE]
            n_feat = len(lost) - len(core)
            lines += ["", "DAE loses on: " + (", ".join(core) if core else "no spectral/waveform metric")
                      + f"; and on {n_feat} mixing-feature difference(s) vs some baseline (table above)."]
        lines += ["", f"### Per instrument ({ev.champion_metric})", ""] + _instrument_table(r, ev.champion_metric)
        val = ", ".join(r.validation_songs) or "none"
        lines += ["", f"Champion decision (validation songs carved from the training songs: {val}; "
                      f"the test songs above play no part): {r.champion or 'no'}."]
    lines += ["", "## Ground-truth chain check", "", chain_md]
    return "\n".join(lines) + "\n"


def _figures(results: list[GroupResult], per_bin: pd.DataFrame, params: Params, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    for stale in fig_dir.glob("example_*.png"):  # examples of an earlier run would linger
        stale.unlink()
    written = []
    done = [r for r in results if r.rows]
    freqs = np.fft.rfftfreq(params.features.n_fft, 1 / params.segments.sr)
    long = []
    fig, axes = plt.subplots(1, max(1, len(done)), figsize=(4.5 * max(1, len(done)), 3.5), squeeze=False)
    for ax, r in zip(axes[0], done):
        for m in METHODS:
            if m in r.per_bin_sum:
                curve = r.per_bin_sum[m] / r.per_bin_frames[m]
                ax.loglog(freqs[1:], curve[1:], label=m, lw=1)
                long.append(pd.DataFrame({"group": r.group, "method": m, "frequency_hz": freqs, "mae": curve}))
        ax.set(title=r.group, xlabel="frequency (Hz)", ylabel="MAE")
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(fig_dir / "per_bin_error.png")
    plots.save(fig, written[-1], dpi=110)  # a full disk: one line naming the figure, none half-written
    plt.close(fig)
    if long:
        with writing(fig_dir / "per_bin_error_by_group.csv"):
            pd.concat(long).to_csv(fig_dir / "per_bin_error_by_group.csv", index=False)
        written.append(fig_dir / "per_bin_error_by_group.csv")
    metric = params.evaluation.champion_metric
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.2
    for i, m in enumerate(METHODS):
        vals, errs = [], []
        for r in done:
            s = summary_table(r, params.evaluation.confidence).get(m, {}).get(metric)
            vals.append(s["mean"] if s else np.nan)
            errs.append((s["ci_high"] - s["mean"]) if s else 0.0)
        ax.bar(np.arange(len(done)) + (i - 1.5) * width, vals, width, yerr=errs, label=m, capsize=2)
    ax.set_xticks(np.arange(len(done)), [r.group for r in done])
    ax.set(ylabel=metric, title=f"{metric} on test songs (lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(fig_dir / "dae_vs_baselines.png")
    plots.save(fig, written[-1], dpi=110)  # a full disk: one line naming the figure, none half-written
    plt.close(fig)
    for r in done:
        for ex in r.examples:
            written.append(_example_figure(plt, ex, r.group, params, fig_dir))
    return written


def _example_figure(plt: Any, ex: dict[str, Any], group: str, params: Params, fig_dir: Path) -> Path:
    """Log-magnitude spectrograms of one test segment: raw, stem, DAE, static EQ + gain."""
    panels = [k for k in ("raw", "stem", "dae", "static_eq_gain") if k in ex]
    ref = 20 * np.log10(max(float(ex["stem"].max()), 1e-9))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), sharey=True, squeeze=False)
    extent = [0, ex["raw"].shape[0] * params.features.hop / params.segments.sr, 0, params.segments.sr / 2000]
    for ax, k in zip(axes[0], panels):
        db = 20 * np.log10(np.maximum(ex[k], 1e-9)) - ref
        ax.imshow(db.T, origin="lower", aspect="auto", vmin=-80, vmax=0, extent=extent, cmap="magma")
        ax.set(title=k, xlabel="time (s)")
    axes[0][0].set_ylabel("frequency (kHz)")
    fig.suptitle(f"{group}: {ex['pair_id']} (dB re stem peak)")
    fig.tight_layout()
    path = fig_dir / f"example_{group}_{ex['pair_id']}.png"
    plots.save(fig, path, dpi=90)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ stage


def run(params: Params, paths: Paths) -> Summary:
    """Evaluate every group, decide champions, write the reports and log to MLflow.

    ``exit_code`` is 1 only when no group had any DAE output evaluated.
    """
    summary = Summary("evaluate")
    log.info("evaluate: %d groups", len(params.groups))
    results = []
    for group in params.groups:
        res = evaluate_group(group, params, paths)
        res.champion = decide_champion(res, params)
        results.append(res)
        log.info("evaluate %s: %s, %d rows", group, res.status, len(res.rows))
    reports = paths.reports_dir
    plots_dir, fig_dir = reports / "plots", reports / "figures"
    plots_dir.mkdir(parents=True, exist_ok=True)
    per_bin = per_bin_frame(results, params.segments.sr, params.features.n_fft)
    with writing(plots_dir / "per_bin_error.csv"):
        per_bin.to_csv(plots_dir / "per_bin_error.csv", index=False)
    figures = _figures(results, per_bin, params, fig_dir)
    all_chain = [c for r in results for c in r.chain_records]
    chain_md = chaincheck.markdown(chaincheck.summarize(all_chain), list(METHODS))
    conf = params.evaluation.confidence
    metrics_path, report_path = reports / "metrics.json", reports / "evaluation.md"
    artifacts = [report_path, metrics_path, plots_dir / "per_bin_error.csv", *figures]
    for res in results:  # no run info: nothing to log to or promote (and no MLflow store to open)
        if res.has("dae") and not (paths.model_dir(res.group) / "mlflow.json").is_file():
            res.messages.append(f"{paths.model_dir(res.group) / 'mlflow.json'}: missing; metrics not logged "
                                "to MLflow, no alias set")
            if res.champion.startswith("yes"):
                res.champion = f"no (no registered version to promote); {res.champion[5:]}"
    tracked = [r for r in results if r.has("dae") and (paths.model_dir(r.group) / "mlflow.json").is_file()]
    tracking = _connect(params, paths, tracked) if tracked else None
    infos = _promote(tracking, params, paths, tracked) if tracking is not None else {}
    write_text(metrics_path, json.dumps(metrics_json(results, conf), indent=2, sort_keys=True) + "\n")
    write_text(report_path, render_report(results, params, chain_md))
    if tracking is not None:
        for problem in _log_runs(tracking, infos, tracked, artifacts, _flat_for_mlflow(results, conf)):
            log.warning("evaluate: %s", problem)
            summary.skip("mlflow", problem)
    for res in results:
        for msg in res.messages:
            summary.skip(res.group, msg)
    n_dae = sum(r.has("dae") for r in results)
    summary.counts.update(groups=len(results), evaluated=n_dae,
                          segments=sum(r.table["pair_id"].nunique() for r in results if r.rows),
                          champions=sum(r.champion.startswith("yes") for r in results))
    summary.outputs += [str(report_path), str(metrics_path), str(plots_dir / "per_bin_error.csv"), str(fig_dir)]
    if n_dae == 0:
        summary.exit_code = 1
        log.error("evaluate: no group could be evaluated (see %s)", report_path)
    return summary.done()
