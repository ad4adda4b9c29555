"""Typed, validated configuration loaded from ``params.yaml``.

One pydantic model, :class:`Params`, holds every parameter; each pipeline
stage receives only its own frozen section. Unknown keys, wrong types and
out-of-range values fail at load time with a :class:`ConfigError` that names
the file and the dotted key.

``training.profile: paper`` reproduces Martinez Ramirez & Reiss (2017) in one
switch (:data:`PAPER_PROFILE`); the defaults depart from it where the README's
"Paper vs defaults" says why (``model.scaling``, the ``demo`` profile). The paper: 10 s windows at
44.1 kHz, mono, loudness-normalised; pitch shifts of -4..+4 semitones in
50-cent steps; STFT 2048/1024; a 1025-1024-1024-1024-1025 ReLU autoencoder
with dropout 0.2, Adam and mean absolute error, trained greedily layer-wise
and then fine-tuned (about 100 iterations).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from stemdae.errors import ConfigError, shorten

GROUPS_PAPER: dict[str, list[str]] = {
    "bass": ["electric bass", "synth bass"],
    "guitar": ["clean electric guitar", "acoustic guitar", "distorted electric guitar", "banjo"],
    "vocal": ["male singer", "female singer", "male rapper"],
    "keys": ["piano", "synth lead", "tack piano", "electric piano"],
}


# ``training.profile: paper``: everything the paper specifies, in one switch (built in, so it
# works whatever params.yaml's ``profiles`` say; params.yaml repeats it). ``model`` keys of a
# profile are applied to the model section.
PAPER_PROFILE: dict[str, Any] = {
    "pretrain": True, "pretrain_epochs": 100, "finetune_epochs": 100, "frames_per_epoch": None,
    "precision": "32-true", "early_stopping_patience": None, "loss": "l1", "optimizer": "adam",
    "model": {"scaling": "linear", "activation": "relu", "hidden": [1024, 1024, 1024], "dropout": 0.2},
}
BUILTIN_PROFILES: dict[str, dict[str, Any]] = {"paper": PAPER_PROFILE}


def _profile(training: Any) -> dict[str, Any] | None:
    """The override mapping of ``training.profile`` (params.yaml's ``profiles`` first, then the built-ins)."""
    if not isinstance(training, dict) or not training.get("profile"):
        return None
    profiles = {**BUILTIN_PROFILES, **(training.get("profiles") or {})}
    name = training["profile"]
    if name not in profiles:
        raise ValueError(f"profile {name!r} is not one of profiles: {sorted(profiles)}")
    return profiles[name] or {}


def _is_number_type(annotation: Any) -> bool:
    """True for ``int``/``float`` (also inside ``X | None``, ``list[X]``, ``tuple[X, X]``), never ``bool``."""
    if annotation in (int, float):
        return True
    return any(_is_number_type(a) for a in get_args(annotation) if a is not bool)


def _has_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value))


class _Section(BaseModel):
    # allow_inf_nan=False: `.nan` / `.inf` are refused as "a finite number" with the key
    # (a NaN would otherwise fail every range check with a misleading bound).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML ``true`` is not 1: pydantic's lax mode would read ``n_fft: true`` as 1."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _has_bool(value) and _is_number_type(field.annotation):
            if isinstance(value, bool):
                raise ValueError(f"expected a number, found the boolean {str(value).lower()}")
            raise ValueError(f"expected numbers, found a boolean in {shorten(json.dumps(value, default=str))}")
        return value


class CorpusParams(_Section):
    """Where the multitrack corpus lives and how its labels are read."""

    root: str = "data"
    # Stem labels that name a container of other instruments (MedleyDB's
    # ``vocalists`` holds ``male singer``/``female singer`` raws): for these the
    # raws' own labels decide the group.
    container_labels: list[str] = Field(
        default_factory=lambda: ["vocalists", "string section", "brass section", "horn section"]
    )
    # Optional MedleyDB track list (one song per line) restricting the corpus.
    tracklist: str | None = None
    # Skips become errors.
    strict: bool = False


