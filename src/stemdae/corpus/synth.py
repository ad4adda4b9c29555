"""The embedded demo corpus: seeded multitracks in the exact MedleyDB layout.

``synthesize_corpus(out_dir, SynthOptions(...))`` writes, per song::

    <Song>/<Song>_METADATA.yaml      MedleyDB schema (sorted keys)
    <Song>/<Song>_MIX.wav            sum of the stems
    <Song>/<Song>_STEMS/<Song>_STEM_NN.wav
    <Song>/<Song>_RAW/<Song>_RAW_NN_MM.wav
    <Song>/<Song>_CHAINS.json        the true effect chain per stem (see corpus/chains.py)

All files are mono 24-bit WAV. Each song has the four groups (bass, guitar, vocal, keys)
plus a drum set and sometimes ``violin`` / ``synthesizer`` stems outside them; the
primary label of each group rotates through a seeded permutation of the group's labels,
so every block of 4 songs covers all 13 of the paper's labels. Some stems have several
raws: two microphones on one performance (different colour, level, delay) or, for a
``vocalists`` container stem, several singers. Raws carry recording defects (noise
floor, rumble, hum, level differences, occasional near-clipping); a stem is the song
engineer's chain (:mod:`stemdae.corpus.chains`) applied to the blend of its raws.

Determinism: every random draw comes from ``np.random.default_rng([seed, song, stream,
...])``, so a song depends only on the seed and its index (not on ``n_songs`` or the
number of worker processes) and re-running gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from stemdae.config import GROUPS_PAPER
from stemdae.corpus import chains as ch
from stemdae.corpus import shift, voices
from stemdae.errors import ConfigError, CorpusError
from stemdae.workers import worker_pool

log = logging.getLogger(__name__)

MIN_SECONDS = 12.0
_ROT, _PLAN, _NAME, _MUSIC, _PERF, _REC, _CHAIN, _BLEND, _SHIFT = range(1, 10)
_GROUP_OF = {label: g for g, labels in GROUPS_PAPER.items() for label in labels}
_ADJ = ["Neon", "Velvet", "Paper", "Quiet", "Golden", "Hollow", "Electric", "Crimson", "Silver", "Wild", "Lucky",
        "Lunar", "Static", "Wooden", "Broken", "Little"]
_NOUN = ["Harbor", "Foxes", "Tides", "Lanterns", "Engines", "Orchard", "Pilots", "Sparrows", "Atlas", "Rivers",
         "Echoes", "Canyon", "Satellites", "Parade", "Mirrors", "Owls"]
_T1 = ["Glass", "Summer", "Midnight", "Paper", "Northern", "Slow", "Silver", "Open", "Distant", "Falling", "Bright",
       "Last", "Honey", "Empty", "Golden", "Restless"]
_T2 = ["River", "Lights", "Highway", "Letters", "Morning", "Window", "Static", "Garden", "Signal", "Dance", "Hearts",
       "Shore", "Avenue", "Feather", "Season", "Wire"]
_GENRES = {"male rapper": "Rap", "distorted electric guitar": "Rock", "banjo": "Country",
           "acoustic guitar": "Singer/Songwriter", "synth bass": "Electronic"}
# Probability that a stem of this label was recorded with two microphones (same performance).
_TWO_MICS = {"electric bass": 0.5, "synth bass": 0.15, "acoustic guitar": 0.6, "clean electric guitar": 0.4,
             "distorted electric guitar": 0.4, "banjo": 0.3, "piano": 0.5, "tack piano": 0.5,
             "electric piano": 0.3, "male singer": 0.1, "female singer": 0.1}


class SynthOptionsError(ConfigError, ValueError):
    """A demo-corpus option is out of range (names the option)."""


@dataclass(frozen=True)
class SynthOptions:
    """Demo corpus size and seed. ``n_jobs``: worker processes, 0 = one per core (at most one per song).

    ``style``: ``default``, or ``shifted`` (timbres, envelopes, noise and microphones outside the
    default's ranges, the same song plans, music and engineer chains; :mod:`stemdae.corpus.shift`).
    """

    n_songs: int = 12
    seconds: float = 30.0
    seed: int = 0
    sr: int = 44100
    n_jobs: int = 0
    style: str = "default"

    def validate(self) -> None:
        """Raise :class:`SynthOptionsError` naming the first bad option."""
        if not isinstance(self.n_songs, int) or self.n_songs < 1:
            raise SynthOptionsError(f"demo corpus: songs must be a positive integer, found {self.n_songs!r}")
        if not np.isfinite(self.seconds) or self.seconds < MIN_SECONDS or self.seconds > 3600:
            raise SynthOptionsError(f"demo corpus: seconds must be between {MIN_SECONDS:g} and 3600 (a 10 s window "
                                    f"must fit; 25 s or more recommended), found {self.seconds!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SynthOptionsError(f"demo corpus: seed must be a non-negative integer, found {self.seed!r}")
        if not isinstance(self.sr, int) or not 22050 <= self.sr <= 192000:
            raise SynthOptionsError(f"demo corpus: sr must be an integer in 22050..192000 Hz, found {self.sr!r}")
        if not isinstance(self.n_jobs, int) or self.n_jobs < 0:
            raise SynthOptionsError(f"demo corpus: n_jobs must be >= 0, found {self.n_jobs!r}")
        if self.style not in shift.STYLES:
            raise SynthOptionsError(f"demo corpus: style must be one of {', '.join(shift.STYLES)}, found {self.style!r}")


@dataclass(frozen=True)
class RawPlan:
    raw_id: str
    label: str
    mic: str  # "main", "second" (another mic on the same performance), "singer", "kick", "snare", "overhead"


@dataclass(frozen=True)
class StemPlan:
    stem_id: str
    label: str
    group: str | None
    component: str
    part: str  # "main", "second" or "drums"
    raws: tuple[RawPlan, ...]


@dataclass(frozen=True)
class SongPlan:
    index: int
    name: str
    artist: str
    title: str
    genre: str
    stems: tuple[StemPlan, ...]


def _rng(opts: SynthOptions, *key: int) -> np.random.Generator:
    return np.random.default_rng([opts.seed, *key])


def _rotated(opts: SynthOptions, group: str, i: int) -> str:
    """Song ``i``'s primary label of ``group``: blocks of songs run through seeded permutations."""
    labels = GROUPS_PAPER[group]
    g = list(GROUPS_PAPER).index(group)
    perm = np.random.default_rng([opts.seed, _ROT, g, i // len(labels)]).permutation(len(labels))
    return labels[int(perm[i % len(labels)])]


def _stem(rng: np.random.Generator, label: str, part: str, component: str = "") -> dict:
    if part == "drums":
        raws = [("kick drum", "kick"), ("snare drum", "snare"), ("drum set", "overhead")]
    else:
        raws = [(label, "main")] + ([(label, "second")] if rng.random() < _TWO_MICS.get(label, 0.0) else [])
    return {"label": label, "part": part, "component": component, "raws": raws}


def plan_song(opts: SynthOptions, i: int, taken: set[str] = frozenset()) -> SongPlan:
    """The labels, stems and raws of song ``i`` (no audio): cheap, deterministic."""
    rng = _rng(opts, i, _PLAN)
    pick = lambda labels: labels[int(rng.integers(len(labels)))]  # noqa: E731
    vocal = _rotated(opts, "vocal", i)
    stems = [_stem(rng, _rotated(opts, "bass", i), "main", "bass"), _stem(rng, "drum set", "drums"),
             _stem(rng, _rotated(opts, "guitar", i), "main")]
    if rng.random() < 0.45:
        stems.append(_stem(rng, pick(GROUPS_PAPER["guitar"]), "second"))
    stems.append(_stem(rng, _rotated(opts, "keys", i), "main"))
    if rng.random() < 0.25:
        stems.append(_stem(rng, pick(GROUPS_PAPER["keys"]), "second"))
    stems.append(_stem(rng, vocal, "main", "melody"))
    if vocal == "male rapper" and rng.random() < 0.5:
        stems.append(_stem(rng, pick(["male singer", "female singer"]), "second"))
    if i % 6 == 1 or rng.random() < 0.2:
        n_singers = 2 + int(rng.random() < 0.4)
        singers = ["female singer", "male singer", pick(["female singer", "male singer"])][:n_singers]
        stems.append({"label": "vocalists", "part": "second", "component": "",
                      "raws": [(s, "singer") for s in singers]})
    for extra, p in (("violin", 0.25), ("synthesizer", 0.3)):
        if rng.random() < p:
            stems.append(_stem(rng, extra, "main"))
    plans = []
    for s_no, st in enumerate(stems, 1):
        group = "vocal" if st["label"] == "vocalists" else _GROUP_OF.get(st["label"])
        raws = tuple(RawPlan(f"R{r_no:02d}", lab, mic) for r_no, (lab, mic) in enumerate(st["raws"], 1))
        plans.append(StemPlan(f"S{s_no:02d}", st["label"], group, st["component"], st["part"], raws))
    for attempt in range(1000):
        nrng = _rng(opts, i, _NAME, attempt)
        artist = (_ADJ[int(nrng.integers(16))], _NOUN[int(nrng.integers(16))])
        title = (_T1[int(nrng.integers(16))], _T2[int(nrng.integers(16))])
        name = f"{''.join(artist)}_{''.join(title)}"
        if name not in taken:
            break
    else:  # pragma: no cover - 65k names
        name = f"{name}{i}"
    mains = {p.label for p in plans if p.part == "main"}
    genre = next((g for label, g in _GENRES.items() if label in mains), "Pop")
    return SongPlan(i, name, " ".join(artist), " ".join(title), genre, tuple(plans))


def plan_corpus(opts: SynthOptions) -> list[SongPlan]:
    """Plans of all songs (names unique), without rendering any audio."""
    opts.validate()
    plans: list[SongPlan] = []
    taken: set[str] = set()
    for i in range(opts.n_songs):
        plans.append(plan_song(opts, i, taken))
        taken.add(plans[-1].name)
    return plans


# ---------------------------------------------------------------------------- audio

def pcm24(x: np.ndarray, sr: int) -> np.ndarray:
    """``x`` as it reads back from a 24-bit WAV file (float32, clipped to [-1, 1))."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, dtype=np.float32), sr, subtype="PCM_24", format="WAV")
    buf.seek(0)
    return sf.read(buf, dtype="float32")[0]


def _mic_chain(rng: np.random.Generator, mic: str, style: str = "default") -> list[dict]:
    if style == "shifted":
        return shift.mic_chain(rng, mic)
    chain = [{"type": "low_shelf", "freq_hz": 150.0, "gain_db": round(float(rng.uniform(-3, 3)), 2)},
             {"type": "peak", "freq_hz": round(float(rng.uniform(300, 4000)), 1),
              "gain_db": round(float(rng.uniform(-3, 3)), 2), "q": 1.0},
             {"type": "high_shelf", "freq_hz": 7000.0, "gain_db": round(float(rng.uniform(-4, 2)), 2)}]
    if mic == "second":  # amp / room / second mic: darker, boomier
        chain += [{"type": "lowpass", "cutoff_hz": round(float(rng.uniform(3000, 9000)), 1)},
                  {"type": "low_shelf", "freq_hz": 120.0, "gain_db": round(float(rng.uniform(0, 5)), 2)}]
    return chain


def record(perf: np.ndarray, rng: np.random.Generator, sr: int, *, mic: str, style: str = "default") -> np.ndarray:
    """A raw track of a performance: mic colour, delay, level, noise floor, rumble, hum; 24-bit."""
    x = ch.apply_chain(perf, sr, _mic_chain(rng, mic, style)).astype(np.float64)
    if mic == "second":
        d = int(rng.uniform(0.0005, 0.004) * sr)
        x = np.concatenate([np.zeros(d), x[: len(x) - d]])
    peak_db = float(rng.uniform(-0.8, -0.1)) if rng.random() < 0.12 else float(rng.uniform(-20, -4))
    x *= 10 ** (peak_db / 20) / max(float(np.max(np.abs(x))), 1e-9)
    n = len(x)
    white = rng.standard_normal(n, dtype=np.float32)
    x += 10 ** (rng.uniform(*(shift.NOISE_FLOOR_DB if style == "shifted" else (-84, -66))) / 20) * white
    if rng.random() < (shift.RUMBLE_PROB if style == "shifted" else 0.6):  # low-frequency rumble (handling, traffic, air conditioning)
        from scipy import signal
        rumble = signal.sosfilt(signal.butter(2, 30.0, fs=sr, output="sos"), rng.standard_normal(n))
        x += rumble * 10 ** (rng.uniform(-58, -42) / 20) / (np.std(rumble) + 1e-12)
    if rng.random() < 0.2:  # mains hum
        t = np.arange(n) / sr
        f = 50.0 if rng.random() < 0.5 else 60.0
        x += 10 ** (rng.uniform(-68, -55) / 20) * sum(np.sin(2 * np.pi * h * f * t) / h for h in (1, 2, 3))
    peak = float(np.max(np.abs(x)))
    if peak > 0.999:
        x *= 0.999 / peak
    return pcm24(x, sr)


def _performances(plan: StemPlan, music: voices.Music, opts: SynthOptions, i: int, s: int) -> list[np.ndarray]:
    """One performance per raw: shared by the mics of one instrument, own per singer or drum mic."""
    rng = _rng(opts, i, _PERF, s)
    sh = shift.draw_shift(_rng(opts, i, _SHIFT, s)) if opts.style == "shifted" else None
    with shift.shifted(sh):
        return _perform(plan, music, opts, rng, i, s)


def _perform(plan: StemPlan, music: voices.Music, opts: SynthOptions, rng: np.random.Generator, i: int,
             s: int) -> list[np.ndarray]:
    if plan.part == "drums":
        kit = voices.drum_kit(music, rng)
        mixes = {"kick": (1.0, 0.08, 0.0), "snare": (0.1, 1.0, 0.25), "overhead": (0.5, 0.8, 1.0)}
        return [sum(w * kit[k] for w, k in zip(mixes[r.mic], ("kick", "snare", "hat"))) for r in plan.raws]
    if plan.label == "vocalists":
        return [voices.perform(r.label, music, _rng(opts, i, _PERF, s, r_no), part="second")
                for r_no, r in enumerate(plan.raws)]
    perf = voices.perform(plan.label, music, rng, part=plan.part)
    return [perf for _ in plan.raws]


def render_song(plan: SongPlan, opts: SynthOptions) -> dict:
    """Raws, stems, mix (float32, 24-bit exact) and the chains JSON of one song."""
    i, sr = plan.index, opts.sr
    music = voices.draw_music(_rng(opts, i, _MUSIC), sr=sr, seconds=opts.seconds)
    raws, blends, chains, pre = {}, {}, {}, {}
    for s, st in enumerate(plan.stems):
        perfs = _performances(st, music, opts, i, s)
        raws[st.stem_id] = [record(p, _rng(opts, i, _REC, s, r), sr, mic=rp.mic, style=opts.style)
                            for r, (p, rp) in enumerate(zip(perfs, st.raws))]
        brng = _rng(opts, i, _BLEND, s)
        mix_db = {rp.raw_id: (0.0 if r == 0 else round(float(brng.uniform(-8, -1)), 1)) for r, rp in enumerate(st.raws)}
        blends[st.stem_id] = ch.blend_raws(raws[st.stem_id], list(mix_db.values()))
        draw = ch.draw_chain(st.group, st.label, _rng(opts, i, _CHAIN, s))
        # Applying a chain in two parts is bit-identical to applying it whole (pedalboard
        # keeps no state between calls with reset=True and processes plugins in order).
        head = ch.pre_compressor(draw["chain"])
        x = ch.apply_chain(blends[st.stem_id], sr, head)
        threshold = min(ch.loud_level_db(x, sr) - draw["depth_db"], -1.0)
        chain = ch.with_values(draw["chain"], "compressor", threshold_db=threshold)
        y = ch.apply_chain(x, sr, [step for step in chain[len(head):] if step["type"] != "gain"])
        peak_db = 20 * np.log10(max(float(np.max(np.abs(y))), 1e-9))
        gain = min(draw["target_db"] - ch.loud_level_db(y, sr), -1.0 - peak_db)
        pre[st.stem_id] = (y, gain)
        chains[st.stem_id] = {"group": st.group, "instrument": st.label, "chain": chain, "raw_mix_db": mix_db}
    rough_mix = sum(y.astype(np.float64) * 10 ** (g / 20) for y, g in pre.values())
    headroom = min(0.0, -1.0 - 20 * np.log10(max(float(np.max(np.abs(rough_mix))), 1e-9)))
    stems = {}
    for sid, entry in chains.items():
        assert entry["chain"][-1]["type"] == "gain"  # every drawn chain ends with its output gain
        entry["chain"] = ch.with_values(entry["chain"], "gain", gain_db=pre[sid][1] + headroom)
        stems[sid] = pcm24(ch.apply_chain(pre[sid][0], sr, entry["chain"][-1:]), sr)
    mix = pcm24(np.clip(sum(s.astype(np.float64) for s in stems.values()), -1.0, 1.0), sr)
    return {"raws": raws, "stems": stems, "mix": mix, "chains": chains}


# ---------------------------------------------------------------------------- files

def metadata(plan: SongPlan) -> dict:
    """The song's ``_METADATA.yaml`` content, in MedleyDB's schema."""
    n = plan.name
    stems = {}
    for s_no, st in enumerate(plan.stems, 1):
        stems[st.stem_id] = {
            "component": st.component, "filename": f"{n}_STEM_{s_no:02d}.wav", "instrument": st.label,
            "raw": {rp.raw_id: {"filename": f"{n}_RAW_{s_no:02d}_{r_no:02d}.wav", "instrument": rp.label}
                    for r_no, rp in enumerate(st.raws, 1)},
        }
    vocal = any(st.group == "vocal" for st in plan.stems)
    return {"album": "stemdae demo corpus", "artist": plan.artist, "composer": [plan.artist], "excerpt": "no",
            "genre": plan.genre, "has_bleed": "no", "instrumental": "no" if vocal else "yes",
            "mix_filename": f"{n}_MIX.wav", "origin": "stemdae synthetic demo corpus", "producer": ["stemdae"],
            "raw_dir": f"{n}_RAW", "stem_dir": f"{n}_STEMS", "stems": stems, "title": plan.title, "version": 1.2,
            "website": []}


def _write_wav(path: Path, x: np.ndarray, sr: int) -> None:
    sf.write(str(path), x, sr, subtype="PCM_24", format="WAV")


def write_song(out_dir: Path, plan: SongPlan, audio: dict, sr: int) -> Path:
    """Write one song: audio and chains into a hidden partial folder, moved into place, metadata last.

    A song folder without its ``_METADATA.yaml`` is incomplete (loaders ignore it); re-running
    overwrites it.
    """
    meta = metadata(plan)
    final = out_dir / plan.name
    tmp = out_dir / f".{plan.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / meta["stem_dir"]).mkdir(parents=True)
    (tmp / meta["raw_dir"]).mkdir()
    for sid, entry in meta["stems"].items():
        _write_wav(tmp / meta["stem_dir"] / entry["filename"], audio["stems"][sid], sr)
        for r, raw in enumerate(entry["raw"].values()):
            _write_wav(tmp / meta["raw_dir"] / raw["filename"], audio["raws"][sid][r], sr)
    _write_wav(tmp / meta["mix_filename"], audio["mix"], sr)
    (tmp / f"{plan.name}_CHAINS.json").write_text(json.dumps(audio["chains"], indent=1, sort_keys=True) + "\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    meta_tmp = final / f".{plan.name}_METADATA.yaml.tmp"
    meta_tmp.write_text(yaml.safe_dump(meta, sort_keys=True, default_flow_style=False, allow_unicode=True))
    os.replace(meta_tmp, final / f"{plan.name}_METADATA.yaml")
    return final


def _make_song(args: tuple[Path, SongPlan, SynthOptions]) -> str:
    out_dir, plan, opts = args
    t0 = time.perf_counter()
    write_song(out_dir, plan, render_song(plan, opts), opts.sr)
    log.debug("%s: %d stems in %.1f s", plan.name, len(plan.stems), time.perf_counter() - t0)
    return plan.name


@dataclass
class CorpusSynthSummary:
    """What :func:`synthesize_corpus` wrote: songs, and songs/stems/raws per instrument label."""

    out_dir: Path
    opts: SynthOptions
    songs: list[str]
    instruments: dict[str, dict[str, int]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def text(self) -> str:
        n_stems = sum(v["stems"] for v in self.instruments.values())
        n_raws = sum(v["raws"] for v in self.instruments.values())
        style = "" if self.opts.style == "default" else f", {self.opts.style} timbres"
        lines = [f"[demo-corpus] {len(self.songs)} songs x {self.opts.seconds:g} s (seed {self.opts.seed}{style}), "
                 f"{n_stems} stems, {n_raws} raw tracks; {self.elapsed_s:.1f} s -> {self.out_dir}",
                 f"  {'instrument':<26} {'songs':>5} {'stems':>5} {'raws':>5}  group"]
        for label in sorted(self.instruments):
            v = self.instruments[label]
            group = _GROUP_OF.get(label, "container" if label == "vocalists" else "ignored")
            lines.append(f"  {label:<26} {v['songs']:>5} {v['stems']:>5} {v['raws']:>5}  {group}")
        return "\n".join(lines)


def count_labels(plans: list[SongPlan]) -> dict[str, dict[str, int]]:
    """Per label: songs where it appears (stem or raw), stems (by stem label), raws (by raw label)."""
    rows: dict[str, dict] = defaultdict(lambda: {"songs": set(), "stems": 0, "raws": 0})
    for p in plans:
        for st in p.stems:
            rows[st.label]["stems"] += 1
            rows[st.label]["songs"].add(p.name)
            for rp in st.raws:
                rows[rp.label]["raws"] += 1
                rows[rp.label]["songs"].add(p.name)
    return {k: {"songs": len(v["songs"]), "stems": v["stems"], "raws": v["raws"]} for k, v in rows.items()}


DEMO_MARKER = ".stemdae-demo-corpus"


def is_demo_corpus(root: Path) -> bool:
    """True when ``root`` carries the marker :func:`synthesize_corpus` writes (a regular file, not a link)."""
    marker = Path(root) / DEMO_MARKER
    return marker.is_file() and not marker.is_symlink()


def _claim(out_dir: Path, opts: SynthOptions) -> None:
    """Create ``out_dir`` and mark it as a demo corpus; refuse a folder holding anything of the user's."""
    if out_dir.is_dir() and not is_demo_corpus(out_dir) and any(out_dir.iterdir()):
        raise CorpusError(f"{out_dir}: not empty and not a demo corpus (no {DEMO_MARKER} file); the demo corpus "
                          "is written only into a new or empty folder or over an earlier demo corpus")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Deterministic content (no time stamps): the same options give the same data.dvc hash.
    info = {"created_by": "stemdae demo-corpus", "n_songs": opts.n_songs, "seconds": opts.seconds,
            "seed": opts.seed, "sr": opts.sr, **({"style": opts.style} if opts.style != "default" else {})}
    (out_dir / DEMO_MARKER).write_text(json.dumps(info, sort_keys=True) + "\n")


def synthesize_corpus(out_dir: Path, opts: SynthOptions = SynthOptions()) -> CorpusSynthSummary:
    """Synthesise the demo corpus into ``out_dir`` and mark it with :data:`DEMO_MARKER`.

    ``out_dir`` must be new, empty or an earlier demo corpus (whose songs of
    the same name are replaced): nothing of the user's is overwritten.

    Raises
    ------
    SynthOptionsError
        An option out of range (a :class:`ConfigError`, also a ``ValueError``).
    CorpusError
        ``out_dir`` holds files and no demo marker.
    """
    t0 = time.perf_counter()
    plans = plan_corpus(opts)
    out_dir = Path(out_dir)
    _claim(out_dir, opts)
    n_jobs = min(opts.n_jobs or os.cpu_count() or 1, len(plans))
    log.info("demo corpus: %d songs x %g s (seed %d) -> %s with %d process(es)", len(plans), opts.seconds,
             opts.seed, out_dir, n_jobs)
    jobs = [(out_dir, p, opts) for p in plans]
    if n_jobs == 1:
        names = [_make_song(j) for j in jobs]
    else:
        with worker_pool(n_jobs) as pool:
            names = list(pool.map(_make_song, jobs))
    summary = CorpusSynthSummary(out_dir, opts, names, count_labels(plans), time.perf_counter() - t0)
    log.info("demo corpus: %d songs in %.1f s", len(names), summary.elapsed_s)
    return summary


__all__ = ["DEMO_MARKER", "CorpusSynthSummary", "RawPlan", "SongPlan", "StemPlan", "SynthOptions", "SynthOptionsError",
           "count_labels", "is_demo_corpus", "metadata", "pcm24", "plan_corpus", "plan_song", "record", "render_song",
           "synthesize_corpus", "write_song"]
