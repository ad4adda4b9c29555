"""``stemdae process``: real-time factor including start-up, and peak RSS against the file's length.

1. Writes a stereo 48 kHz 16-bit WAV of ``--minutes`` (tones + noise, seeded)
   and a paper-sized model (1025-1024-1024-1024-1025, random weights: the
   cost does not depend on the weights) unless ``--model`` is given.
2. Real-time factor: ``--repeats`` runs of the real command
   ``python -m stemdae.cli process song.wav --group vocal --model DIR -o out.wav``
   in fresh processes, wall time from spawn to exit (interpreter start,
   imports, model load, both passes, write) divided by the audio's duration
   (and the child's CPU time, less sensitive to other load on the machine);
   plus the same with ``--restore-loudness``, and ``python -c "import
   stemdae.process, stemdae.predictor"`` alone (the start-up share).
3. One in-process breakdown: imports, model load, pass 1 (loudness), pass 2.
4. Peak RSS (``ru_maxrss`` of the child, from ``os.wait4``) of the same command
   for files of ``--rss-minutes`` (default 3, 15 and 60 minutes).

    python benchmarks/bench_process.py [--minutes 3] [--repeats 5] [--rss-minutes 3 15 60] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 48000


def write_song(path: Path, minutes: float, *, seed: int = 0) -> float:
    """Stereo 16-bit WAV of tones + noise written in 10 s blocks; returns its duration in s."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * SR)
    freqs = np.array([110.0, 220.0, 330.0, 440.0, 587.0])
    with sf.SoundFile(path, "w", samplerate=SR, channels=2, subtype="PCM_16") as f:
        for start in range(0, n, 10 * SR):
            t = np.arange(start, min(start + 10 * SR, n)) / SR
            tone = 0.05 * np.sin(2 * np.pi * freqs[:, None] * t).sum(axis=0)
            block = tone[:, None] + 0.02 * rng.standard_normal((t.size, 2))
            f.write(block.astype(np.float32))
    return n / SR


def paper_model(folder: Path) -> Path:
    import torch

    from stemdae.model import StackedAutoencoder
    from stemdae.predictor import save_model
    from stemdae.scaling import Scaler

    torch.manual_seed(0)
    net = StackedAutoencoder(1025, [1024, 1024, 1024], 0.2, "identity")
    save_model(folder / "model.pt", net, Scaler("log_standardized", 1025), group="vocal",
               features={"n_fft": 2048, "hop": 1024, "sr": 44100, "n_bins": 1025})
    return folder


def run_child(argv: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS in bytes (``ru_maxrss``) and CPU seconds (user + system) of one child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode(errors="replace")  # drain first: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def process_argv(song: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stemdae.cli", "-q", "process", str(song), "--group", "vocal",
            "--model", str(model), "-o", str(out), *extra]


def breakdown(song: Path, model: Path, out: Path) -> dict[str, float]:
    code = f"""
import json, time
t0 = time.perf_counter()
import stemdae.process as P
from stemdae.config import Params
t1 = time.perf_counter()
pred = P.load_model({str(model)!r})
st = P.settings_for(pred, Params())
t2 = time.perf_counter()
src = P._FileSource(P.Path({str(song)!r}))
m = P.LoudnessMeter(src.sr)
for c in src():
    m.update(c)
t3 = time.perf_counter()
P.process_file({str(song)!r}, {str(out)!r}, predictor=pred, st=st)
t4 = time.perf_counter()
print(json.dumps({{"import_stemdae_process_s": t1 - t0, "import_torch_and_load_model_s": t2 - t1, "pass1_read_loudness_s": t3 - t2,
                  "process_file_s (both passes + write)": t4 - t3}}))
"""
    out_json = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out_json.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rss-minutes", type=float, nargs="*", default=[3.0, 15.0, 60.0])
    ap.add_argument("--model", type=Path, default=None, help="a models/<group> folder (default: paper-sized, random)")
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "numba"))
    results: dict[str, object] = {"cpu_count": os.cpu_count(), "load_avg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        tmp = Path(tmp)
        model = args.model or paper_model(tmp / "models" / "vocal")
        song = tmp / "song.wav"
        duration = write_song(song, args.minutes)
        out = tmp / "out.wav"
        run_child(process_argv(song, model, out))  # warm the page cache and any compiled caches
        runs = [run_child(process_argv(song, model, out)) for _ in range(args.repeats)]
        walls, cpus = [r[0] for r in runs], [r[2] for r in runs]
        walls_rl = [run_child(process_argv(song, model, out, "--restore-loudness"))[0]
                    for _ in range(max(args.repeats // 2, 1))]
        imports = [run_child([sys.executable, "-c", "import stemdae.process, stemdae.predictor"])[0]
                   for _ in range(args.repeats)]
        results.update({
            "song": f"{args.minutes:g} min stereo {SR} Hz 16-bit WAV",
            "wall_s_median": statistics.median(walls), "wall_s_all": [round(w, 3) for w in walls],
            "rtf_median": statistics.median(walls) / duration,
            "cpu_s_median": statistics.median(cpus), "cpu_rtf_median": statistics.median(cpus) / duration,
            "rtf_restore_loudness_median": statistics.median(walls_rl) / duration,
            "startup_imports_s_median": statistics.median(imports),
            "breakdown": breakdown(song, model, out),
        })
        rss = {}
        for minutes in args.rss_minutes:
            path = tmp / f"long-{minutes:g}.wav"
            write_song(path, minutes, seed=1)
            wall, peak, cpu = run_child(process_argv(path, model, tmp / "long-out.wav"))
            rss[f"{minutes:g} min"] = {"peak_rss_mib": round(peak / 2**20, 1), "wall_s": round(wall, 2),
                                       "cpu_s": round(cpu, 2),
                                       "rtf": round(wall / (minutes * 60), 4)}
            path.unlink()
            (tmp / "long-out.wav").unlink()
        results["peak_rss"] = rss
    results["load_avg_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