class SegmentsParams(_Section):
    """Stages ``pairs`` and ``segments``: top-energy windows, split, loudness."""

    window_s: float = Field(10.0, gt=0, le=600)
    sr: int = Field(44100, ge=8000, le=192000)
    target_lufs: float = Field(-23.0, ge=-70, le=0)
    # After loudness gain, a segment whose sample peak would exceed this
    # ceiling is scaled down to it (and the event counted), never clipped.
    peak_ceiling_dbfs: float = Field(-1.0, ge=-20, le=0)
    # A window whose mean power is below this (dBFS) counts as silence.
    silence_threshold_db: float = Field(-70.0, ge=-150, le=0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 0
    # reference: each segment is a ~1 kB reference into the corpus (sources, window, gains), read
    # again when needed, bit for bit; flac: the audio itself as 24-bit FLAC (a corpus on slow or
    # removable storage, or a work/ that must stand without it). See stemdae.segfile.
    store: Literal["reference", "flac"] = "reference"


class AugmentationParams(_Section):
    """Stage ``augment``: pitch shifts applied alike to raw and stem (train only)."""

    semitones_min: float = Field(-4.0, ge=-12, le=0)
    semitones_max: float = Field(4.0, ge=0, le=12)
    step_cents: int = Field(50, gt=0, le=1200)
    # librosa / pedalboard: every planned shift is applied to the audio (in the features stage);
    # spectral: only unshifted magnitudes are stored, shifted frames are drawn per batch (data.py).
    method: Literal["librosa", "pedalboard", "spectral"] = "librosa"
    # spectral only: draw from the planned shifts (discrete) or uniformly in the range (continuous).
    spectral_shifts: Literal["discrete", "continuous"] = "discrete"
    # Worker processes; 0 = all cores.
    n_jobs: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _step_divides(self) -> AugmentationParams:
        span = round((self.semitones_max - self.semitones_min) * 100)
        if span % self.step_cents:
            raise ValueError(
                f"step_cents={self.step_cents} does not divide the range "
                f"{self.semitones_min}..{self.semitones_max} semitones"
            )
        return self

    def shifts_cents(self) -> list[int]:
        """All shifts in cents, 0 (the original) first; the paper's defaults give 17."""
        lo, hi = round(self.semitones_min * 100), round(self.semitones_max * 100)
        rest = [c for c in range(lo, hi + 1, self.step_cents) if c != 0]
        return [0, *rest]


class FeaturesParams(_Section):
    """Stage ``features``: STFT magnitude caches."""

    n_fft: int = Field(2048, ge=64, le=16384)
    hop: int = Field(1024, ge=16)
    window: Literal["hann"] = "hann"
    dtype: Literal["float32", "float16"] = "float32"
    # Worker processes (pitch shifts + STFT per pair); 0 = all cores.
    n_jobs: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _hop_below_fft(self) -> FeaturesParams:
        if self.hop >= self.n_fft:
            raise ValueError(f"hop ({self.hop}) must be smaller than n_fft ({self.n_fft})")
        return self

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1


class ModelParams(_Section):
    """The stacked autoencoder: n_bins -> hidden... -> n_bins."""

    hidden: list[int] = Field(default_factory=lambda: [1024, 1024, 1024], min_length=1, max_length=8)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    activation: Literal["relu"] = "relu"
    # Input/target scaling (see README, "Scaling"; scaling.py): standardised log1p input,
    # per-bin log gain raw -> stem as the target (measured best on held-out songs).
    scaling: Literal["linear", "log", "log_standardized", "log_ratio"] = "log_ratio"

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 or w > 16384 for w in v):
            raise ValueError(f"every hidden width must be in 1..16384, got {v}")
        return v


class TrainingParams(_Section):
    """Greedy layer-wise pretraining then fine-tuning, per group."""

    optimizer: Literal["adam"] = "adam"
    lr: float = Field(1e-3, gt=0, le=1.0)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["l1"] = "l1"
    batch_size: int = Field(512, ge=1, le=1 << 20)
    pretrain: bool = True
    # The paper's schedule: ~100 iterations per greedy phase and for the whole stack.
    pretrain_epochs: int = Field(100, ge=0)
    finetune_epochs: int = Field(100, ge=1)
    # Frames drawn per epoch (None: the whole training cache).
    frames_per_epoch: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    # Fine-tuning stops after this many epochs without a lower validation loss and the
    # weights of the best epoch are restored (None: off, every epoch runs, the last is kept).
    early_stopping_patience: int | None = Field(None, ge=1)
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    # Put the group's whole training cache in GPU memory when it fits.
    gpu_resident: bool = True
    num_workers: int = Field(0, ge=0)
    seed: int = 0
    # A named lighter schedule applied over the values above (None: as written).
    profile: str | None = None
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        override = _profile(data)
        if override is None:
            return data
        name = data["profile"]
        override = {k: v for k, v in override.items() if k != "model"}  # applied by Params
        bad = sorted(set(override) - (set(cls.model_fields) - {"profile", "profiles"}))
        if bad:
            raise ValueError(f"profiles.{name} has unknown keys {bad}")
        return {**data, **override}


