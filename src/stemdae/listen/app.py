"""``stemdae listen serve``: the MUSHRA page and its JSON API (FastAPI, served by uvicorn).

Blind by construction: a listener sees condition *keys* (``A``, ``B``, ...),
shuffled per listener and trial with a generator seeded by the test's seed,
the listener id and the trial id; the server maps keys back to conditions.
Trial order is shuffled per listener the same way, so a returning listener
gets the same order and resumes at the first trial not yet stored.

Only three kinds of file leave the server: the page's own files (a fixed
list read from ``static/`` at start-up), and audio files named in the
manifest, looked up by trial id and key (never by a path from the request)
and checked to lie inside the test folder. Anything else is a 404.

Errors are JSON ``{"detail": "..."}``: 404 unknown listener/trial/key/file,
409 replayed submission, 422 a rating outside 0-100 or a wrong set of keys.
"""

from __future__ import annotations

import logging
import math
import re
import string
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import FileResponse, JSONResponse

from stemdae.errors import ConfigError, StemdaeError
from stemdae.io import read_json
from stemdae.listen import HIDDEN_REFERENCE, LABELS, MANIFEST
from stemdae.listen.store import ReplayedSubmission, Store, StoreError, default_url

log = logging.getLogger(__name__)

LISTENER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
KEYS = string.ascii_uppercase
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


# ------------------------------------------------------------------ the test


class ListeningTest:
    """A built test folder: its manifest, and the per-listener orders derived from its seed."""

    def __init__(self, test_dir: str | Path) -> None:
        self.dir = Path(test_dir).resolve()
        path = self.dir / MANIFEST
        if not path.is_file():
            raise ConfigError(f"{path}: missing; build the test first (`stemdae listen build`)")
        self.manifest = read_json(path)
        self.name = str(self.manifest["name"])
        self.seed = int(self.manifest.get("settings", {}).get("seed", 0))
        self.trials = {t["id"]: t for t in self.manifest["trials"]}
        self.training_id = self.manifest.get("training_trial") or next(iter(self.trials))

    def order(self, listener: str) -> list[str]:
        """The listener's trial order (seeded by the listener id)."""
        ids = sorted(self.trials)
        rng = np.random.default_rng([self.seed, zlib.crc32(listener.encode())])
        return [ids[i] for i in rng.permutation(len(ids))]

    def keys(self, listener: str, trial_id: str) -> dict[str, str]:
        """``key -> condition`` for one listener and trial (seeded shuffle)."""
        conds = sorted(self.trials[trial_id]["conditions"])
        rng = np.random.default_rng([self.seed, zlib.crc32(listener.encode()), zlib.crc32(trial_id.encode())])
        return {KEYS[k]: conds[i] for k, i in enumerate(rng.permutation(len(conds)))}

    def audio_path(self, trial_id: str, condition: str | None) -> Path:
        t = self.trials[trial_id]
        rel = t["reference"] if condition is None else t["conditions"][condition]
        path = (self.dir / rel).resolve()
        if not path.is_relative_to(self.dir) or not path.is_file():
            raise KeyError(rel)
        return path


def static_files() -> dict[str, Path]:
    """The page's files: everything directly in the package's ``static/`` with a known type."""
    root = resources.files("stemdae.listen") / "static"
    return {p.name: Path(str(p)) for p in root.iterdir() if Path(p.name).suffix in STATIC_TYPES}


# ------------------------------------------------------------------ validation


def _listener(store: Store, listener: str, *, create: bool = False) -> dict[str, Any]:
    """The listener's row (created with ``create``); 422 for a malformed id, 404 for an unknown one."""
    if not LISTENER_RE.match(listener or ""):
        raise HTTPException(422, "listener id: 1-64 characters from A-Z a-z 0-9 _ . @ -")
    if create:
        return store.ensure_listener(listener)
    if not store.has_listener(listener):
        raise HTTPException(404, f"unknown listener {listener!r}: start a session first")
    return {}


def _trial(test: Test, trial_id: str) -> dict[str, Any]:
    if trial_id not in test.trials:
        raise HTTPException(404, f"unknown trial {trial_id!r}")
    return test.trials[trial_id]


def _ratings(body: dict[str, Any], keys: dict[str, str]) -> tuple[dict[str, float], dict[str, int]]:
    ratings, plays = body.get("ratings"), body.get("plays") or {}
    if not isinstance(ratings, dict) or set(ratings) != set(keys):
        got = sorted(ratings) if isinstance(ratings, dict) else type(ratings).__name__
        raise HTTPException(422, f"ratings: expected one per condition key {sorted(keys)}, found {got}")
    out = {}
    for k, v in ratings.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 100:
            raise HTTPException(422, f"rating of {k}: expected a number in 0-100, found {v!r}")
        out[keys[k]] = float(v)
    if not isinstance(plays, dict) or any(not isinstance(n, int) or n < 0 for n in plays.values()):
        raise HTTPException(422, "plays: expected a non-negative integer per key")
    n_plays = {keys[k]: int(n) for k, n in plays.items() if k in keys}
    return out, n_plays


