"""DI-MML multimodal classifiers: per-modality encoders, private heads, a shared classifier and a fusion head.

Self-contained on purpose (relative import of the configuration only): ``save_pretrained`` copies this file next
to a checkpoint so it loads with ``trust_remote_code=True`` where ``hf_dimml`` is not installed.

Data flow (DESIGN §2): each modality m is encoded alone, ``h_m = E_m(x_m)`` in R^d. Heads read one ``h_m`` at a time
(private head P_m, shared classifier S) except the fusion head F, which reads ``concat(h_1..h_M)``. Inference combines
the available heads per sample with certainty-aware logit weighting, so a batch lacking a modality still predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_dimml import DIMMLConfig

__all__ = [
    "CLASSIFIER_AUTO_CLASSES",
    "DIMMLPreTrainedModel",
    "DIMMLModel",
    "DIMMLForMultimodalClassification",
    "DIMMLModelOutput",
    "DIMMLClassifierOutput",
    "MLPEncoder",
    "ModalityEncoder",
    "certainty_weighted_logits",
]

# Auto classes that resolve to the classifier (locally registered and in a saved checkpoint's auto_map).
CLASSIFIER_AUTO_CLASSES = (
    "AutoModel",
    "AutoModelForAudioClassification",
    "AutoModelForImageClassification",
    "AutoModelForVideoClassification",
)


@dataclass
class DIMMLModelOutput(ModelOutput):
    """
    Output of [`DIMMLModel`].

    Args:
        stacked_features (`torch.FloatTensor` of shape `(batch, num_present_modalities, hidden_size)`):
            The pooled features of the present modalities, stacked in config order.
        features (`dict[str, torch.FloatTensor]`):
            Pooled feature `(batch, hidden_size)` of each modality given to `forward`, in config order.
    """

    # A tensor comes first: ModelOutput would unpack a dict in its first field into fields of its own.
    stacked_features: torch.FloatTensor | None = None
    features: dict[str, torch.FloatTensor] | None = None


@dataclass
class DIMMLClassifierOutput(ModelOutput):
    """
    Output of [`DIMMLForMultimodalClassification`].

    Args:
        loss (`torch.FloatTensor`, *optional*):
            Cross-entropy of `logits` when `labels` are given (the training losses live in the trainer).
        logits (`torch.FloatTensor` of shape `(batch, num_labels)`):
            Final prediction: certainty-aware weighting of the heads available for each sample.
        modality_logits (`dict[str, torch.FloatTensor]`):
            Private head of each present modality.
        shared_logits (`dict[str, torch.FloatTensor]`):
            The shared classifier applied to each present modality's feature alone.
        fusion_logits (`torch.FloatTensor`, *optional*):
            Fusion head over the concatenated features; `None` when a modality is missing.
        head_weights (`torch.FloatTensor` of shape `(batch, num_heads)`):
            Per-sample weight of each head in `logits` (private heads in config order, then fusion if used).
        features (`dict[str, torch.FloatTensor]`):
            Pooled feature of each present modality.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    modality_logits: dict[str, torch.FloatTensor] | None = None
    shared_logits: dict[str, torch.FloatTensor] | None = None
    fusion_logits: torch.FloatTensor | None = None
    head_weights: torch.FloatTensor | None = None
    features: dict[str, torch.FloatTensor] | None = None


