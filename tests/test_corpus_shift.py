"""demo-corpus --style shifted: timbres outside the default's ranges, the same engineer chains, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from stemdae.corpus.synth import SynthOptions, SynthOptionsError, plan_corpus, render_song

SR = 22050


def _render(style: str) -> tuple[list, list[dict]]:
    opts = SynthOptions(n_songs=4, seconds=12.0, seed=0, sr=SR, n_jobs=1, style=style)
    plans = plan_corpus(opts)
    return plans, [render_song(p, opts) for p in plans]


@pytest.fixture(scope="module")
def both() -> dict[str, tuple[list, list[dict]]]:
    return {style: _render(style) for style in ("default", "shifted")}


def _centroids(plans: list, songs: list[dict]) -> dict[str, list[float]]:
    """Power-spectrum centroid (Hz) of every raw of a group's instrument, by raw label."""
    out: dict[str, list[float]] = {}
    for plan, audio in zip(plans, songs):
        for st in plan.stems:
            if st.group is None:
                continue
            for rp, x in zip(st.raws, audio["raws"][st.stem_id]):
                power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
                f = np.fft.rfftfreq(len(x), 1 / SR)
                out.setdefault(rp.label, []).append(float((power * f).sum() / power.sum()))
    return out


def test_shifted_timbres_lie_outside_the_default_range(both):
    default, shifted = _centroids(*both["default"]), _centroids(*both["shifted"])
    assert set(shifted) == set(default) and len(default) >= 8  # the same instruments (same song plans)
    for label in default:  # every instrument: the shifted raws' median centroid above every default raw's
        assert np.median(shifted[label]) > max(default[label]), (label, default[label], shifted[label])


def test_shifted_songs_keep_the_plans_music_and_engineer_chains(both):
    (plans_d, songs_d), (plans_s, songs_s) = both["default"], both["shifted"]
    assert plans_d == plans_s
    signal_dependent = {("compressor", "threshold_db"), ("gain", "gain_db")}  # set from the audio's level

    def drawn(chains: dict) -> dict:
        return {sid: ([{k: v for k, v in step.items() if (step["type"], k) not in signal_dependent}
                       for step in entry["chain"]], entry["raw_mix_db"]) for sid, entry in chains.items()}

    for a, b in zip(songs_d, songs_s):
        assert drawn(a["chains"]) == drawn(b["chains"])  # identical engineer draws, stem by stem
        assert any(not np.array_equal(x, y) for sid in a["raws"] for x, y in zip(a["raws"][sid], b["raws"][sid]))


def test_shifted_corpus_is_deterministic_and_validated(both):
    plans, songs = both["shifted"]
    again = render_song(plans[1], SynthOptions(n_songs=4, seconds=12.0, seed=0, sr=SR, n_jobs=1, style="shifted"))
    for sid, raws in songs[1]["raws"].items():
        assert all(np.array_equal(x, y) for x, y in zip(raws, again["raws"][sid]))
    with pytest.raises(SynthOptionsError, match="style must be one of default, shifted"):
        SynthOptions(style="bright").validate()
