"""Processing recordings with a trained model: the front end, the render core, models, files, the pyfunc.

Modules (imports point down this list; none imports :mod:`stemdae.tracking`
except :mod:`.models`, lazily, for MLflow URIs, and nothing imports back):

- :mod:`.render`: settings from the model's front end, the loudness gain, the streamed render core;
- :mod:`.models`: which model (local, URI, registry without MLflow when possible), loading, device;
- :mod:`.files`: file sources, output formats, never overwriting an input, temp files, OS errors;
- :mod:`.api`: ``stemdae.process(audio, sr, ...)`` in memory and what the pyfunc answers;
- :mod:`.batch`: ``stemdae process`` (files, folders, globs, workers) and :func:`process_batch`;
- :mod:`.pyfunc`: the MLflow model *as code* (loaded by MLflow only; imports mlflow).
"""

from stemdae.inference.api import process, serve_predict
from stemdae.inference.batch import expand_inputs, plan_outputs, process_batch, process_files
from stemdae.inference.files import process_file
from stemdae.inference.models import load_model, resolve_model
from stemdae.inference.render import Settings, render, settings_for

__all__ = ["Settings", "expand_inputs", "load_model", "plan_outputs", "process", "process_batch", "process_file",
           "process_files", "render", "resolve_model", "serve_predict", "settings_for"]