def certainty_weighted_logits(
    head_logits: list[torch.Tensor], temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Certainty-aware logit weighting (DESIGN §2), per sample.

    ``c_k = max softmax(z_k)``, ``w = softmax_k(c_k / T)``, ``z = sum_k w_k z_k``.

    Args:
        head_logits: K tensors `(batch, classes)`, one per available head.
        temperature: T.

    Returns:
        The weighted logits `(batch, classes)` and the weights `(batch, K)`.
    """
    stacked = torch.stack(head_logits, dim=1)  # (B, K, C)
    certainty = stacked.float().softmax(dim=-1).amax(dim=-1)  # (B, K)
    weights = (certainty / temperature).softmax(dim=1)
    return (weights.unsqueeze(-1) * stacked.float()).sum(dim=1).to(stacked.dtype), weights


class MLPEncoder(nn.Module):
    """Flattens one sample and maps it through Linear-ReLU(-Dropout) blocks; `num_features` is the last width."""

    def __init__(self, in_features: int, hidden_sizes: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.layers = nn.Sequential(*layers)
        self.num_features = width

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers(inputs.flatten(1))


def _build_backbone(spec: dict) -> nn.Module:
    """A feature extractor with a `num_features` attribute, built from one modality's config entry."""
    shape = spec["input_shape"]
    frame_shape = shape[1:] if spec["kind"] == "frames" else shape
    kwargs = dict(spec["encoder_kwargs"])
    if spec["encoder"] == "mlp":
        return MLPEncoder(
            in_features=math.prod(frame_shape),
            hidden_sizes=list(kwargs.get("hidden_sizes", [256])),
            dropout=float(kwargs.get("dropout", 0.0)),
        )
    import timm  # noqa: PLC0415 - MLP-only models do not need timm

    # Never pretrained weights here: from_pretrained builds the model on the meta device (DESIGN §7).
    return timm.create_model(spec["encoder"], pretrained=False, num_classes=0, in_chans=frame_shape[0], **kwargs)


class ModalityEncoder(nn.Module):
    """Backbone for one modality, projected to the common feature size; frames are encoded one by one and averaged."""

    def __init__(self, spec: dict, hidden_size: int) -> None:
        super().__init__()
        self.kind = spec["kind"]
        self.backbone = _build_backbone(spec)
        num_features = self.backbone.num_features
        # Project only where needed, so that d means the same thing for the shared classifier and DUC.
        self.projection = nn.Linear(num_features, hidden_size) if num_features != hidden_size else nn.Identity()

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.kind == "frames":
            batch, frames = inputs.shape[:2]
            per_frame = self.backbone(inputs.flatten(0, 1))
            return per_frame.view(batch, frames, -1).mean(dim=1)
        return self.backbone(inputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.projection(self.forward_features(inputs))


class DIMMLPreTrainedModel(PreTrainedModel):
    config_class = DIMMLConfig
    config: DIMMLConfig
    base_model_prefix = "dimml"
    main_input_name = "labels"  # there is no single main input: every modality is a keyword argument
    # The trainer computes its own losses; the model never takes `num_items_in_batch` (DESIGN §7).
    accepts_loss_kwargs = False
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # timm backbones initialise themselves in their constructors, each with its own scheme: a generic init here
        # would undo it. Only our own layers are (re)initialised, with PyTorch's defaults.
        if isinstance(module, MLPEncoder):
            own_linears = [layer for layer in module.layers if isinstance(layer, nn.Linear)]
        elif isinstance(module, ModalityEncoder):
            own_linears = [module.projection] if isinstance(module.projection, nn.Linear) else []
        elif isinstance(module, DIMMLForMultimodalClassification):
            own_linears = [*module.private_heads.values(), module.shared_classifier, module.fusion_head]
        else:
            own_linears = []
        for linear in own_linears:
            linear.reset_parameters()
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers has no multimodal-classification Auto class; a registered checkpoint maps every Auto class that
        # fits (AutoModel first) to the classifier, so any of them loads it with trust_remote_code=True.
        if self._auto_class is not None and isinstance(self, DIMMLForMultimodalClassification):
            class_path = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **dict.fromkeys(CLASSIFIER_AUTO_CLASSES, class_path)}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _check_modality_inputs(self, modality_inputs: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """Present modalities in config order; a ValueError names the modality and the expected shape."""
        known = self.config.modality_names
        unknown = sorted(set(modality_inputs) - set(known))
        if unknown:
            raise ValueError(f"unknown modality input(s) {unknown}; this model takes {known}")
        present = {}
        for spec in self.config.modalities:
            tensor = modality_inputs.get(spec["name"])
            if tensor is None:
                continue
            present[spec["name"]] = tensor
            self._check_shape(spec, tensor)
        if not present:
            raise ValueError(f"no modality given: pass at least one of {known} as a keyword argument")
        batch_sizes = {name: tensor.shape[0] for name, tensor in present.items()}
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"modalities disagree on batch size: {batch_sizes}")
        return present

    @staticmethod
    def _check_shape(spec: dict, tensor: torch.Tensor) -> None:
        shape = spec["input_shape"]
        expected = "(batch, " + ", ".join(str(size) for size in shape) + ")"
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"modality {spec['name']!r}: expected a tensor of shape {expected}, got {type(tensor)}")
        actual = tuple(tensor.shape)
        if tensor.dim() != len(shape) + 1:
            raise ValueError(
                f"modality {spec['name']!r} ({spec['kind']}): expected a {len(shape) + 1}-D tensor of shape "
                f"{expected}, got shape {actual}"
            )
        sample = actual[1:]
        if spec["encoder"] == "mlp":
            # The MLP's first layer fixes the whole flattened size (per frame for frames).
            mismatch = list(sample) != list(shape)
        elif spec["kind"] == "frames":
            mismatch = sample[0] != shape[0] or sample[1] != shape[1]  # frame count, channels
        else:
            mismatch = sample[0] != shape[0]  # channels; spatial size is free for convolutional backbones
        if mismatch:
            raise ValueError(f"modality {spec['name']!r} ({spec['kind']}): expected shape {expected}, got {actual}")