# ------------------------------------------------------------------ the app


def create_app(test_dir: str | Path, *, db_url: str | None = None) -> FastAPI:
    """The web app for the test in ``test_dir``, storing ratings at ``db_url`` (default: ``ratings.db`` there)."""
    test = ListeningTest(test_dir)
    store = Store(db_url or default_url(test.dir), test.name)
    files = static_files()
    app = FastAPI(title=f"stemdae listening test {test.name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store

    @app.exception_handler(StemdaeError)
    def _stemdae_error(_request, err: StemdaeError):
        return JSONResponse({"detail": str(err)}, status_code=503 if isinstance(err, StoreError) else 400)

    @app.get("/")
    def index():
        return FileResponse(files["index.html"], media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str):
        if name not in files:
            raise HTTPException(404, "not found")
        return FileResponse(files[name], media_type=STATIC_TYPES[Path(name).suffix])

    @app.post("/api/session")
    def session(body: dict = Body(...)):
        listener = str(body.get("listener_id", ""))
        row = _listener(store, listener, create=True)
        order, done = test.order(listener), store.done_trials(listener)
        keys = test.keys(listener, test.training_id)
        return {"test": test.name, "listener_id": listener, "order": order,
                "done": [t for t in order if t in done], "training_done": row.get("training_done_at") is not None,
                "training": {"trial_id": test.training_id, "keys": list(keys)},
                "labels": [{"label": lab, "min": lo} for lab, lo in LABELS]}

    @app.post("/api/training/{listener}")
    def training(listener: str):
        _listener(store, listener)
        store.finish_training(listener)
        return {"ok": True}

    @app.get("/api/trial/{listener}/{trial_id}")
    def trial(listener: str, trial_id: str):
        _listener(store, listener)
        t = _trial(test, trial_id)
        keys = test.keys(listener, trial_id)
        base = f"/api/audio/{listener}/{trial_id}"
        return {"trial_id": trial_id, "position": test.order(listener).index(trial_id),
                "n_trials": len(test.trials), "duration_s": t["duration_s"], "reference": f"{base}/ref",
                "keys": list(keys), "audio": {k: f"{base}/{k}" for k in keys}}

    @app.get("/api/audio/{listener}/{trial_id}/{key}")
    def audio(listener: str, trial_id: str, key: str):
        if not LISTENER_RE.match(listener):
            raise HTTPException(404, "not found")
        _trial(test, trial_id)
        keys = test.keys(listener, trial_id)
        if key != "ref" and key not in keys:
            raise HTTPException(404, f"unknown condition key {key!r}")
        try:
            path = test.audio_path(trial_id, None if key == "ref" else keys[key])
        except KeyError:
            raise HTTPException(404, "not found") from None
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/submit")
    def submit(body: dict = Body(...)):
        listener, trial_id = str(body.get("listener_id", "")), str(body.get("trial_id", ""))
        _listener(store, listener)
        _trial(test, trial_id)
        keys = test.keys(listener, trial_id)
        ratings, plays = _ratings(body, keys)
        started = body.get("started_at")
        started = float(started) if isinstance(started, (int, float)) and math.isfinite(started) else None
        try:
            sid = store.submit(listener, trial_id, position=test.order(listener).index(trial_id),
                               ratings=ratings, plays=plays, started_at=started)
        except ReplayedSubmission as err:
            raise HTTPException(409, str(err)) from None
        done = store.done_trials(listener)
        return {"submission_id": sid, "done": len(done), "n_trials": len(test.trials)}

    return app


def check_hidden_reference(test: ListeningTest) -> None:
    """Every trial has a hidden reference (the screening needs it)."""
    for t in test.trials.values():
        if HIDDEN_REFERENCE not in t["conditions"]:
            raise ConfigError(f"{test.dir / MANIFEST}: trial {t['id']} has no {HIDDEN_REFERENCE}")


def serve(test_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8765, db_url: str | None = None) -> None:
    """Run the app until interrupted (blocking)."""
    import uvicorn

    test = ListeningTest(test_dir)
    check_hidden_reference(test)
    app = create_app(test_dir, db_url=db_url)
    log.info("listen serve: test %s (%d trials) on http://%s:%d/", test.name, len(test.trials), host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