class GroupParams(_Section):
    """One instrument group: its labels and optional per-group overrides (e.g. from a sweep)."""

    labels: list[str] = Field(min_length=1)
    model: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)


class EvaluationParams(_Section):
    """Stage ``evaluate``: metrics, baselines, plots, champion alias."""

    n_examples: int = Field(2, ge=0, le=50)
    mrstft_ffts: list[int] = Field(default_factory=lambda: [512, 1024, 2048])
    band_edges_hz: list[float] = Field(default_factory=lambda: [250.0, 4000.0])
    confidence: float = Field(0.95, gt=0, lt=1)
    # Metric that decides the champion alias (lower is better).
    champion_metric: Literal["spectral_mae", "lsd_db", "mrstft"] = "spectral_mae"


class CrossvalParams(_Section):
    """``stemdae crossval`` / the ``crossval`` stage: K folds of songs x S training seeds."""

    folds: int = Field(3, ge=2, le=100)
    seeds: int = Field(2, ge=1, le=100)


class ChainParams(_Section):
    """``stemdae chain fit`` / the ``chain@<group>`` stages (``dvc repro chain``; not in the main command)."""

    mode: Literal["preset", "conditional"] = "preset"  # conditional: also fit the encoder (conditional.pt)
    steps: int = Field(300, ge=1)
    crop_s: float = Field(2.0, gt=0)
    batch: int = Field(4, ge=1)
    lr: float = Field(0.05, gt=0)
    seed: int = 0
    bells: int = Field(3, ge=0, le=8)
    reverb: bool = True
    saturation_groups: list[str] = Field(default_factory=lambda: ["guitar"])


class SearchSpace(_Section):
    dropout: tuple[float, float] = (0.0, 0.5)
    n_layers: tuple[int, int] = (1, 4)
    widths: list[int] = Field(default_factory=lambda: [256, 512, 1024, 2048])
    lr: tuple[float, float] = (1e-4, 1e-2)


class SweepParams(_Section):
    """Optuna sweeps over dropout, depth, widths and learning rate."""

    n_trials: int = Field(20, ge=1)
    storage: str = "sqlite:///optuna.db"
    study_prefix: str = "stemdae"
    sampler_seed: int = 0
    pruner: Literal["median", "hyperband", "none"] = "median"
    epochs: int = Field(10, ge=1)
    pretrain_epochs: int = Field(2, ge=0)
    heartbeat_s: int = Field(10, ge=1)
    grace_s: int = Field(30, ge=1)
    space: SearchSpace = Field(default_factory=SearchSpace)


class TrackingParams(_Section):
    """MLflow: set explicitly, never MLflow's changing default."""

    # Relative sqlite paths are resolved against the project root.
    uri: str = "sqlite:///mlflow.db"
    artifact_root: str = "mlruns"
    experiment: str = "stemdae"
    registry_prefix: str = "stemdae-"
    log_audio: bool = True
    log_models: bool = True