class DIMMLModel(DIMMLPreTrainedModel):
    """The per-modality encoders: ``forward(**modalities)`` gives one pooled feature `(batch, d)` per modality."""

    def __init__(self, config: DIMMLConfig) -> None:
        super().__init__(config)
        self.encoders = nn.ModuleDict(
            {spec["name"]: ModalityEncoder(spec, config.hidden_size) for spec in config.modalities}
        )
        self.post_init()

    def forward(self, return_dict: bool | None = None, **modality_inputs: torch.Tensor | None) -> DIMMLModelOutput:
        present = self._check_modality_inputs(modality_inputs)
        features = {name: self.encoders[name](tensor) for name, tensor in present.items()}
        return DIMMLModelOutput(stacked_features=torch.stack(list(features.values()), dim=1), features=features)


class DIMMLForMultimodalClassification(DIMMLPreTrainedModel):
    """
    Encoders plus the DI-MML heads: a private linear head per modality, ONE shared linear classifier applied to each
    modality's feature alone, and a fusion head over the concatenated features (trained in stage 2).

    State that must survive checkpoints and resumes is kept in persistent buffers (saved in the safetensors):
    `duc_mask` (M x d, the effective dimensions of each modality, DESIGN §2), `duc_mask_ready` and
    `fusion_head_trained` (the fusion head joins the weighting only once stage 2 has trained it).
    """

    def __init__(self, config: DIMMLConfig) -> None:
        super().__init__(config)
        num_modalities, hidden_size, num_labels = len(config.modalities), config.hidden_size, config.num_labels
        self.dimml = DIMMLModel(config)
        self.private_heads = nn.ModuleDict({name: nn.Linear(hidden_size, num_labels) for name in config.modality_names})
        self.shared_classifier = nn.Linear(hidden_size, num_labels)
        self.fusion_head = nn.Linear(num_modalities * hidden_size, num_labels)
        self.register_buffer("duc_mask", torch.zeros(num_modalities, hidden_size, dtype=torch.bool))
        self.register_buffer("duc_mask_ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("fusion_head_trained", torch.zeros((), dtype=torch.bool))
        self.post_init()

    def _concat(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([features[name] for name in self.config.modality_names], dim=1)

    def forward_heads(self, features: dict[str, torch.Tensor], fusion_grad: bool = True) -> DIMMLClassifierOutput:
        """All heads on given features (`forward` = encoders + this). Any subset of modalities may be given.

        `fusion_grad=False` runs the fusion head without gradients (stage 1: it is not trained yet, and must never
        send gradient into the encoders).
        """
        modality_logits = {name: self.private_heads[name](feature) for name, feature in features.items()}
        shared_logits = {name: self.shared_classifier(feature) for name, feature in features.items()}
        fusion_logits = None
        if len(features) == len(self.config.modalities):
            with torch.set_grad_enabled(torch.is_grad_enabled() and fusion_grad):
                fusion_logits = self.fusion_head(self._concat(features))
        heads = list(modality_logits.values())
        if fusion_logits is not None and bool(self.fusion_head_trained):
            heads.append(fusion_logits)
        logits, head_weights = certainty_weighted_logits(heads, self.config.logit_temperature)
        return DIMMLClassifierOutput(
            logits=logits,
            modality_logits=modality_logits,
            shared_logits=shared_logits,
            fusion_logits=fusion_logits,
            head_weights=head_weights,
            features=features,
        )

    def forward(
        self,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        training_stage: int | None = None,
        **modality_inputs: torch.Tensor | None,
    ) -> DIMMLClassifierOutput:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*):
                Class indices; when given, `loss` is the cross-entropy of the final `logits`.
            training_stage (`int`, *optional*):
                Set by the trainer. `1`: encoders, private heads and the shared classifier carry gradients; the fusion
                head runs without. `2`: encoders and heads run without gradients (frozen), only the fusion head
                carries them. Keeping the outputs that carry gradients exactly the ones the stage's loss uses is what
                DistributedDataParallel (`find_unused_parameters=True`) needs. `None` (inference): everything.
            **modality_inputs:
                One tensor per modality, by the names in `config.modalities`. Omit a modality (or pass `None`) to
                predict without it.
        """
        if training_stage not in (None, 1, 2):
            raise ValueError(f"training_stage must be None, 1 or 2, got {training_stage!r}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and training_stage != 2):
            features = self.dimml(**modality_inputs).features
            output = self.forward_heads(features, fusion_grad=training_stage != 1)
        if training_stage == 2 and output.fusion_logits is not None:
            output.fusion_logits = self.fusion_head(self._concat(features))
        if labels is not None:
            output.loss = F.cross_entropy(output.logits.float(), labels)
        return output
