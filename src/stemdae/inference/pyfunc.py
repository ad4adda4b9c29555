"""The MLflow pyfunc of a stemdae model, logged as code (MLflow "models from code").

:func:`stemdae.tracking.log_model` logs this file as the model's code and
``model.pt`` as its artifact; loading the registered model runs this file and
reads ``model.pt`` with ``torch.load(weights_only=True)`` — no pickled object
is loaded. Two inputs, chosen by the ``input`` param:

- ``"magnitude"`` (default): float32 ``(frames, n_bins)`` linear magnitudes in,
  the predicted stem magnitudes out;
- ``"audio"``: ``(channels, samples)`` at ``sr`` in, processed audio out,
  exactly as :func:`stemdae.process` (``restore_loudness``, ``phase``, ``channels``).
"""

import mlflow.models
import mlflow.pyfunc
import numpy as np


class StemdaePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from stemdae.predictor import read_model_file

        self.predictor = read_model_file(context.artifacts["model_pt"])

    # np.ndarray: a hint MLflow takes as "no schema from the hint" (the logged signature is explicit).
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from stemdae.inference.api import serve_predict

        return serve_predict(self.predictor, model_input, params)


mlflow.models.set_model(StemdaePyfunc())
