"""What a stage returns: counts, outputs, skips (file + reason) and elapsed time."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Skip:
    """One input a stage could not use, with the reason (counted in reports)."""

    file: str
    reason: str

    def text(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass
class Summary:
    """A stage's one-line-plus-details result."""

    stage: str
    counts: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    elapsed_s: float | None = None
    exit_code: int = 0

    def skip(self, file: str | Path, reason: str) -> None:
        self.skips.append(Skip(str(file), reason))

    def done(self) -> Summary:
        self.elapsed_s = time.perf_counter() - self.started
        return self

    def text(self) -> str:
        if self.elapsed_s is None:
            self.done()
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        line = f"[{self.stage}] {counts}; skipped={len(self.skips)}; {self.elapsed_s:.1f} s"
        if self.outputs:
            line += " -> " + ", ".join(self.outputs)
        lines = [line] + [f"  skipped {s.text()}" for s in self.skips]
        return "\n".join(lines)

    def to_json(self, *, timing: bool = True) -> dict[str, Any]:
        """The summary as JSON; ``timing=False`` for a file inside a DVC output, which must depend
        on the inputs alone (the same inputs, byte-identical outputs: equal hashes in every clone)."""
        out = {
            "stage": self.stage,
            "counts": self.counts,
            "outputs": self.outputs,
            "skipped": [{"file": s.file, "reason": s.reason} for s in self.skips],
        }
        return out | ({"elapsed_s": self.elapsed_s} if timing else {})

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
