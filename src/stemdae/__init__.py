"""stemdae: raw multitrack recordings -> processed stems with per-group stacked deep autoencoders.

Reproduces and extends the proof of concept of Martinez Ramirez & Reiss,
"Deep Learning and Intelligent Audio Mixing" (2017).
"""

__version__ = "0.1.0"

__all__ = ["__version__", "process"]


def __getattr__(name):  # lazy: importing stemdae must not import torch
    # No submodule is named ``process`` (importing one would replace this attribute with the module).
    if name == "process":
        from stemdae.inference.api import process

        return process
    raise AttributeError(name)
