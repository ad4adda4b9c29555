"""Instrument performances for the demo corpus: a song's music, note patterns, vectorised synthesis.

A :class:`Music` (tempo, key, chord progression, per-bar dynamics) is drawn per song; each
part turns it into notes (bass line, strummed or rolled chords, comping, melody, rap flow,
drum pattern) and renders them as a mono performance, shape ``(samples,)``, peak 1.

Pitched notes are additive: a monophonic line has a per-sample note index, time since
onset, pitch (glide, vibrato) and envelope; its harmonics come from the Chebyshev
recurrence ``sin((k+1)p) = 2 cos p sin(kp) - sin((k-1)p)`` with per-harmonic decay
(plucks darken as they ring) and velocity-dependent brightness. Chords are several
monophonic lines. Voices take their harmonic amplitudes from vowel formants per note.
Transients (pick, hammer, consonants) are enveloped noise; drums are one-shots convolved
with velocity impulse trains. Everything is numpy/scipy over whole arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from stemdae.corpus import shift as _shift

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# Chord roots as scale degrees (0 = tonic), one chord per bar, cycled.
PROGRESSIONS = {
    False: ((0, 4, 5, 3), (0, 3, 4, 3), (5, 3, 0, 4), (1, 4, 0, 0), (0, 5, 3, 4)),
    True: ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2)),
}
# Vowel formants (Hz) and bandwidths for a male voice; female voices scale them by 1.15.
VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]],
                  dtype=float)
FORMANT_BW = np.array([90.0, 110.0, 170.0])
FORMANT_GAIN = np.array([1.0, 0.6, 0.3])


def hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=float) - 69.0) / 12.0)


@dataclass(frozen=True)
class Music:
    """A song's musical plan: 4/4 bars, one chord per bar, a dynamic level per bar."""

    sr: int
    n_samples: int
    tempo_bpm: float
    tonic: int
    minor: bool
    progression: tuple[int, ...]
    bar_gain_db: tuple[float, ...]
    lead_in_s: float

    @property
    def beat_s(self) -> float:
        return 60.0 / self.tempo_bpm

    @property
    def n_bars(self) -> int:
        return len(self.bar_gain_db)

    def t(self, bar: int, beat: float) -> float:
        return self.lead_in_s + (4 * bar + beat) * self.beat_s

    def gain(self, bar: int) -> float:
        return 10.0 ** (self.bar_gain_db[bar] / 20.0)

    def pc(self, degree: int) -> int:
        scale = MINOR if self.minor else MAJOR
        return (self.tonic + scale[degree % 7]) % 12

    def chord(self, bar: int, seventh: bool = False) -> list[int]:
        """Pitch classes of the bar's chord (triad on the scale, optional seventh)."""
        d = self.progression[bar % len(self.progression)]
        return [self.pc(d + 2 * j) for j in range(4 if seventh else 3)]

    def scale_midi(self, s: int, base: int) -> int:
        """Scale step ``s`` (0 = tonic of the octave starting at ``base``) as MIDI."""
        scale = MINOR if self.minor else MAJOR
        return base + 12 * (s // 7) + scale[s % 7]


def draw_music(rng: np.random.Generator, *, sr: int, seconds: float) -> Music:
    """Tempo, key, progression and dynamics: sections of 4 bars, a soft intro, at least one loud one."""
    tempo = float(rng.uniform(78, 136))
    minor = bool(rng.random() < 0.4)
    progs = PROGRESSIONS[minor]
    lead_in = float(rng.uniform(0.05, 0.5))
    n_bars = int(np.ceil((seconds - lead_in) / (240.0 / tempo))) + 1
    n_sections = (n_bars + 3) // 4
    levels = [float(rng.uniform(-13, -8))] + [float(rng.choice([-12.0, -7.0, -3.0, 0.0])) for _ in
                                              range(n_sections - 1)]
    if n_sections > 1:
        levels[1 + int(rng.integers(n_sections - 1))] = 0.0
    bars = tuple(round(levels[b // 4] + float(rng.normal(0, 0.7)), 2) for b in range(n_bars))
    return Music(sr=sr, n_samples=int(round(seconds * sr)), tempo_bpm=tempo, tonic=int(rng.integers(12)),
                 minor=minor, progression=progs[int(rng.integers(len(progs)))], bar_gain_db=bars, lead_in_s=lead_in)


# ------------------------------------------------------------------------------- notes

@dataclass
class Notes:
    """One monophonic line: onsets and durations in s, MIDI pitch, linear velocity, vowel index."""

    onset_s: np.ndarray
    dur_s: np.ndarray
    midi: np.ndarray
    vel: np.ndarray
    vowel: np.ndarray

    @classmethod
    def of(cls, rows: list[tuple]) -> Notes:
        rows = sorted(rows)
        a = np.array(rows, dtype=float).reshape(-1, 5)
        return cls(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4].astype(int))


def _vel(music: Music, rng: np.random.Generator, bar: int, beat: float) -> float:
    accent = 1.0 if beat == 0 else 0.85 if beat % 1 == 0 else 0.7
    return music.gain(bar) * accent * float(np.exp(rng.normal(0, 0.1)))


def _jit(rng: np.random.Generator, sd_s: float = 0.006) -> float:
    return float(rng.normal(0, sd_s))


def _nearest_pc(pc: int, lo: int) -> int:
    return lo + (pc - lo) % 12


def bass_line(music: Music, rng: np.random.Generator) -> Notes:
    rhythms = [[(0, 1), (1, 1), (2, 1), (3, 1)], [(0, 1.5), (1.5, 0.5), (2, 1), (3, 1)],
               [(i * 0.5, 0.5) for i in range(8)], [(0, 2), (2, 1.5), (3.5, 0.5)]]
    rhythm = rhythms[int(rng.integers(len(rhythms)))]
    rows = []
    for bar in range(music.n_bars):
        root = _nearest_pc(music.chord(bar)[0], 28)
        nxt = _nearest_pc(music.chord(bar + 1)[0], 28)
        for i, (b, d) in enumerate(rhythm):
            u = rng.random()
            m = root + (7 if u < 0.12 else 12 if u < 0.24 else 0)
            if i == len(rhythm) - 1 and rng.random() < 0.3:
                m = nxt + int(rng.choice([-1, 1, 2]))
            rows.append((music.t(bar, b) + _jit(rng), d * music.beat_s * 0.9, m, _vel(music, rng, bar, b), 0))
    return Notes.of(rows)


def chord_lines(music: Music, rng: np.random.Generator, *, lo: int, hi: int, n_voices: int,
                hits: list[tuple[float, float]], strum_s: float, seventh: bool = False) -> list[Notes]:
    """Chords as ``n_voices`` monophonic lines; hits ``(beat, dur_beats)``, strummed down/up."""
    lines: list[list[tuple]] = [[] for _ in range(n_voices)]
    for bar in range(music.n_bars):
        pcs = music.chord(bar, seventh)
        pitches = [m for m in range(lo, hi + 1) if m % 12 in pcs]
        start = int(rng.integers(0, max(1, len(pitches) - n_voices + 1)))
        voicing = pitches[start:start + n_voices]
        for b, d in hits:
            up = (b % 1) != 0
            v = _vel(music, rng, bar, b) * (0.8 if up else 1.0)
            t0 = music.t(bar, b) + _jit(rng)
            for j, m in enumerate(voicing):
                off = (len(voicing) - 1 - j if up else j) * strum_s * rng.uniform(0.7, 1.3)
                lines[j].append((t0 + off, d * music.beat_s, m, v * rng.uniform(0.85, 1.0), 0))
    return [Notes.of(rows) for rows in lines if rows]


def roll_lines(music: Music, rng: np.random.Generator, *, lo: int, hi: int, step_beats: float) -> list[Notes]:
    """Arpeggiated rolls (banjo, picked guitar): each string rings until picked again."""
    pattern = [[0, 1, 2, 0, 1, 2, 0, 1], [0, 2, 1, 2, 0, 2, 1, 2], [2, 1, 0, 2, 1, 0, 2, 1]][int(rng.integers(3))]
    lines: list[list[tuple]] = [[], [], []]
    steps = int(round(4 / step_beats))
    for bar in range(music.n_bars):
        pcs = music.chord(bar)
        voicing = [_nearest_pc(pcs[0], lo), _nearest_pc(pcs[1], lo + 5), _nearest_pc(pcs[2], lo + 10)]
        voicing = [min(m, hi) for m in voicing]
        for i in range(steps):
            s = pattern[i % len(pattern)]
            b = i * step_beats
            lines[s].append((music.t(bar, b) + _jit(rng, 0.004), 3 * step_beats * music.beat_s, voicing[s],
                             _vel(music, rng, bar, b), 0))
    return [Notes.of(rows) for rows in lines]


MELODY_RHYTHMS = [[(0, 1), (1, 1), (2, 2)], [(0, 1.5), (1.5, 0.5), (2, 1), (3, 1)], [(0, 0.5), (0.5, 0.5), (1, 1),
                  (2, 1.5)], [(0, 3), (3, 1)], [(1, 1), (2, 0.5), (2.5, 0.5), (3, 1)]]


def melody(music: Music, rng: np.random.Generator, *, base: int, span: int = 9, rest_prob: float = 0.25,
           legato: float = 0.92) -> Notes:
    """Phrases of scale steps, chord tones on strong beats, random vowels; ``base`` the octave's tonic."""
    s = int(rng.integers(2, 6))
    rows = []
    for bar in range(music.n_bars):
        if rng.random() < rest_prob or (bar % 4 == 3 and rng.random() < 0.5):
            continue
        chord_steps = {(music.progression[bar % len(music.progression)] + 2 * j) % 7 for j in range(3)}
        for b, d in MELODY_RHYTHMS[int(rng.integers(len(MELODY_RHYTHMS)))]:
            s = int(np.clip(s + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, span))
            if b % 2 == 0:
                s = min((x for x in range(0, span + 1) if x % 7 in chord_steps), key=lambda x: abs(x - s))
            m = music.scale_midi(s, base)
            rows.append((music.t(bar, b) + _jit(rng, 0.01), d * music.beat_s * legato, m,
                         _vel(music, rng, bar, b), int(rng.integers(5))))
    return Notes.of(rows or [(music.lead_in_s, 1.0, base, 0.5, 0)])


def rap_flow(music: Music, rng: np.random.Generator) -> Notes:
    """Sixteenth-note syllables, speech-like falling contour per bar, accents on the backbeat."""
    base = float(rng.uniform(43, 48))
    rows = []
    for bar in range(music.n_bars):
        fill = 0.45 if bar % 4 == 3 else 0.8
        for i in range(16):
            if rng.random() > fill:
                continue
            b = i / 4
            acc = 1.3 if i in (4, 12) else 1.1 if i % 4 == 0 else 0.85
            m = base + 3.0 * (1 - i / 16) + rng.normal(0, 0.8)
            dur = 0.25 * music.beat_s * rng.uniform(0.5, 1.1)
            rows.append((music.t(bar, b) + _jit(rng, 0.008), dur, m, music.gain(bar) * acc * rng.uniform(0.8, 1.1),
                         int(rng.integers(5))))
    return Notes.of(rows)


# ------------------------------------------------------------------------------ render

@dataclass(frozen=True)
class Timbre:
    """How a monophonic line sounds (see :func:`render_line`)."""

    n_harm: int = 10
    slope: float = 1.0          # harmonic k has amplitude k**-slope ...
    even: float = 1.0           # ... times this for even k
    attack_s: float = 0.003
    decay_s: float = 1.0
    sustain: float = 0.0
    release_s: float = 0.08
    bright_tau_s: float = 1e9   # ... times r**(k-1), r = b(vel) * (floor + (1-floor) exp(-t/tau))
    bright_floor: float = 1.0
    vibrato_hz: float = 0.0
    vibrato_cents: float = 0.0
    glide_s: float = 0.0
    detune_cents: float = 0.0   # a second, detuned layer (piano unison strings, pads)
    tremolo_hz: float = 0.0
    tremolo_depth: float = 0.0


def _line_state(notes: Notes, sr: int, n: int):
    on = np.round(notes.onset_s * sr).astype(np.int64)
    marks = np.zeros(n, dtype=np.int32)
    np.add.at(marks, np.clip(on[on < n], 0, n - 1), 1)
    idx = np.cumsum(marks) - 1  # the latest note started at or before each sample
    active = idx >= 0
    idx = np.maximum(idx, 0)
    tso = (np.maximum(np.arange(n) - on[idx], 0) / sr).astype(np.float32)
    return idx, active, tso


def render_line(notes: Notes, *, sr: int, n: int, timbre: Timbre, rng: np.random.Generator,
                table: np.ndarray | None = None,
                noise: tuple[float, tuple[float, float], float] | None = None) -> np.ndarray:
    """Render one monophonic line, shape ``(n,)`` float32.

    ``table`` (notes, n_harm) overrides the harmonic amplitudes (voices); ``noise`` =
    ``(tau_s, band_hz, level)`` adds an enveloped noise transient at each onset.
    """
    sh = _shift.active()  # demo-corpus --style shifted (corpus/shift.py); None: as written
    tb = timbre if sh is None else _shift.timbre(timbre, sh)
    if sh is not None and noise is not None:
        noise = _shift.noise(noise, sh)
    idx, active, tso = _line_state(notes, sr, n)
    f_note = hz(notes.midi).astype(np.float32)[idx]
    f = f_note
    if tb.glide_s > 0:
        prev = hz(notes.midi).astype(np.float32)[np.maximum(idx - 1, 0)]
        f = f_note * (prev / f_note) ** np.exp(-tso / np.float32(tb.glide_s))
    t = (np.arange(n) / sr).astype(np.float32) if tb.vibrato_cents > 0 or tb.tremolo_depth > 0 else None
    if tb.vibrato_cents > 0:
        depth = np.float32(tb.vibrato_cents / 1200) * np.clip((tso - np.float32(0.15)) / np.float32(0.3), 0, 1)
        f = f * np.exp2(depth * np.sin(np.float32(2 * np.pi * tb.vibrato_hz) * t + np.float32(rng.uniform(0, 6.28))))
    vel = notes.vel[idx].astype(np.float32)
    dur = notes.dur_s[idx].astype(np.float32)
    env = (1 - np.exp(-tso / tb.attack_s)) * (tb.sustain + (1 - tb.sustain) * np.exp(-tso / tb.decay_s))
    env *= np.where(tso > dur, np.exp(-np.maximum(tso - dur, 0) / tb.release_s), 1.0).astype(np.float32)
    env *= active * vel
    if tb.tremolo_depth > 0:
        env *= 1 - np.float32(tb.tremolo_depth) * (0.5 + 0.5 * np.sin(np.float32(2 * np.pi * tb.tremolo_hz) * t))
    decay = np.exp(-tso / np.float32(tb.bright_tau_s))
    r = np.clip(0.72 + 0.25 * vel, 0.5, 1.0) * (tb.bright_floor + (1 - tb.bright_floor) * decay)
    k = np.arange(1, tb.n_harm + 1)
    amps = table if table is not None else (k ** -tb.slope * np.where(k % 2 == 0, tb.even, 1.0))[None, :]
    live = np.flatnonzero(env > 1e-6 * float(env.max(initial=0.0)))  # skip silence between notes
    fn, rl, il = f_note[live], r[live].astype(np.float32), idx[live] if table is not None else None
    phase = np.cumsum(f, dtype=np.float64)
    phase *= 2 * np.pi / sr
    out = np.zeros(n, dtype=np.float32)
    out[live] = _harmonics(phase[live], fn, rl, amps, il, sr)
    if tb.detune_cents:
        phase *= 2 ** (tb.detune_cents / 1200)
        out[live] += 0.6 * _harmonics(phase[live], fn * 2 ** (tb.detune_cents / 1200), rl,
                                      amps[:, : max(2, tb.n_harm // 3)], il, sr)
    out *= env
    if noise is not None:
        out += _noise_burst(idx, active, tso, notes, sr=sr, rng=rng, tau_s=noise[0], band_hz=noise[1], level=noise[2])
    return out.astype(np.float32)


def _harmonics(phase: np.ndarray, f_note: np.ndarray, r: np.ndarray, amps: np.ndarray, idx, sr: int) -> np.ndarray:
    """``sum_k amps[k] r**k sin((k+1) phase)`` below 0.45 sr, by the Chebyshev recurrence; float32.

    Works in blocks that stay in cache: the recurrence is a dozen passes per harmonic.
    """
    m = len(phase)
    acc = np.zeros(m, dtype=np.float32)
    nyq = 0.45 * sr
    for a in range(0, m, _BLOCK):
        b = min(m, a + _BLOCK)
        fn = f_note[a:b]
        ph = np.mod(phase[a:b], 2 * np.pi).astype(np.float32)
        s_prev, s, c2 = np.zeros(b - a, dtype=np.float32), np.sin(ph), 2 * np.cos(ph)
        rb, rp, tmp, out = r[a:b], np.ones(b - a, dtype=np.float32), np.empty(b - a, dtype=np.float32), acc[a:b]
        f_min, f_max = float(fn.min()), float(fn.max())
        for k in range(amps.shape[1]):
            if (k + 1) * f_min >= nyq:
                break
            np.multiply(rp, s, out=tmp)
            tmp *= amps[idx[a:b], k].astype(np.float32) if idx is not None else np.float32(amps[0, k])
            if (k + 1) * f_max >= nyq:  # only some notes are past Nyquist
                tmp *= (k + 1) * fn < nyq
            out += tmp
            np.multiply(c2, s, out=tmp)
            tmp -= s_prev
            s_prev, s, tmp = s, tmp, s_prev
            rp *= rb
    return acc


_BLOCK = 1 << 15


def transients(notes: Notes, *, sr: int, n: int, rng: np.random.Generator, tau_s: float, band_hz: tuple[float, float],
               level: float) -> np.ndarray:
    """Enveloped band-passed noise at each onset (pick, hammer, consonant), float32 ``(n,)``."""
    if (sh := _shift.active()) is not None:
        tau_s, band_hz, level = _shift.noise((tau_s, band_hz, level), sh)
    idx, active, tso = _line_state(notes, sr, n)
    return _noise_burst(idx, active, tso, notes, sr=sr, rng=rng, tau_s=tau_s, band_hz=band_hz, level=level)


def _noise_burst(idx, active, tso, notes: Notes, *, sr: int, rng: np.random.Generator, tau_s: float,
                 band_hz: tuple[float, float], level: float) -> np.ndarray:
    n = len(idx)
    env = active * notes.vel[idx].astype(np.float32) * np.exp(-tso / np.float32(tau_s))
    sos = signal.butter(2, [band_hz[0], min(band_hz[1], 0.45 * sr)], btype="band", fs=sr, output="sos")
    burst = signal.sosfilt(sos, rng.standard_normal(n, dtype=np.float32) * env)
    return (level * burst).astype(np.float32)


def formant_table(notes: Notes, *, n_harm: int, scale: float, tilt: float = 1.1) -> np.ndarray:
    """Per-note harmonic amplitudes from the vowel's formants, shape ``(notes, n_harm)``."""
    if (sh := _shift.active()) is not None:
        scale, tilt = scale * sh.formant_scale, sh.formant_tilt
    k = np.arange(1, n_harm + 1)
    fk = hz(notes.midi)[:, None] * k[None, :]                       # (notes, harm)
    formants = VOWELS[notes.vowel] * scale                           # (notes, 3)
    d = (fk[:, :, None] - formants[:, None, :]) / (FORMANT_BW * scale / 2)
    env = (FORMANT_GAIN / np.sqrt(1 + d**2)).sum(axis=2)
    return env * k[None, :] ** -tilt + 0.02 * k[None, :] ** -tilt


def _norm(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return (x / peak).astype(np.float32) if peak > 0 else x.astype(np.float32)


# ------------------------------------------------------------------------ instruments

STRUMS = [[(0, 1), (1, 0.5), (1.5, 0.5), (2.5, 0.5), (3, 0.5), (3.5, 0.5)], [(0, 2), (2, 1), (3, 1)],
          [(0, 1), (1, 1), (2, 1), (3, 1)], [(0, 1.5), (1.5, 1), (2.5, 1.5)]]
COMPING = [[(0, 1.5), (1.5, 1), (2.5, 1.5)], [(0, 2), (2, 2)], [(0.5, 1), (1.5, 1), (2.5, 1), (3.5, 0.5)],
           [(0, 1), (1, 1), (2, 1), (3, 1)]]
EIGHTHS = [(i * 0.5, 0.5) for i in range(8)]


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _sum_lines(lines: list[Notes], music: Music, rng: np.random.Generator, timbre: Timbre,
               noise: tuple[float, tuple[float, float], float] | None = None) -> np.ndarray:
    """Render and sum lines; ``noise`` = (tau_s, band_hz, level) adds onset transients."""
    sr, n = music.sr, music.n_samples
    out = np.zeros(n, dtype=np.float32)
    for notes in lines:
        out += render_line(notes, sr=sr, n=n, timbre=timbre, rng=rng, noise=noise)
    return out


def _voice(notes: Notes, music: Music, rng: np.random.Generator, *, scale: float, n_harm: int, timbre: Timbre,
           consonant: float, breath: float) -> np.ndarray:
    sr, n = music.sr, music.n_samples
    x = render_line(notes, sr=sr, n=n, timbre=timbre, rng=rng, table=formant_table(notes, n_harm=n_harm, scale=scale))
    x = _norm(x)
    x += transients(notes, sr=sr, n=n, rng=rng, tau_s=0.02, band_hz=(2500.0, 9000.0), level=consonant)
    idx, active, tso = _line_state(notes, sr, n)
    gate = active * (tso < notes.dur_s[idx]) * notes.vel[idx]
    sos = signal.butter(2, [1200.0, min(6000.0, 0.45 * sr)], btype="band", fs=sr, output="sos")
    x += breath * gate.astype(np.float32) * signal.sosfilt(sos, rng.standard_normal(n)).astype(np.float32)
    return x


def _power_chords(music: Music, rng: np.random.Generator) -> list[Notes]:
    lines: list[list[tuple]] = [[], [], []]
    hits = _pick(rng, [EIGHTHS, [(0, 1.5), (1.5, 0.5), (2, 1.5), (3.5, 0.5)], [(0, 2), (2, 2)]])
    for bar in range(music.n_bars):
        root = _nearest_pc(music.chord(bar)[0], 40)
        for b, d in hits:
            v, t0 = _vel(music, rng, bar, b), music.t(bar, b) + _jit(rng, 0.004)
            for j, m in enumerate((root, root + 7, root + 12)):
                lines[j].append((t0 + 0.004 * j, d * music.beat_s * 0.95, m, v, 0))
    return [Notes.of(rows) for rows in lines]


def perform(label: str, music: Music, rng: np.random.Generator, *, part: str = "main") -> np.ndarray:
    """A mono performance of ``label`` over the song, shape ``(samples,)``, float32, peak 1.

    ``part`` is ``"main"`` or ``"second"`` (a second guitar or keys part, or backing vocals).
    """
    from stemdae.corpus.chains import apply_chain

    sr, n, second = music.sr, music.n_samples, part != "main"
    if label == "electric bass":
        x = _sum_lines([bass_line(music, rng)], music, rng, Timbre(10, 1.1, decay_s=0.9, sustain=0.25, release_s=0.05,
                       bright_tau_s=0.25, bright_floor=0.35), (0.004, (700.0, 4000.0), 0.12))
    elif label == "synth bass":
        x = _sum_lines([bass_line(music, rng)], music, rng, Timbre(16, 1.0, attack_s=0.002, decay_s=0.25, sustain=0.7,
                       release_s=0.03, bright_tau_s=0.12, bright_floor=0.55, detune_cents=7.0))
    elif label in ("clean electric guitar", "acoustic guitar"):
        acoustic = label == "acoustic guitar"
        lines = (roll_lines(music, rng, lo=55, hi=76, step_beats=0.5) if second else
                 chord_lines(music, rng, lo=48 if acoustic else 52, hi=70, n_voices=4, hits=_pick(rng, STRUMS),
                             strum_s=0.018 if acoustic else 0.012))
        x = _sum_lines(lines, music, rng, Timbre(14 if acoustic else 12, 0.9 if acoustic else 1.0,
                       decay_s=1.5 if acoustic else 1.2, sustain=0.05, bright_tau_s=0.3, bright_floor=0.35),
                       (0.003, (2000.0, 8000.0), 0.35 if acoustic else 0.2))
        if acoustic:  # body resonances
            x = apply_chain(x, sr, [{"type": "peak", "freq_hz": 105.0, "gain_db": 6.0, "q": 2.0},
                                    {"type": "peak", "freq_hz": 220.0, "gain_db": 3.0, "q": 1.5}])
    elif label == "distorted electric guitar":
        x = _norm(_sum_lines(_power_chords(music, rng), music, rng, Timbre(8, 1.0, decay_s=2.0, sustain=0.6,
                  release_s=0.05, bright_floor=0.8), (0.002, (1500.0, 6000.0), 0.15)))
        drive = float(rng.uniform(3, 6))
        x = np.tanh(drive * x) / np.tanh(drive)
        x = apply_chain(x, sr, [{"type": "highpass", "cutoff_hz": 80.0}, {"type": "lowpass", "cutoff_hz": 5000.0,
                                                                         "order": 2}])
    elif label == "banjo":
        lines = roll_lines(music, rng, lo=62, hi=79, step_beats=0.25 if music.tempo_bpm < 100 else 0.5)
        x = _sum_lines(lines, music, rng, Timbre(14, 0.7, decay_s=0.35, release_s=0.05, bright_tau_s=0.1,
                       bright_floor=0.45), (0.002, (3000.0, 9000.0), 0.4))
    elif label in ("piano", "tack piano"):
        tack = label == "tack piano"
        hits = _pick(rng, [EIGHTHS, COMPING[2]] if tack else COMPING)
        lines = chord_lines(music, rng, lo=53, hi=76, n_voices=4, hits=hits, strum_s=0.003)
        lines += chord_lines(music, rng, lo=36, hi=47, n_voices=1, hits=[(0, 2), (2, 2)], strum_s=0.0)
        x = _sum_lines(lines, music, rng, Timbre(12, 0.8 if tack else 1.3, attack_s=0.002, decay_s=0.8 if tack else 1.4,
                       release_s=0.2, bright_tau_s=0.45, bright_floor=0.35, detune_cents=14.0 if tack else 1.5),
                       (0.002, (1500.0, 8000.0) if tack else (300.0, 3000.0), 0.5 if tack else 0.2))
    elif label == "electric piano":
        lines = chord_lines(music, rng, lo=52, hi=72, n_voices=4, hits=_pick(rng, COMPING), strum_s=0.002,
                            seventh=True)
        x = _sum_lines(lines, music, rng, Timbre(6, 2.2, decay_s=2.5, sustain=0.2, release_s=0.25, bright_tau_s=0.2,
                       bright_floor=0.5, tremolo_hz=float(rng.uniform(3.5, 5.5)), tremolo_depth=0.3),
                       (0.003, (1500.0, 5000.0), 0.15))
    elif label in ("synth lead", "violin"):
        violin = label == "violin"
        notes = melody(music, rng, base=60 + music.tonic + (7 if violin else 0), rest_prob=0.35)
        x = _sum_lines([notes], music, rng, Timbre(16 if violin else 18, 1.0, even=1.0 if violin else 0.4,
                       attack_s=0.08 if violin else 0.01, decay_s=0.5, sustain=0.85, release_s=0.12 if violin else 0.06,
                       glide_s=0.03, vibrato_hz=6.0 if violin else 5.2, vibrato_cents=25.0 if violin else 12.0),
                       (0.05, (2000.0, 6000.0), 0.04) if violin else None)
    elif label in ("male singer", "female singer"):
        female = label == "female singer"
        base = (60 if female else 48) + music.tonic % 7 - (2 if second else 0)
        notes = melody(music, rng, base=base, rest_prob=0.5 if second else 0.2)
        x = _voice(notes, music, rng, scale=1.15 if female else 1.0, n_harm=14 if female else 20,
                   timbre=Timbre(attack_s=0.04, decay_s=1e9, sustain=1.0, release_s=0.1, glide_s=0.05,
                                 vibrato_hz=float(rng.uniform(4.8, 6.2)), vibrato_cents=float(rng.uniform(20, 40))),
                   consonant=0.15, breath=0.02)
    elif label == "male rapper":
        x = _voice(rap_flow(music, rng), music, rng, scale=1.0, n_harm=22,
                   timbre=Timbre(attack_s=0.01, decay_s=0.3, sustain=0.6, release_s=0.04, glide_s=0.03),
                   consonant=0.5, breath=0.05)
    elif label == "synthesizer":
        lines = chord_lines(music, rng, lo=55, hi=76, n_voices=3, hits=[(0, 4)], strum_s=0.0)
        x = _sum_lines(lines, music, rng, Timbre(10, 1.4, attack_s=0.3, decay_s=1.0, sustain=0.9, release_s=0.4,
                                                 detune_cents=9.0))
    else:
        raise ValueError(f"no performance for instrument {label!r}")
    return _norm(x)


def drum_kit(music: Music, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Kick, snare and hi-hat performances, each float32 ``(samples,)`` at the kit's relative levels."""
    sr, n = music.sr, music.n_samples
    trains = {k: np.zeros(n, dtype=np.float32) for k in ("kick", "snare", "hat")}

    def hit(piece: str, t: float, v: float) -> None:
        i = int(round(t * sr))
        if 0 <= i < n:
            trains[piece][i] += v * float(np.exp(rng.normal(0, 0.1)))

    kicks = _pick(rng, [[0, 2], [0, 2.5], [0, 1.5, 2], [0, 2, 2.75]])
    for bar in range(music.n_bars):
        g = music.gain(bar)
        for b in kicks:
            hit("kick", music.t(bar, b) + _jit(rng, 0.003), g)
        for b in (1, 3):
            hit("snare", music.t(bar, b) + _jit(rng, 0.003), g)
        if bar % 4 == 3 and rng.random() < 0.6:
            for i in range(4):
                hit("snare", music.t(bar, 3 + i / 4), g * (0.5 + 0.15 * i))
        for i in range(8):
            hit("hat", music.t(bar, i / 2) + _jit(rng, 0.004), g * (0.8 if i % 2 == 0 else 0.5))
    t = np.arange(int(0.4 * sr)) / sr
    noise = rng.standard_normal(len(t))
    kick = np.sin(2 * np.pi * np.cumsum(45 + 100 * np.exp(-t / 0.025)) / sr) * np.exp(-t / 0.18)
    kick += 0.3 * noise * np.exp(-t / 0.002)
    band = signal.butter(2, [1000.0, min(9000.0, 0.45 * sr)], btype="band", fs=sr, output="sos")
    snare = 0.7 * signal.sosfilt(band, noise) * np.exp(-t / 0.1) + 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.06)
    high = signal.butter(2, min(7000.0, 0.4 * sr), btype="high", fs=sr, output="sos")
    hat = 0.4 * signal.sosfilt(high, rng.standard_normal(len(t))) * np.exp(-t / 0.025)
    shots = {"kick": kick, "snare": snare, "hat": hat}
    return {k: signal.fftconvolve(trains[k], shots[k])[:n].astype(np.float32) for k in trains}


__all__ = ["Music", "Notes", "Timbre", "bass_line", "chord_lines", "draw_music", "drum_kit", "formant_table",
           "melody", "perform", "rap_flow", "render_line", "roll_lines", "transients"]
