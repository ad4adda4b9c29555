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
``per_bin_error_by_group.csv``). Modules: this one scores (rows per segment
and method) and runs the stage; :mod:`stemdae.evaluate_results` holds the
result type and the statistics, :mod:`stemdae.evaluate_report` the report and
figures, :mod:`stemdae.evaluate_tracking` the MLflow side.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdae import baselines, chaincheck, evaluate_report, evaluate_tracking
from stemdae.config import Params, Paths
from stemdae.dsp import metrics as M
from stemdae.dsp.stft import istft, magnitude_phase
from stemdae.errors import CacheError, ModelError, StemdaeError
from stemdae.evaluate_results import (  # re-exported: the evaluation's vocabulary lives there
    BASELINES,
    CORE,
    HIGHER_IS_BETTER,
    METHODS,
    GroupResult,
    beats_every_baseline,
    compare,
    losses,
    metrics_json,
    per_bin_frame,
    summary_table,
)
from stemdae.io import write_text
from stemdae.segfile import read_segment, segment_path
from stemdae.summary import Summary
from stemdae.writeguard import writing

log = logging.getLogger(__name__)

__all__ = ["BASELINES", "CORE", "HIGHER_IS_BETTER", "METHODS", "GroupResult", "WaveMethod", "beats_every_baseline",
           "compare", "decide_champion", "evaluate_group", "losses", "metrics_json", "per_bin_frame", "run",
           "summary_table", "validation_songs"]


# ------------------------------------------------------------------ loading


def _open(path: Path, n_bins: int):
    from stemdae.featcache import open_cache

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
    seg_path = segment_path(paths.segments_dir, pid)
    try:
        seg = read_segment(seg_path)
    except CacheError as err:
        res.messages.append(f"{err}; pair skipped")
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
    figures = evaluate_report.figures(results, per_bin, params, fig_dir)
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
    tracking = evaluate_tracking.connect(params, paths, tracked) if tracked else None
    infos = evaluate_tracking.promote(tracking, params, paths, tracked) if tracking is not None else {}
    write_text(metrics_path, json.dumps(metrics_json(results, conf), indent=2, sort_keys=True) + "\n")
    write_text(report_path, evaluate_report.render_report(results, params, chain_md))
    if tracking is not None:
        for problem in evaluate_tracking.log_runs(tracking, infos, tracked, artifacts, evaluate_tracking.flat_for_mlflow(results, conf)):
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
