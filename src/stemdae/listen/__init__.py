"""Listening tests (MUSHRA, ITU-R BS.1534-3) on held-out songs.

- :mod:`stemdae.listen.build`: excerpts, anchors, loudness matching, manifest, webMUSHRA export
  (``stemdae listen build``);
- :mod:`stemdae.listen.store`: the ratings database (SQLite or PostgreSQL, via SQLAlchemy Core);
- :mod:`stemdae.listen.app`: the local web app (FastAPI + uvicorn, ``stemdae listen serve``),
  its page in ``static/``;
- :mod:`stemdae.listen.analyse`: post-screening, statistics, plots, MLflow and DVC outputs
  (``stemdae listen analyse``).

Imports point down: ``build`` uses the stage modules (``baselines``, ``features``, ``process``),
``app`` and ``analyse`` use ``store``; nothing here imports ``cli``.
"""

MANIFEST = "manifest.json"
HIDDEN_REFERENCE = "hidden_reference"
BASELINE = "static_eq_gain"
ANCHORS = {"anchor_3k5": 3500.0, "anchor_7k": 7000.0}
LABELS = (("Excellent", 80), ("Good", 60), ("Fair", 40), ("Poor", 20), ("Bad", 0))
