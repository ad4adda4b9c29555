"""The MLflow pyfunc of a chain model, logged as code (MLflow "models from code"); see :mod:`.pyfunc`.

:func:`stemdae.tracking.log_chain_model` logs this file as the model's code and
``chain.pt`` as its artifact; loading runs this file and reads ``chain.pt``
with ``torch.load(weights_only=True)`` (:func:`stemdae.chain.predictor.read_chain_file`).
Input: ``(channels, samples)`` float32 audio at the ``sr`` param; output: the
processed audio, exactly as :func:`stemdae.process` with the chain (front end,
loudness rule, pedalboard); params ``restore_loudness`` and ``channels``.
"""

import mlflow.models
import mlflow.pyfunc
import numpy as np


class ChainPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from stemdae.chain.predictor import read_chain_file

        self.predictor = read_chain_file(context.artifacts["chain_pt"])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from stemdae.inference.api import process

        params = dict(params or {})
        x = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
        y = process(np.atleast_2d(x), int(params.get("sr", self.predictor.frontend.sr)), model=self.predictor,
                    restore_loudness=bool(params.get("restore_loudness", False)),
                    channels=str(params.get("channels", "same")))
        return np.atleast_2d(y)


mlflow.models.set_model(ChainPyfunc())
