"""``stemdae process``: real-time factor including start-up (via ``--group`` and ``--model``), peak RSS vs length.

1. Writes a stereo 48 kHz 16-bit WAV of ``--minutes`` (tones + noise, seeded)
   and a paper-sized model (1025-1024-1024-1024-1025, random weights: the cost
   does not depend on the weights) into a throw-away project: ``models/vocal``
   with ``model.pt`` and ``mlflow.json``, registered as version 1 of
   ``stemdae-vocal`` (alias ``champion``) in the project's SQLite MLflow store.
2. Real-time factor: ``--repeats`` runs of each real command in fresh processes,
   wall time from spawn to exit (interpreter start, imports, model resolution
   and load, both passes, write) divided by the audio's duration:
   ``python -m stemdae.cli --root PROJ --params PROJ/params.yaml process song.wav --group vocal -o out.wav``
   (the registered champion, resolved from the SQLite store without MLflow) and
   ``python -m stemdae.cli process song.wav --model PROJ/models/vocal -o out.wav``
   (run from a folder without params.yaml). The input is stereo, so the output is too.
3. Peak RSS (GNU time's ``%M`` of the child) of the ``--group``
   command for files of ``--rss-minutes`` (default 3 and 60 minutes).

    python benchmarks/bench_process.py [--minutes 3] [--repeats 5] [--rss-minutes 3 60] [--precision bf16]
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


def write_song(path: Path, minutes: float, *, seed: int = 0, sr: int = SR) -> float:
    """Stereo 16-bit WAV of tones + noise at ``sr`` written in 10 s blocks; returns its duration in s."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * sr)
    freqs = np.array([110.0, 220.0, 330.0, 440.0, 587.0])
    with sf.SoundFile(path, "w", samplerate=sr, channels=2, subtype="PCM_16") as f:
        for start in range(0, n, 10 * sr):
            t = np.arange(start, min(start + 10 * sr, n)) / sr
            tone = 0.05 * np.sin(2 * np.pi * freqs[:, None] * t).sum(axis=0)
            block = tone[:, None] + 0.02 * rng.standard_normal((t.size, 2))
            f.write(block.astype(np.float32))
    return n / sr


def run_child(argv: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS in bytes and CPU seconds (user + system) of one child.

    The peak RSS comes from GNU time (``%M``), not from this process's ``wait4``:
    Linux keeps a child's ``ru_maxrss`` across ``execve``, so a child forked from
    this (torch-importing, ~500 MiB) process reported this process's size.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "STEMDAE_RSS_KIB %M", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read().decode(errors="replace")  # drain first: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = [int(line.split()[1]) for line in err.splitlines() if line.startswith("STEMDAE_RSS_KIB ")]
    if proc.returncode != 0 or not rss:
        raise RuntimeError(f"{argv} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, rss[-1] * 1024, usage.ru_utime + usage.ru_stime


def paper_project(root: Path) -> Path:
    """A project with the paper-sized model registered as the champion of stemdae-vocal, with its local copy."""
    import torch

    from stemdae import tracking
    from stemdae.config import Params, TrackingParams
    from stemdae.frontend import FrontEnd, TrainedOn
    from stemdae.model import StackedAutoencoder
    from stemdae.predictor import save_model
    from stemdae.scaling import Scaler

    torch.manual_seed(0)
    root.mkdir(parents=True)
    params = Params(tracking=TrackingParams(uri="sqlite:///mlflow.db"))
    (root / "params.yaml").write_text("tracking:\n  uri: sqlite:///mlflow.db\n")
    folder = root / "models" / "vocal"
    net = StackedAutoencoder(1025, [1024, 1024, 1024], 0.2, "identity")
    pt = save_model(folder / "model.pt", net, Scaler("log_standardized", 1025), frontend=FrontEnd.from_params(params),
                    trained_on=TrainedOn("real", "benchmark"), group="vocal")
    tracking.configure(params.tracking, root)
    run_id = tracking.start_group_run(params.tracking, root, group="vocal", parent_run_id=None, params_flat={})
    info = tracking.log_model(run_id, pt, n_bins=1025, registered_name="stemdae-vocal")
    tracking.finish_run(run_id)
    tracking.set_alias("stemdae-vocal", info["registered_version"], "champion")
    tracking.write_run_info(folder, {"run_id": run_id, **info, "registered_name": "stemdae-vocal"})
    return root


PRECISION: list[str] = []  # ["--precision", "bf16"] with --precision bf16


def group_argv(song: Path, project: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "stemdae.cli", "-q", "--root", str(project), "--params",
            str(project / "params.yaml"), "process", str(song), "--group", "vocal", "-o", str(out), *PRECISION]


def model_argv(song: Path, project: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "stemdae.cli", "-q", "process", str(song), "--model",
            str(project / "models" / "vocal"), "-o", str(out), *PRECISION]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rss-minutes", type=float, nargs="*", default=[3.0, 60.0])
    ap.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="pass --precision to the command")
    args = ap.parse_args()
    if args.precision:
        PRECISION[:] = ["--precision", args.precision]
    results: dict[str, object] = {"cpu_count": os.cpu_count(), "load_avg_before": os.getloadavg(),
                                  "precision": args.precision or "default (fp32)"}
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        tmp = Path(tmp)
        project = paper_project(tmp / "project")
        song = tmp / "song.wav"
        duration = write_song(song, args.minutes)
        out = tmp / "out.wav"
        os.chdir(tmp)  # no params.yaml here: --model alone must do
        run_child(group_argv(song, project, out))  # warm the page cache
        for name, argv in (("group", group_argv), ("model", model_argv)):
            runs = [run_child(argv(song, project, out)) for _ in range(args.repeats)]
            walls, cpus = [r[0] for r in runs], [r[2] for r in runs]
            results[name] = {"wall_s_median": round(statistics.median(walls), 3),
                             "wall_s_all": [round(w, 3) for w in walls],
                             "rtf_median": round(statistics.median(walls) / duration, 4),
                             "cpu_s_median": round(statistics.median(cpus), 3)}
        results["song"] = f"{args.minutes:g} min stereo {SR} Hz 16-bit WAV -> stereo float WAV"
        rss = {}
        for minutes in args.rss_minutes:
            path = tmp / f"long-{minutes:g}.wav"
            write_song(path, minutes, seed=1)
            wall, peak, cpu = run_child(group_argv(path, project, tmp / "long-out.wav"))
            rss[f"{minutes:g} min"] = {"peak_rss_mib": round(peak / 2**20, 1), "wall_s": round(wall, 2),
                                       "cpu_s": round(cpu, 2), "rtf": round(wall / (minutes * 60), 4)}
            path.unlink()
            (tmp / "long-out.wav").unlink()
        results["peak_rss"] = rss
    results["load_avg_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
