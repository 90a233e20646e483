"""Configuration of DI-MML multimodal classifiers.

Self-contained on purpose: ``save_pretrained`` copies this file next to a checkpoint so that it loads with
``trust_remote_code=True`` where ``hf_dimml`` is not installed. Only ``transformers`` (and ``timm``, lazily, to check
encoder names) are imported.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

from transformers import PretrainedConfig

logger = logging.getLogger(__name__)

__all__ = ["DIMMLConfig", "HEAD_LAYOUTS", "MODALITY_KINDS"]

# Kind of model input -> rank of one sample (without the batch axis) and what each axis means.
MODALITY_KINDS: dict[str, tuple[str, ...]] = {
    "image": ("channels", "height", "width"),
    "spectrogram": ("channels", "frequency", "time"),
    "frames": ("frames", "channels", "height", "width"),
    "vector": ("features",),
    "sequence": ("channels", "time"),  # a multichannel time series
}

# Encoders that are not timm models: "mlp" (any kind: flattens the sample) and "cnn1d" (sequences: a small 1-D CNN
# over time). Vectors take only "mlp", sequences "mlp" or "cnn1d"; the image-like kinds also any timm model.
OWN_ENCODERS = ("mlp", "cnn1d")

# The heads a model is built with and how they predict (modeling_dimml.DIMMLForMultimodalClassification); the
# training method (hf_dimml.methods) chooses one.
HEAD_LAYOUTS = (
    "certainty_weighted", "unimodal_ensemble", "fused", "fused_with_private", "shared_head", "gaussian_embedding",
)
# Checkpoints of hf_dimml 0.1 name only their method: the layout each of those methods used.
_LEGACY_HEAD_LAYOUTS = {
    "dimml": "certainty_weighted", "unimodal": "unimodal_ensemble", "joint": "fused", "mla": "shared_head",
    "dmrnet": "gaussian_embedding",
}
# Training knobs that hf_dimml 0.1 kept in the config; they are DIMMLTrainingArguments fields now. A saved config
# holding them still loads (they are dropped: they never changed a prediction).
_LEGACY_TRAINING_KEYS = (
    "shared_weight", "duc_weight", "duc_temperature", "duc_start_epoch", "mla_alpha_start", "mla_alpha_end",
    "dmrnet_kl_weight", "dmrnet_hcr_weight", "dmrnet_warmup_epochs",
)

# Names the forward signature already uses; a modality cannot take them.
_RESERVED_NAMES = {"labels", "return_dict", "training_stage", "modality_mask", "kwargs", "self", "fusion", "final"}

# The embedded default dataset (``hf_dimml.data.load_av_digits``) as processed by the default processor: an MFCC
# sequence resampled to 20 frames and an 8x8 grey image. ``DIMMLConfig()`` is a valid, small model for it.
_AV_DIGITS_MODALITIES: list[dict[str, Any]] = [
    {"name": "audio", "kind": "spectrogram", "encoder": "mlp", "input_shape": [1, 13, 20]},
    {"name": "image", "kind": "image", "encoder": "mlp", "input_shape": [1, 8, 8]},
]


# What `encoder_kwargs` may hold: arguments that shape the architecture, and nothing else. A saved (or downloaded)
# config reaches `timm.create_model` with them, so keys that make timm read files or fetch weights (`pretrained_cfg`,
# `pretrained_cfg_overlay`, `checkpoint_path`, `cache_dir`, ...) are refused, as are values that name a file or a URL.
MLP_ENCODER_KWARGS = frozenset({"hidden_sizes", "dropout"})
CNN1D_ENCODER_KWARGS = frozenset({"channels", "kernel_size", "dropout"})
TIMM_ENCODER_KWARGS = frozenset({
    "act_layer", "attn_drop_rate", "avg_down", "base_width", "cardinality", "channels", "class_token", "depth",
    "depths", "dims", "down_kernel_size", "drop_block_rate", "drop_path_rate", "drop_rate", "dynamic_img_pad",
    "dynamic_img_size", "embed_dim", "embed_dims", "fc_norm", "global_pool", "img_size", "init_values", "layers",
    "layer_scale_init_value", "mlp_ratio", "no_embed_class", "norm_layer", "num_heads", "output_stride",
    "patch_size", "pos_drop_rate", "pos_embed", "proj_drop_rate", "qk_norm", "qkv_bias", "reg_tokens", "stem_type",
    "stem_width", "width_multiplier", "window_size", "zero_init_last",
})  # fmt: skip


def _names_a_file_or_url(value: Any) -> bool:
    if isinstance(value, str):
        return "/" in value or "\\" in value or ":" in value or value.startswith(("~", "."))
    return isinstance(value, (list, tuple)) and any(_names_a_file_or_url(item) for item in value)


def _check_encoder_kwargs(name: str, encoder: str, kwargs: Any) -> None:
    """Only architecture arguments (the allow-lists above), as plain numbers, booleans, names or lists of them."""
    if not isinstance(kwargs, dict):
        raise ValueError(f"modality {name!r}: encoder_kwargs must be a mapping, got {kwargs!r}")
    allowed = {"mlp": MLP_ENCODER_KWARGS, "cnn1d": CNN1D_ENCODER_KWARGS}.get(encoder, TIMM_ENCODER_KWARGS)
    refused = sorted(str(key) for key in kwargs if key not in allowed)
    if refused:
        what = f"the {encoder} encoder" if encoder in OWN_ENCODERS else "a timm encoder"
        raise ValueError(
            f"modality {name!r}: encoder_kwargs {refused} refused: only architecture arguments are accepted for "
            f"{what} ({sorted(allowed)}); a config never makes the encoder read files, fetch weights or reach URLs"
        )
    for key, value in kwargs.items():
        scalar = (bool, int, float, str, type(None))
        if not isinstance(value, scalar) and not (
            isinstance(value, (list, tuple)) and all(isinstance(item, scalar) for item in value)
        ):
            raise ValueError(f"modality {name!r}: encoder_kwargs[{key!r}] must be a number, boolean, name or a list "
                             f"of them, got {value!r}")
        if _names_a_file_or_url(value):
            raise ValueError(f"modality {name!r}: encoder_kwargs[{key!r}] = {value!r} names a file or URL, which a "
                             "config may not do")


def _is_timm_model(name: str) -> bool:
    # Inside try: transformers' trust_remote_code import check skips it, so MLP-only checkpoints load without timm.
    try:
        import timm  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(f"encoder {name!r} is a timm model: pip install timm") from error
    return timm.is_model(name)


class DIMMLConfig(PretrainedConfig):
    r"""
    Configuration of a [`DIMMLForMultimodalClassification`] model: one encoder per modality, a private head per
    modality, one shared classifier and a fusion head, trained with DI-MML (or one of the baselines it is compared
    with, chosen by `method`).

    Args:
        modalities (`list[dict]`, *optional*):
            One entry per modality, in a fixed order, each a dict with:

            - `name` (`str`): the keyword the model's `forward` takes this modality's tensor under;
            - `kind` (`str`): one of `"image"` `(C, H, W)`, `"spectrogram"` `(C, F, T)`, `"frames"` `(T, C, H, W)`
              (encoded frame by frame and averaged over time), `"vector"` `(D,)` or `"sequence"` `(C, T)` (a
              multichannel time series);
            - `encoder` (`str`): `"mlp"` (flattens the input; the only choice for vectors), `"cnn1d"` (sequences
              only: a small 1-D CNN over time, `{"channels": [64, 64, 128], "kernel_size": 5, "dropout": 0.0}`,
              its output width the last of `channels`) or any timm model name (image-like kinds), built with
              `pretrained=False`, `num_classes=0` and `in_chans=C`;
            - `input_shape` (`list[int]`): the shape of one sample, as above;
            - `encoder_kwargs` (`dict`, optional): extra keyword arguments for `timm.create_model`, or for the MLP
              `{"hidden_sizes": [256, 256], "dropout": 0.0}`. Architecture arguments only (`MLP_ENCODER_KWARGS`,
              `TIMM_ENCODER_KWARGS`, e.g. `drop_path_rate`, `zero_init_last`), as numbers, booleans, names or lists
              of them: anything that would make building the model read a file or reach a URL (`pretrained_cfg`,
              `checkpoint_path`, a path or URL as a value) is refused, also when loading a saved config.

            Defaults to the embedded `av_digits` dataset (audio MFCCs 1x13x20 and 8x8 images, MLP encoders).
        hidden_size (`int`, *optional*, defaults to 128):
            Common feature size d of every modality. An encoder whose output differs is followed by a linear
            projection to d, so that the shared classifier and DUC compare the same dimension across modalities.
        method (`str`, *optional*, defaults to `"dimml"`):
            Name of the training method the model was trained with (`hf_dimml.methods`: `dimml`, `mla`, `dmrnet`,
            `joint`, `unimodal`, ...), recorded for the card and the summary.
        head_layout (`str`, *optional*):
            The heads and how they predict (`HEAD_LAYOUTS`): `"certainty_weighted"` (DI-MML: private heads, shared
            classifier, fusion head; certainty-weighted), `"unimodal_ensemble"` (a head per modality, logits
            averaged), `"fused"` (one head on the concatenated features, absent modalities zeroed),
            `"fused_with_private"` (the fused head predicts; each modality alone has its own head),
            `"shared_head"` (MLA: one shared head, entropy-weighted per sample) or `"gaussian_embedding"` (DMRNet).
            Defaults to the layout of `method` for the methods of hf_dimml 0.1; other methods give it
            (`hf_dimml.methods.get_method(name).head_layout`).
        logit_temperature (`float`, *optional*, defaults to 1.0):
            Temperature T of the certainty-aware logit weighting used at inference.
        dmrnet_latent_size (`int`, *optional*):
            DMRNet: size of the Gaussian embedding (defaults to `hidden_size`).
        num_labels (`int`, *optional*):
            Number of classes (or give `id2label`).

    Example:

    ```python
    >>> from hf_dimml import DIMMLConfig, DIMMLForMultimodalClassification

    >>> config = DIMMLConfig(
    ...     modalities=[
    ...         {"name": "audio", "kind": "spectrogram", "encoder": "resnet18", "input_shape": [1, 257, 188]},
    ...         {"name": "visual", "kind": "frames", "encoder": "resnet18", "input_shape": [3, 3, 224, 224]},
    ...     ],
    ...     hidden_size=512,
    ...     num_labels=6,
    ... )
    >>> model = DIMMLForMultimodalClassification(config)
    ```
    """

    model_type = "dimml"

    def __init__(
        self,
        modalities: list[dict[str, Any]] | None = None,
        hidden_size: int = 128,
        method: str = "dimml",
        head_layout: str | None = None,
        logit_temperature: float = 1.0,
        dmrnet_latent_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        legacy = [key for key in _LEGACY_TRAINING_KEYS if key in kwargs]
        for key in legacy:
            kwargs.pop(key)
        if legacy:  # a config saved by hf_dimml 0.1, or code written for it
            logger.warning(
                "DIMMLConfig: %s are training arguments now (DIMMLTrainingArguments), not model settings; ignored",
                legacy,
            )
        if modalities is None:
            modalities = copy.deepcopy(_AV_DIGITS_MODALITIES)
        if "num_labels" not in kwargs and "id2label" not in kwargs:
            kwargs["num_labels"] = 10  # av_digits, the default modalities' dataset
        self.modalities = [self._normalise_modality(spec, index) for index, spec in enumerate(modalities)]
        self.hidden_size = hidden_size
        self.method = method
        self.head_layout = head_layout if head_layout is not None else _LEGACY_HEAD_LAYOUTS.get(method)
        self.logit_temperature = logit_temperature
        self.dmrnet_latent_size = dmrnet_latent_size if dmrnet_latent_size is not None else hidden_size
        super().__init__(**kwargs)
        self._validate()

    @property
    def modality_names(self) -> list[str]:
        return [spec["name"] for spec in self.modalities]

    @staticmethod
    def _normalise_modality(spec: dict[str, Any], index: int) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise ValueError(f"modalities[{index}] must be a dict with name/kind/encoder/input_shape, got {spec!r}")
        missing = [key for key in ("name", "kind", "input_shape") if key not in spec]
        if missing:
            raise ValueError(f"modalities[{index}] ({spec.get('name', '?')!r}) lacks required key(s) {missing}")
        unknown = set(spec) - {"name", "kind", "encoder", "input_shape", "encoder_kwargs"}
        if unknown:
            raise ValueError(f"modality {spec['name']!r}: unknown key(s) {sorted(unknown)}")
        return {
            "name": spec["name"],
            "kind": spec["kind"],
            "encoder": spec.get("encoder", "mlp"),
            "input_shape": list(spec["input_shape"]) if isinstance(spec["input_shape"], (list, tuple)) else spec[
                "input_shape"],
            "encoder_kwargs": dict(spec["encoder_kwargs"]) if isinstance(spec.get("encoder_kwargs"), dict) else (
                spec.get("encoder_kwargs") or {}),
        }

    def _validate(self) -> None:
        if len(self.modalities) < 2:
            raise ValueError(f"DIMMLConfig needs at least two modalities, got {len(self.modalities)}")
        names = self.modality_names
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate modality name(s) {duplicates}: each modality needs its own name")
        for spec in self.modalities:
            self._validate_modality(spec)
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {self.hidden_size!r}")
        if self.num_labels is None or self.num_labels < 2:
            raise ValueError(f"num_labels must be at least 2, got {self.num_labels!r}")
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method must be the name of a training method, got {self.method!r}")
        if self.head_layout is None:
            raise ValueError(f"method {self.method!r}: give head_layout (one of {HEAD_LAYOUTS}); "
                             f"hf_dimml.methods.get_method({self.method!r}).head_layout names the method's own")
        if self.head_layout not in HEAD_LAYOUTS:
            raise ValueError(f"head_layout must be one of {HEAD_LAYOUTS}, got {self.head_layout!r}")
        value = self.logit_temperature
        if not isinstance(value, (int, float)) or value <= 0 or not math.isfinite(value):
            raise ValueError(f"logit_temperature must be a finite number > 0, got {value!r}")
        if not isinstance(self.dmrnet_latent_size, int) or self.dmrnet_latent_size < 1:
            raise ValueError(f"dmrnet_latent_size must be a positive int, got {self.dmrnet_latent_size!r}")

    @staticmethod
    def _validate_modality(spec: dict[str, Any]) -> None:
        name, kind, encoder, shape = spec["name"], spec["kind"], spec["encoder"], spec["input_shape"]
        if not isinstance(name, str) or not name.isidentifier() or name in _RESERVED_NAMES:
            raise ValueError(
                f"modality name {name!r} must be a Python identifier (it becomes a forward() keyword) and not one "
                f"of {sorted(_RESERVED_NAMES)}"
            )
        if kind not in MODALITY_KINDS:
            raise ValueError(f"modality {name!r}: kind must be one of {list(MODALITY_KINDS)}, got {kind!r}")
        axes = MODALITY_KINDS[kind]
        if (
            not isinstance(shape, list)
            or len(shape) != len(axes)
            or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in shape)
        ):
            raise ValueError(
                f"modality {name!r} of kind {kind!r}: input_shape must be {len(axes)} positive ints "
                f"({', '.join(axes)}), got {shape!r}"
            )
        if not isinstance(encoder, str) or not encoder:
            raise ValueError(f"modality {name!r}: encoder must be 'mlp' or a timm model name, got {encoder!r}")
        _check_encoder_kwargs(name, encoder, spec["encoder_kwargs"])
        if kind in ("vector", "sequence") and encoder not in {"vector": ("mlp",), "sequence": OWN_ENCODERS}[kind]:
            allowed = "'mlp'" if kind == "vector" else "'mlp' or 'cnn1d'"
            raise ValueError(f"modality {name!r}: {kind} inputs take the {allowed} encoder, got {encoder!r}")
        if encoder == "cnn1d":
            if kind != "sequence":
                raise ValueError(f"modality {name!r}: the 'cnn1d' encoder reads (channels, time) sequences, not "
                                 f"{kind} inputs")
            kwargs = spec["encoder_kwargs"]
            for key, value in (("channels", kwargs.get("channels", [64, 64, 128])),
                               ("kernel_size", [kwargs.get("kernel_size", 5)])):
                if not (isinstance(value, (list, tuple)) and value
                        and all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in value)):
                    raise ValueError(f"modality {name!r}: cnn1d {key} must be positive int(s), got {value!r}")
        elif encoder != "mlp":
            if not _is_timm_model(encoder):
                raise ValueError(f"modality {name!r}: unknown timm model {encoder!r} (see timm.list_models())")
        else:
            hidden_sizes = spec["encoder_kwargs"].get("hidden_sizes", [256])
            if not all(isinstance(size, int) and size > 0 for size in hidden_sizes):
                raise ValueError(f"modality {name!r}: MLP hidden_sizes must be positive ints, got {hidden_sizes!r}")
