"""Run configuration: one YAML file per experiment, validated by pydantic.

A config names the data selection, the model and a list of training *stages*.
Each stage has its own epochs, learning rate, frozen depth and crop schedule,
as in the two-stage recipe of the original work (bottom 80 layers frozen at
lr 1e-4, then bottom 20 frozen at lr 1e-5).  Presets shipped with the package
(``landmark/configs/*.yaml``) are selected by name: ``fast``, ``xception``,
``vgg16``, ``arcface``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .data.preprocess import MAX_SIDE
from .config_files import PRESETS_DIR, _M, _merge, _Strict, read_config, validate_config, yaml_problem  # noqa: F401
from .models.spec import ModelSpec, refuse_bool_numbers, validation_fields  # noqa: F401



class CropSchedule(_Strict):
    """Scheduled random crop (see :class:`landmark.data.transforms.ScheduledCrop`).

    With probability ``p`` (linear from ``p_start`` at the stage's first epoch to
    ``p_end`` at its last) the image is resized to ``resize`` x ``resize`` pixels and a
    ``size`` x ``size`` crop is taken at a position chosen by ``mode``; otherwise it is
    resized to ``size`` x ``size``.
    """

    p_start: float = Field(0.0, ge=0.0, le=1.0)
    p_end: float = Field(0.0, ge=0.0, le=1.0)
    resize: int = Field(180, gt=0, le=MAX_SIDE, description="pixels, side of the square resize before cropping")
    size: int = Field(150, gt=0, le=MAX_SIDE, description="pixels, side of the network input")
    mode: Literal["center", "corners", "edges", "random"] = "random"

    @model_validator(mode="after")
    def _crop_fits(self) -> "CropSchedule":
        if self.size > self.resize:
            raise ValueError(f"crop size {self.size} is larger than resize {self.resize}; set resize >= size")
        return self


class Augment(_Strict):
    """Geometric augmentation applied before the scheduled crop (torchvision v2)."""

    hflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip")
    rotation: float = Field(10.0, ge=0.0, description="degrees, uniform in [-rotation, rotation]")
    translate: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of width/height")
    scale: tuple[float, float] = (0.9, 1.1)


class Stage(_Strict):
    """One training stage: its own epochs, learning rates, schedule, frozen depth and crops.

    ``probe: true`` makes the stage a *linear probe*: the backbone is frozen, the pooled
    features of every training photo (and its mirror) are computed once without
    augmentation, and the head is fitted to convergence on them with L-BFGS (``epochs``
    must be 1; ``lr`` is unused).  A converged head before fine-tuning is what keeps
    fine-tuning from damaging the features (Kumar et al., "Fine-Tuning can Distort
    Pretrained Features and Underperform Out-of-Distribution", ICLR 2022: LP-FT).
    """

    name: str = "stage"
    epochs: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0.0, description="learning rate of the head (and of the backbone unless scaled)")
    backbone_lr_scale: float = Field(1.0, gt=0.0, le=1.0, description="backbone lr = lr * this (layer-wise lr)")
    schedule: Literal["constant", "cosine"] = Field("constant", description="lr over the stage's steps")
    warmup: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of the stage's steps with a linear lr warm-up")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay (probe: L2 on the head)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    freeze: int | float | str = Field(0, description="bottom backbone layers frozen: a count, a fraction in (0, 1) "
                                      "of the backbone's layers, -1 for all, or a block name (blocks.3: up to "
                                      "and including that block)")
    freeze_bn: bool = Field(False, description="keep every backbone BatchNorm on its ImageNet statistics")
    probe: bool = Field(False, description="fit the head by L-BFGS on frozen features (see above)")
    probe_iters: int = Field(300, ge=1, description="L-BFGS iterations of a probe stage")
    probe_fit: Literal["auto", "lbfgs", "stream"] = Field(
        "auto", description="how a probe fits its head: auto = L-BFGS when its features and logits fit "
        "probe_memory_gb, else a streaming fit from features on disk (landmark.training.head_fit)")
    probe_memory_gb: float = Field(0.25, gt=0.0, description="GiB a full-batch L-BFGS probe fit may hold (features, "
                                   "logits of every photo and view over every class, L-BFGS history); its time grows "
                                   "with the same logits: at 0.25 GiB, 300 iterations take about 15 min on 2 CPU cores")
    stream_epochs: int = Field(2, ge=0, description="streaming probe fit: AdamW epochs after the class-mean start")
    stream_min_steps: int = Field(150, ge=0, description="streaming probe fit: more epochs when these are fewer "
                                  "minibatches (small data)")
    stream_batch: int = Field(2048, ge=1, description="streaming probe fit: photo views per minibatch")
    stream_lr: float = Field(1e-2, gt=0.0, description="streaming probe fit: AdamW learning rate (cosine decay)")
    stream_classes: int = Field(2048, ge=2, description="streaming probe fit: above this many classes each "
                                "minibatch's softmax covers its own classes plus random others, this many in all")
    crop: CropSchedule = CropSchedule()

    @field_validator("freeze", mode="before")
    @classmethod
    def _not_bool(cls, value):
        if isinstance(value, bool):   # YAML true would be read as the count 1
            raise ValueError(f"freeze {str(value).lower()}: give a layer count (0: none), -1 for all, a fraction "
                             f"in (0, 1) or a block name")
        return value

    @model_validator(mode="after")
    def _valid(self) -> "Stage":
        if isinstance(self.freeze, int) and self.freeze < -1:
            raise ValueError(f"freeze {self.freeze}: a count must be >= 0, or -1 for all")
        if isinstance(self.freeze, float) and not 0.0 < self.freeze < 1.0:
            raise ValueError(f"freeze {self.freeze}: a fraction must lie in (0, 1); use an integer count or -1")
        if self.probe and self.epochs != 1:
            raise ValueError("a probe stage fits the head once: set epochs: 1")
        return self


class DataConfig(_Strict):
    """Class selection, split and loading."""

    clean: bool | Literal["auto"] = Field(False, description="true: train_clean.csv (an error without one); "
                                          "auto: train_clean.csv when the data has one")
    min_images_per_class: int = Field(1, ge=1)
    max_classes: int | None = Field(None, ge=1, description="keep only the most frequent classes")
    nonlandmarks: str | None = Field(None, description="folder or CSV of photos without landmarks; joins the "
                                     "validation photos when the 'no landmark' threshold is chosen")
    reference_index: bool = Field(True, description="after training, index the training photos into RUN/index "
                                  "and choose the 'no landmark' thresholds on the validation photos")
    final_fit: bool = Field(False, description="after training and choosing the thresholds, refit the probe head "
                            "on the training and validation photos together (last stage must be a probe)")
    exclude_landmarks: list[str] = Field(default_factory=list, description="landmark ids left out of training "
                                         "(the open-set protocol holds whole landmarks out)")
    val_frac: float = Field(0.2, ge=0.0, lt=1.0)
    test_frac: float = Field(0.1, ge=0.0, lt=1.0)
    cache_width: int | None = Field(256, ge=16, description="pixels; resize cache width, null = no cache")
    batch_size: int = Field(32, ge=1)
    workers: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _fractions(self) -> "DataConfig":
        if self.val_frac + self.test_frac >= 1.0:
            raise ValueError("val_frac + test_frac must be below 1 so that training keeps images")
        return self


class ModelConfig(ModelSpec):
    """The model specification (:class:`landmark.models.spec.ModelSpec`: every architecture
    field and its only default) plus where the backbone's starting weights come from."""

    weights: str = Field("imagenet", description="imagenet | none | path to a state dict")

    @property
    def spec(self) -> ModelSpec:
        """The architecture alone (what a checkpoint stores)."""
        return ModelSpec(**self.model_dump(exclude={"weights"}))


class TrainConfig(_Strict):
    """A whole experiment."""

    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    augment: Augment = Augment()
    stages: list[Stage] = Field(default_factory=lambda: [Stage()], min_length=1)

    @model_validator(mode="after")
    def _input_size(self) -> "TrainConfig":
        """The network input is the last stage's crop: ``model.input_size`` is filled from it, or must agree."""
        size = self.stages[-1].crop.size
        if self.model.input_size is None:   # validated: model_copy(update=) would skip the spec's bounds
            try:
                self.model = ModelConfig.model_validate({**self.model.model_dump(), "input_size": size})
            except ValidationError as err:
                raise ValueError(f"the last stage's crop.size {size} cannot be the network input (model.input_size: "
                                 f"{err.errors()[0]['msg']})") from None
        elif self.model.input_size != size:
            raise ValueError(f"model.input_size {self.model.input_size} differs from the last stage's crop.size "
                             f"{size}; set one of them (the network is evaluated at the last stage's crop)")
        return self

    @property
    def preprocess_resize(self) -> int:
        """Pixels: the side photos are resized to before the ten crops of test-time voting."""
        return self.stages[-1].crop.resize

    @model_validator(mode="after")
    def _final_fit_needs_probe(self) -> "TrainConfig":
        if self.data.final_fit and not self.stages[-1].probe:
            raise ValueError("data.final_fit refits a probe head: the last stage must have probe: true")
        if self.data.final_fit and (self.data.val_frac == 0 or not self.data.reference_index):
            raise ValueError("data.final_fit needs val_frac > 0 and reference_index: true (thresholds are "
                             "chosen on the validation photos before the refit)")
        return self

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)


def load_config(source: str | Path, overrides: dict | None = None, epochs: int | None = None) -> TrainConfig:
    """Load a config from a YAML path or a preset name (``fast``, ``xception``, ``vgg16``, ``arcface``).

    ``overrides`` (nested mappings) are merged into the YAML and ``epochs`` replaces the
    epochs of every stage that is not a probe, all before validation.

    Raises:
        FileNotFoundError: neither a file nor a preset of that name exists.
        ValueError: the YAML does not validate; the message names each bad field.
    """
    def with_epochs(raw: dict) -> dict:
        if epochs is not None and isinstance(raw.get("stages"), list):
            raw["stages"] = [st if not isinstance(st, dict) or st.get("probe") else {**st, "epochs": epochs}
                             for st in raw["stages"]]
        return raw

    return read_config(source, TrainConfig, PRESETS_DIR, overrides, adjust=with_epochs)


def dump_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config (every default filled in) as YAML."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
