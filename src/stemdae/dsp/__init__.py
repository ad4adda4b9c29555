"""Pure signal processing: numpy/scipy only, no file I/O, no torch, no mlflow.

Modules: ``energy`` (frame energies, highest-energy window), ``loudness``
(ITU-R BS.1770 via pyloudnorm, peak guard), ``resample`` (soxr HQ), ``stft``,
``pitch``, ``metrics``. Nothing is imported here so that each stage loads only
what it uses.
"""
