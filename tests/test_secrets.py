"""Credentials never reach an output stream or a file: stemdae.secrets and its uses."""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_retrain import SECRET, _env, free_port

from stemdae.secrets import MaskingFilter, mask_text, mask_uri, uri_secrets



@pytest.mark.parametrize(("uri", "expected"), [
    ("https://alice:s3cret@mlflow.example.org:8443/x", "https://***@mlflow.example.org:8443/x"),
    ("postgresql+psycopg2://u:pw@h:5432/db", "postgresql+psycopg2://***@h:5432/db"),
    ("postgresql://alice@db/mlflow", "postgresql://***@db/mlflow"),
    ("https://h/x?a=1&token=abc&b=2", "https://h/x?a=1&token=***&b=2"),
    ("s3://bucket/m?X-Amz-Signature=zz", "s3://bucket/m?X-Amz-Signature=***"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("models:/stemdae-bass@champion", "models:/stemdae-bass@champion"),
    ("plain words, mail me@example.org", "plain words, mail me@example.org"),
])
def test_mask_uri(uri, expected):
    assert mask_uri(uri) == expected


def test_mask_text_masks_urls_inside_messages_and_literal_secrets():
    uri = "http://bob:p%40ss@127.0.0.1:9/"
    secrets = uri_secrets(uri)
    assert "p%40ss" in secrets and "p@ss" in secrets
    basic = base64.b64encode(b"bob:p@ss").decode()
    text = f"API request to {uri}api/2.0 failed (password p@ss, header Basic {basic})"
    masked = mask_text(text, secrets)
    assert "p%40ss" not in masked and "p@ss" not in masked and basic not in masked
    assert "http://***@127.0.0.1:9/api/2.0" in masked


def test_masking_filter_masks_log_records_and_tracebacks():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "store %s down", ("http://u:hunter22@h/",), None)
    try:
        raise RuntimeError("while talking to http://u:hunter22@h/api")
    except RuntimeError:
        import sys
        record.exc_info = sys.exc_info()
    assert MaskingFilter(["hunter22"]).filter(record)
    text = logging.Formatter().format(record)
    assert "hunter22" not in text and "http://***@h/" in text and "RuntimeError" in text


def test_run_info_written_without_credentials(tmp_path):
    from stemdae.tracking import read_run_info, write_run_info

    write_run_info(tmp_path, {"run_id": "r1", "tracking_uri": f"https://alice:{SECRET}@mlflow.example.org/",
                              "registered_version": 3})
    assert SECRET not in (tmp_path / "mlflow.json").read_text()
    info = read_run_info(tmp_path)
    assert info["tracking_uri"] == "https://***@mlflow.example.org/" and info["registered_version"] == 3


def _closed_port_uri() -> str:
    return f"http://alice:{SECRET}@127.0.0.1:{free_port()}/"  # nothing listens there


def test_unreachable_tracking_server_fails_fast_in_one_masked_line(tmp_path):
    """`stemdae process` with a dead MLFLOW_TRACKING_URI: seconds, one line, no password, no traceback."""
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")
    sf.write(tmp_path / "f.wav", (0.1 * np.sin(np.arange(44100) / 10)).astype(np.float32), 44100)
    uri = _closed_port_uri()
    env = _env(MLFLOW_TRACKING_URI=uri)
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        env.pop(key, None)  # the CLI's own defaults are under test
    t0 = time.perf_counter()
    proc = subprocess.run(["stemdae", "process", "f.wav", "--group", "bass"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert elapsed < 20, f"took {elapsed:.0f} s"
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert mask_uri(uri) in errors[0] and "unreachable" in errors[0]
    assert SECRET not in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("*.bass.*"))


# The password in MLFLOW_TRACKING_URI through `stemdae main`, `retrain` and `process` against a real
# server: test_retrain.py::test_main_then_retrain_end_to_end_with_a_password_in_the_tracking_uri.
