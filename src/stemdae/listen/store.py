"""The ratings database: SQLite by default, or any SQLAlchemy URL (the sweeps' PostgreSQL works too).

Three tables, every row keyed by the test's name so several tests can share
one database:

- ``listen_listeners``: ``test, listener_id, created_at, training_done_at``;
- ``listen_submissions``: one row per (test, listener, trial), unique: a
  replayed submission violates the constraint and is refused;
- ``listen_ratings``: one row per condition of a submission: ``rating``
  (0-100), ``plays`` (times the listener switched to it while playing).

A submission (its row and all its ratings) is written in one transaction, so
a listener's trial is either stored whole or not at all, and survives a
server restart (SQLite in WAL mode, synchronous commits).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from stemdae.errors import StemdaeError

log = logging.getLogger(__name__)

META = sa.MetaData()
LISTENERS = sa.Table(
    "listen_listeners", META,
    sa.Column("test", sa.String(200), primary_key=True),
    sa.Column("listener_id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("training_done_at", sa.Float),
)
SUBMISSIONS = sa.Table(
    "listen_submissions", META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("test", sa.String(200), nullable=False),
    sa.Column("listener_id", sa.String(64), nullable=False),
    sa.Column("trial_id", sa.String(100), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("submitted_at", sa.Float, nullable=False),
    sa.UniqueConstraint("test", "listener_id", "trial_id", name="uq_listen_submission"),
)
RATINGS = sa.Table(
    "listen_ratings", META,
    sa.Column("submission_id", sa.Integer, sa.ForeignKey("listen_submissions.id"), primary_key=True),
    sa.Column("condition", sa.String(100), primary_key=True),
    sa.Column("rating", sa.Float, nullable=False),
    sa.Column("plays", sa.Integer, nullable=False),
)


class StoreError(StemdaeError):
    """The ratings database cannot be opened or written."""


class ReplayedSubmission(StemdaeError):
    """This listener already submitted this trial."""


def default_url(test_dir: Path) -> str:
    return f"sqlite:///{Path(test_dir).resolve() / 'ratings.db'}"


def _safe(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class Store:
    """Ratings of one test in the database at ``url`` (tables created when missing)."""

    def __init__(self, url: str, test: str) -> None:
        self.test = test
        self.url = url
        try:
            if url.startswith("sqlite"):
                self.engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=40)
            META.create_all(self.engine)
        except (sa.exc.SQLAlchemyError, OSError) as err:
            raise StoreError(f"ratings database {_safe(url)}: cannot open ({type(err).__name__}: "
                             f"{str(err).splitlines()[0]})") from None

    def ensure_listener(self, listener_id: str) -> dict[str, Any]:
        """The listener's row, created on first sight."""
        with self.engine.begin() as con:
            row = con.execute(sa.select(LISTENERS).where(
                LISTENERS.c.test == self.test, LISTENERS.c.listener_id == listener_id)).mappings().first()
            if row is None:
                try:
                    con.execute(LISTENERS.insert().values(test=self.test, listener_id=listener_id,
                                                          created_at=time.time()))
                except IntegrityError:  # created by a concurrent request meanwhile
                    pass
                row = {"test": self.test, "listener_id": listener_id, "training_done_at": None}
            return dict(row)

    def has_listener(self, listener_id: str) -> bool:
        with self.engine.connect() as con:
            return con.execute(sa.select(LISTENERS.c.listener_id).where(
                LISTENERS.c.test == self.test, LISTENERS.c.listener_id == listener_id)).first() is not None

    def finish_training(self, listener_id: str) -> None:
        with self.engine.begin() as con:
            con.execute(LISTENERS.update().where(
                LISTENERS.c.test == self.test, LISTENERS.c.listener_id == listener_id,
                LISTENERS.c.training_done_at.is_(None)).values(training_done_at=time.time()))

    def done_trials(self, listener_id: str) -> set[str]:
        with self.engine.connect() as con:
            rows = con.execute(sa.select(SUBMISSIONS.c.trial_id).where(
                SUBMISSIONS.c.test == self.test, SUBMISSIONS.c.listener_id == listener_id))
            return {r[0] for r in rows}

    def submit(self, listener_id: str, trial_id: str, *, position: int, ratings: dict[str, float],
               plays: dict[str, int], started_at: float | None) -> int:
        """Store one trial's ratings atomically; returns the submission id.

        Raises
        ------
        ReplayedSubmission
            The listener already submitted this trial (nothing is written).
        """
        try:
            with self.engine.begin() as con:
                sid = con.execute(SUBMISSIONS.insert().values(
                    test=self.test, listener_id=listener_id, trial_id=trial_id, position=position,
                    started_at=started_at, submitted_at=time.time())).inserted_primary_key[0]
                con.execute(RATINGS.insert(), [
                    {"submission_id": sid, "condition": c, "rating": float(r), "plays": int(plays.get(c, 0))}
                    for c, r in ratings.items()])
                return int(sid)
        except IntegrityError:
            raise ReplayedSubmission(f"listener {listener_id!r} already submitted trial {trial_id!r}") from None
        except OperationalError as err:
            raise StoreError(f"ratings database {_safe(self.url)}: write failed ({str(err).splitlines()[0]})") from None

    def ratings(self) -> pd.DataFrame:
        """Every rating of the test: ``listener_id, trial_id, position, condition, rating, plays, submitted_at``."""
        q = (sa.select(SUBMISSIONS.c.listener_id, SUBMISSIONS.c.trial_id, SUBMISSIONS.c.position,
                       RATINGS.c.condition, RATINGS.c.rating, RATINGS.c.plays, SUBMISSIONS.c.submitted_at,
                       SUBMISSIONS.c.started_at)
             .join(RATINGS, RATINGS.c.submission_id == SUBMISSIONS.c.id)
             .where(SUBMISSIONS.c.test == self.test)
             .order_by(SUBMISSIONS.c.id, RATINGS.c.condition))
        with self.engine.connect() as con:
            return pd.DataFrame(con.execute(q).mappings().all(),
                                columns=["listener_id", "trial_id", "position", "condition", "rating", "plays",
                                         "submitted_at", "started_at"])

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_con: Any, _record: Any) -> None:
    cur = dbapi_con.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA synchronous=FULL")  # a committed rating survives a crash
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
