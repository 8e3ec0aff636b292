"""Training configuration: one dataclass per component, composed into ``TrainConfig``.

``TrainConfig`` round-trips through plain dicts (``to_dict``/``from_dict``) of lists, numbers,
strings and bools, which is what YAML files and ``weights_only`` checkpoints hold. Loading is
strict: an unknown key or a value of the wrong type raises ``ConfigError`` naming the key, so a
typo in a YAML file fails the run at once instead of silently training with a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from usp_core.geometry.homography import HomographyConfig
from usp_core.models.layers import ModelConfig
from usp_core.support.atomic import write_bytes_atomic
from usp_core.training.data import CropConfig, PhotometricConfig
from usp_core.training.losses import DistillConfig, LossConfig
from usp_core.training.superpoint_data import SyntheticConfig
from usp_core.training.superpoint_losses import SuperPointLossConfig

__all__ = [
    "ConfigError",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "from_dict",
    "to_dict",
    "load_config",
    "save_config",
    "with_overrides",
]

AMP_MODES = ("auto", "none", "bf16", "fp16")
TASKS = {  # what a run trains -> the architecture it needs and whether it reads photos
    "unsuperpoint": ("unsuperpoint", True),  # self-supervised siamese pairs of photos
    "magicpoint": ("superpoint", False),  # the SuperPoint detector on Synthetic Shapes (rendered, no photos)
    "superpoint": ("superpoint", True),  # SuperPoint on photo pairs with pseudo-labels from usp-label
}


class ConfigError(ValueError):
    """A configuration file or dict does not describe a valid config."""


@dataclass
class OptimizerConfig:
    """AdamW settings."""

    lr: float = 3.0e-4  # peak learning rate, reached at the end of warmup
    weight_decay: float = 1.0e-4  # decoupled weight decay (AdamW)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam moment decay rates
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio * lr``."""

    warmup_steps: int = 500  # steps of linear warmup from 0 to the peak lr
    min_lr_ratio: float = 0.05  # final lr as a fraction of the peak lr


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved inside every checkpoint."""

    task: str = "unsuperpoint"  # unsuperpoint | magicpoint | superpoint (see TASKS)
    labels_dir: str = ""  # superpoint: folder of pseudo-labels written by usp-label for data_dir (--labels overrides)
    data_dir: str = ""  # folder of training photos, searched recursively (the CLI's --data overrides)
    image_size: tuple[int, int] = (240, 320)  # (H, W) of both siamese branches; multiples of 8
    val_fraction: float = 0.05  # fraction of the photos held out for validation
    batch_size: int = 16  # pairs per step (per process under torchrun)
    steps: int = 20000  # optimizer steps in the whole run
    val_interval: int = 500  # steps between validations (and best.pt updates)
    val_batches: int = 8  # batches per validation (a fixed set, the same every time)
    checkpoint_interval: int = 500  # steps between writes of last.pt
    snapshot_interval: int = 0  # steps between weight snapshots (snapshots/step_N.pt) kept for selection by usp-eval; 0 = none
    log_interval: int = 50  # steps between loss logs
    seed: int = 0  # seeds model init, data split, sampling and augmentation
    amp: str = "auto"  # "auto" (bf16 when CUDA supports it, fp16 otherwise; off on CPU), "none", "bf16", "fp16"
    num_workers: int = 4  # DataLoader worker processes
    model: ModelConfig = field(default_factory=ModelConfig)  # network widths and descriptor size
    loss: LossConfig = field(default_factory=LossConfig)  # loss weights and radii
    distill: DistillConfig = field(default_factory=DistillConfig)  # optional teacher whose dense maps are also learned
    superpoint: SuperPointLossConfig = field(default_factory=SuperPointLossConfig)  # magicpoint/superpoint loss weights
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # magicpoint: Synthetic Shapes and warps
    crop: CropConfig = field(default_factory=CropConfig)  # how photos are scaled before cropping
    homography: HomographyConfig = field(default_factory=HomographyConfig)  # random warp ranges for branch B
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)  # per-branch photometric noise
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # AdamW settings
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # warmup + cosine schedule

    def validate(self) -> "TrainConfig":
        """Check value ranges; returns self. Raises ConfigError."""
        height, width = self.image_size
        if height <= 0 or width <= 0 or height % 8 or width % 8:
            raise ConfigError(f"image_size must be positive multiples of 8, got {list(self.image_size)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("batch_size", "steps", "val_interval", "val_batches", "checkpoint_interval", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.snapshot_interval < 0:
            raise ConfigError(f"snapshot_interval must be >= 0, got {self.snapshot_interval}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.optimizer.lr <= 0:
            raise ConfigError(f"optimizer.lr must be > 0, got {self.optimizer.lr}")
        self._validate_task()
        if self.schedule.warmup_steps < 0:
            raise ConfigError(f"schedule.warmup_steps must be >= 0, got {self.schedule.warmup_steps}")
        return self

    def _validate_task(self) -> None:
        """The task exists, the model's architecture fits it, and what it reads is named."""
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        architecture, _ = TASKS[self.task]
        if self.model.architecture != architecture:
            raise ConfigError(f"task {self.task} trains model.architecture {architecture}, "
                              f"got {self.model.architecture}")
        if self.task != "unsuperpoint" and self.distill.teacher:
            raise ConfigError(f"distill.teacher is for task unsuperpoint, not {self.task}")

    @property
    def reads_photos(self) -> bool:
        """Whether the task trains on the photos of data_dir (magicpoint renders its images)."""
        return TASKS[self.task][1]


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML safe_dump cannot write tuples)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a nested dict of plain YAML/checkpoint-safe values."""
    return _plain(dataclasses.asdict(config))


def _coerce_scalar(value: Any, hint: type, key: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Any or isinstance(value, hint):
        return value
    raise ConfigError(f"config key '{key}' must be {hint.__name__}, got {value!r}")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a plain value to the type ``hint`` of the field ``key``; raises ConfigError."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        errors = []
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"config key '{key}' has an invalid value {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise ConfigError(f"config key '{key}' must be one of {list(typing.get_args(hint))}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}' must have {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            element = args[0] if args else Any
            items = [_coerce(v, element, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if isinstance(hint, type):
        return _coerce_scalar(value, hint, key)
    return value


def _from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        section = prefix.rstrip(".") or "config"
        raise ConfigError(f"config section '{section}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (known in this section: {', '.join(names)})"
        )
    values = {name: _coerce(data[name], hints[name], prefix + name) for name in names if name in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid config section '{prefix.rstrip('.') or 'config'}': {error}") from error


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig from a (possibly partial) nested dict; missing keys keep defaults."""
    return _from_dict(TrainConfig, data).validate()


def with_overrides(config: TrainConfig, assignments: list[str]) -> TrainConfig:
    """``config`` with ``KEY=VALUE`` assignments applied: dotted keys (``loss.a_pos=0.5``), YAML values
    (``image_size=[240,320]``). Raises ConfigError for a malformed assignment, an unknown key or a bad value.
    """
    data = to_dict(config)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {assignment!r}")
        *parents, name = key.split(".")
        section = data
        for part in parents:
            if not isinstance(section.get(part), dict):
                raise ConfigError(f"unknown config section {part!r} in {key!r}")
            section = section[part]
        try:
            section[name] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"cannot parse the value of {key}: {str(error).splitlines()[0]}") from error
    return from_dict(data)


def load_config(path: str | Path) -> TrainConfig:
    """Read a TrainConfig from a YAML file. Raises ConfigError for a missing, unparsable or invalid file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror or error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot parse config {path}: {str(error).splitlines()[0]}") from error
    if data is None:
        data = {}
    try:
        return from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write ``config`` as YAML (readable back by ``load_config``), atomically."""
    return write_bytes_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False).encode())