class Params(_Section):
    seed: int = 0
    corpus: CorpusParams = Field(default_factory=CorpusParams)
    segments: SegmentsParams = Field(default_factory=SegmentsParams)
    augmentation: AugmentationParams = Field(default_factory=AugmentationParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    model: ModelParams = Field(default_factory=ModelParams)
    training: TrainingParams = Field(default_factory=TrainingParams)
    groups: dict[str, GroupParams] = Field(
        default_factory=lambda: {g: GroupParams(labels=l) for g, l in GROUPS_PAPER.items()}
    )
    evaluation: EvaluationParams = Field(default_factory=EvaluationParams)
    crossval: CrossvalParams = Field(default_factory=CrossvalParams)
    chain: ChainParams = Field(default_factory=ChainParams)
    sweep: SweepParams = Field(default_factory=SweepParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)

    @model_validator(mode="before")
    @classmethod
    def _profile_model(cls, data: Any) -> Any:
        """A profile's ``model`` mapping overrides the model section (``paper``: linear magnitudes)."""
        if not isinstance(data, dict):
            return data
        override = _profile(data.get("training"))
        if not override or not isinstance(override.get("model"), dict):
            return data
        return {**data, "model": {**(data.get("model") or {}), **override["model"]}}

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        if not self.groups:
            raise ValueError("groups: at least one group is required")
        seen: dict[str, str] = {}
        for g, spec in self.groups.items():
            for label in spec.labels:
                if label in seen and seen[label] != g:
                    raise ValueError(f"groups: label {label!r} is in both {seen[label]!r} and {g!r}")
                seen[label] = g
            # Per-group overrides must be valid sections themselves.
            _check_override(f"groups.{g}.model", ModelParams, {**self.model.model_dump(), **spec.model})
            _check_override(f"groups.{g}.training", TrainingParams,
                            {**self.training.model_dump(exclude={"profile", "profiles"}), **spec.training})
        if self.segments.window_s * self.segments.sr < self.features.n_fft:
            raise ValueError("segments.window_s is shorter than one STFT frame (features.n_fft)")
        return self

    def group_labels(self) -> dict[str, list[str]]:
        return {g: list(spec.labels) for g, spec in self.groups.items()}

    def model_for(self, group: str) -> ModelParams:
        """Model section with the group's overrides applied."""
        return ModelParams(**{**self.model.model_dump(), **self._group(group).model})

    def training_for(self, group: str) -> TrainingParams:
        """Training section (profile already applied) with the group's overrides."""
        base = self.training.model_dump(exclude={"profile", "profiles"})
        return TrainingParams(**{**base, **self._group(group).training})

    def _group(self, group: str) -> GroupParams:
        if group not in self.groups:
            raise ConfigError(f"unknown group {group!r}; params.yaml defines {sorted(self.groups)}")
        return self.groups[group]

    def flat(self) -> dict[str, Any]:
        """Every parameter as ``dotted.key -> value`` (for MLflow)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = obj

        walk("", self.model_dump(mode="json"))
        return out


def _check_override(prefix: str, section: type[_Section], values: dict[str, Any]) -> None:
    try:
        section(**values)
    except ValidationError as err:  # name the override's own keys, not the section's
        raise ValueError(_format_error("", err, prefix=prefix)) from None


def _format_error(path: Path | str, err: ValidationError, *, prefix: str = "") -> str:
    parts = []
    for e in err.errors():
        key = ".".join([prefix] * bool(prefix) + [str(x) for x in e["loc"]])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{key}: {msg}" if key else msg)
    return (f"{path}: " if path else "") + "; ".join(parts)


def params_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Params:
    """Validate a plain dict (as read from YAML) into :class:`Params`.

    Raises
    ------
    ConfigError
        Naming ``source`` and the dotted key of each problem.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, found {type(data).__name__}")
    try:
        return Params(**data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate ``params.yaml``.

    Parameters
    ----------
    path
        The YAML file.
    overrides
        Optional ``{"dotted.key": value}`` applied before validation.

    Raises
    ------
    ConfigError
        Missing or unparsable file, unknown key, wrong type or out-of-range value.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(path, err)) from None
    if data is None:  # not silently "all defaults": an emptied or truncated file is a mistake
        raise ConfigError(f"{path}: empty, no parameters (start from the repository's params.yaml)")
    if overrides:
        data = copy.deepcopy(data)
        for key, value in overrides.items():
            set_dotted(data, key, value)
    return params_from_dict(data, source=str(path))


def yaml_error(path: Path | str, err: yaml.YAMLError) -> str:
    """One line: ``file:line:column: not valid YAML: problem`` (PyYAML's message spans several)."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and cmark is not None:
        context += f" started at line {cmark.line + 1}, column {cmark.column + 1}"
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``key='a.b'``, creating mappings as needed."""
    node = data
    *head, last = key.split(".")
    for part in head:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a mapping")
    node[last] = value


@dataclass(frozen=True)
class Paths:
    """Where every stage reads and writes, relative to the project root.

    These are fixed by ``dvc.yaml`` (DVC tracks them as outs), not parameters.
    """

    root: Path = Path(".")

    def _p(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def params(self) -> Path:
        return self._p("params.yaml")

    @property
    def data_dvc(self) -> Path:
        return self._p("data.dvc")

    @property
    def work(self) -> Path:
        return self._p("work")

    @property
    def pairs_csv(self) -> Path:
        return self._p("work", "pairs.csv")

    @property
    def segments_dir(self) -> Path:
        return self._p("work", "segments")

    @property
    def augmented_dir(self) -> Path:
        return self._p("work", "augmented")

    @property
    def features_dir(self) -> Path:
        return self._p("work", "features")

    @property
    def models_dir(self) -> Path:
        return self._p("models")

    @property
    def reports_dir(self) -> Path:
        return self._p("reports")

    def model_dir(self, group: str) -> Path:
        return self._p("models", group)

    def features_group(self, split: str, group: str) -> Path:
        return self._p("work", "features", split, group)

    def corpus_root(self, corpus: CorpusParams) -> Path:
        p = Path(corpus.root)
        return p if p.is_absolute() else self.root / p
