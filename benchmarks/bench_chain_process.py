"""``stemdae process --model <chain>``: real-time factor including start-up, 3-minute stereo file.

Three chain models of the shape ``stemdae chain fit`` writes for the vocal group (44.1 kHz front
end, 3 bells, compressor, 1 s convolution reverb; settings are fixed and the cost does not depend
on them): the preset ``chain.pt`` with reverb, the same without reverb, and a ``conditional.pt``
(untrained encoder: same cost) whose settings are predicted from the file's loudest 10 s window.
Each command runs ``--repeats`` times in a fresh process (interpreter start, imports, model load,
loudness pass, pedalboard and the reverb's convolution, writing), wall time from spawn to exit
divided by the audio's duration, median; peak RSS from GNU time. At 48 kHz these chains render at
the file's own rate (their response there is within 0.5 dB of 44.1 kHz's: ``chain.render.renders_at``);
``--resampled`` adds a chain whose 15 kHz, Q 6 bell is not (resampled 48 -> 44.1 -> 48 kHz).

    python benchmarks/bench_chain_process.py [--minutes 3] [--repeats 5] [--rates 48000 44100] [--resampled]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_process import run_child, write_song  # noqa: E402


def chain_models(root: Path, *, resampled: bool = False) -> dict[str, Path]:
    """``name -> model path`` of the chain models (module docstring)."""
    from stemdae.chain import Chain, ChainConfig
    from stemdae.chain.conditional import ConditionalChain
    from stemdae.config import Params
    from stemdae.frontend import FrontEnd, TrainedOn

    meta = {"group": "vocal", "frontend": FrontEnd.from_params(Params()).to_dict(),
            "trained_on": TrainedOn("real", "benchmark").to_dict()}
    out = {}
    kinds = [("preset_reverb", True), ("preset_no_reverb", False)] + ([("preset_reverb_resampled", True)]
                                                                      if resampled else [])
    for name, reverb in kinds:
        s = Chain(ChainConfig(sr=44100, n_bells=3, reverb=reverb)).settings()
        s["compressor"].update(threshold_db=-30.0, ratio=4.0)
        if reverb:
            s["reverb"].update(rt60_s=1.2, wet_db=-14.0)
        if name.endswith("resampled"):
            s["bell2"].update(freq_hz=15000.0, gain_db=-6.0, q=6.0)
        folder = root / name
        folder.mkdir(parents=True)
        Chain.from_settings(s).save(folder / "chain.pt", **meta)
        out[name] = folder
    cond = ConditionalChain(ChainConfig(sr=44100, n_bells=3, reverb=True))
    (root / "conditional").mkdir()
    cond.save(root / "conditional" / "conditional.pt", **meta)
    out["conditional_reverb"] = root / "conditional" / "conditional.pt"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rates", type=int, nargs="+", default=[48000])
    ap.add_argument("--resampled", action="store_true")
    args = ap.parse_args()
    results: dict[str, object] = {"cpu_count": os.cpu_count(), "load_avg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-chain-process-") as tmp:
        tmp = Path(tmp)
        models = chain_models(tmp / "models", resampled=args.resampled)
        os.chdir(tmp)  # no params.yaml here: --model alone must do
        for sr in args.rates:
            song = tmp / f"song{sr}.wav"
            duration = write_song(song, args.minutes, sr=sr)
            for name, model in models.items():
                argv = [sys.executable, "-m", "stemdae.cli", "-q", "process", str(song), "--model", str(model),
                        "-o", str(tmp / "out.wav")]
                run_child(argv)  # warm the page cache
                runs = [run_child(argv) for _ in range(args.repeats)]
                walls = [r[0] for r in runs]
                results[f"{name}@{sr}"] = {"wall_s_median": round(statistics.median(walls), 3),
                                           "wall_s_all": [round(w, 3) for w in walls],
                                           "rtf_median": round(statistics.median(walls) / duration, 4),
                                           "cpu_s_median": round(statistics.median(r[2] for r in runs), 3),
                                           "peak_rss_mib": round(max(r[1] for r in runs) / 2**20, 1)}
        results["song"] = f"{args.minutes:g} min stereo 16-bit WAV at {args.rates} Hz -> stereo float WAV"
    results["load_avg_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
