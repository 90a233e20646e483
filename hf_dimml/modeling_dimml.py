"""DI-MML multimodal classifiers: per-modality encoders, private heads, a shared classifier and a fusion head.

Self-contained on purpose (relative import of the configuration only): ``save_pretrained`` copies this file next
to a checkpoint so it loads with ``trust_remote_code=True`` where ``hf_dimml`` is not installed.

Data flow (docs/design.md §2): each modality m is encoded alone, ``h_m = E_m(x_m)`` in R^d. Heads read one ``h_m`` at a time
(private head P_m, shared classifier S) except the fusion head F, which reads ``concat(h_1..h_M)``. Inference combines
the available heads per sample with certainty-aware logit weighting, so a batch lacking a modality still predicts.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_dimml import DIMMLConfig

__all__ = [
    "CLASSIFIER_AUTO_CLASSES",
    "PIPELINE_TASK",
    "DIMMLPreTrainedModel",
    "DIMMLModel",
    "DIMMLForMultimodalClassification",
    "DIMMLModelOutput",
    "DIMMLClassifierOutput",
    "MLPEncoder",
    "Conv1DEncoder",
    "ModalityEncoder",
    "certainty_weighted_logits",
    "entropy_weighted_logits",
]

# The `multimodal-classification` pipeline that ships with every registered checkpoint (`pipeline_dimml.py`, copied
# next to this file by save_pretrained and named in the config's `custom_pipelines`). Strings, not an import: this
# file stays self-contained, and loading a model never imports the pipeline.
PIPELINE_TASK = "multimodal-classification"
PIPELINE_FILE = "pipeline_dimml.py"
PIPELINE_CLASS = "pipeline_dimml.MultimodalClassificationPipeline"

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
            Prediction from each present modality alone: its private head (dimml, unimodal), the shared head on its
            feature (mla), or the fused head with the other modalities zeroed (joint, dmrnet).
        shared_logits (`dict[str, torch.FloatTensor]`, *optional*):
            DI-MML: the shared classifier applied to each present modality's feature alone.
        fusion_logits (`torch.FloatTensor`, *optional*):
            Fusion head over the concatenated features; `None` when a modality is missing.
        head_weights (`torch.FloatTensor` of shape `(batch, num_heads)`):
            Per-sample weight of each head in `logits`: the private heads in config order, then the fusion head when
            all modalities are present (weight 0 until stage 2 has trained it).
        latent_mean, latent_logvar (`torch.FloatTensor` of shape `(batch, latent)`, *optional*):
            DMRNet's Gaussian embedding.
        features (`dict[str, torch.FloatTensor]`):
            Pooled feature of each present modality.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    modality_logits: dict[str, torch.FloatTensor] | None = None
    shared_logits: dict[str, torch.FloatTensor] | None = None
    fusion_logits: torch.FloatTensor | None = None
    head_weights: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None
    features: dict[str, torch.FloatTensor] | None = None


def certainty_weighted_logits(
    head_logits: list[torch.Tensor], temperature: float, available: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Certainty-aware logit weighting (docs/design.md §2), per sample.

    ``c_k = max softmax(z_k)``, ``w = softmax_k(c_k / T)``, ``z = sum_k w_k z_k``.

    Args:
        head_logits: K tensors `(batch, classes)`, one per head.
        temperature: T.
        available: optional boolean `(K,)`: heads marked False get weight 0 (a tensor, not a Python bool, so that
            the decision never synchronises the device).

    Returns:
        The weighted logits `(batch, classes)` and the weights `(batch, K)`.
    """
    # Few operator calls: at batch 1 on a GPU each costs a kernel launch whatever its size (BENCHMARKS.md row 5b).
    stacked = torch.stack(head_logits, dim=1)  # (B, K, C)
    stacked_float = stacked if stacked.dtype == torch.float32 else stacked.float()
    scores = stacked_float.softmax(dim=-1).amax(dim=-1)  # (B, K): c_k
    if temperature != 1.0:
        scores = scores / temperature
    if available is not None:
        scores = torch.where(available, scores, float("-inf"))
    weights = scores.softmax(dim=1)
    fused = (weights.unsqueeze(-1) * stacked_float).sum(dim=1)  # not bmm: autocast would run that in bf16/fp16
    return (fused if fused.dtype == stacked.dtype else fused.to(stacked.dtype)), weights


def entropy_weighted_logits(head_logits: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """MLA's inference fusion (docs/design.md §3), per sample: `e_m` = entropy of softmax(z_m), `w = softmax_m(-e_m)`,
    `z = sum_m w_m z_m`. (The released code normalises over the batch axis; here each sample has its own weights.)"""
    stacked = torch.stack(head_logits, dim=1).float()  # (B, M, C)
    log_probs = stacked.log_softmax(dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)  # (B, M)
    weights = (-entropy).softmax(dim=1)
    return (weights.unsqueeze(-1) * stacked).sum(dim=1).to(head_logits[0].dtype), weights


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


class Conv1DEncoder(nn.Module):
    """A small 1-D CNN over time for `(C, T)` sequences: Conv1d-BatchNorm-ReLU blocks (a max-pool halving the time
    axis between blocks while it is longer than 1), then the mean over time; `num_features` is the last width.

    Any length T works (the pooling is global), so sequences longer or shorter than `input_shape` are read as well.
    """

    def __init__(self, in_channels: int, channels: list[int], kernel_size: int = 5, dropout: float = 0.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for size in channels:
            block: list[nn.Module] = [nn.Conv1d(width, size, kernel_size, padding=kernel_size // 2, bias=False),
                                      nn.BatchNorm1d(size), nn.ReLU(inplace=True)]
            if dropout > 0:
                block.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*block))
            width = size
        self.blocks = nn.ModuleList(blocks)
        self.num_features = width

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = inputs
        for index, block in enumerate(self.blocks):
            if index > 0 and hidden.shape[-1] > 1:
                hidden = F.max_pool1d(hidden, kernel_size=2, ceil_mode=True)
            hidden = block(hidden)
        return hidden.mean(dim=-1)


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
    if spec["encoder"] == "cnn1d":
        return Conv1DEncoder(
            in_channels=shape[0],
            channels=list(kwargs.get("channels", [64, 64, 128])),
            kernel_size=int(kwargs.get("kernel_size", 5)),
            dropout=float(kwargs.get("dropout", 0.0)),
        )
    # Inside try: transformers' trust_remote_code import check skips it, so MLP-only checkpoints load without timm.
    try:
        import timm  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(f"encoder {spec['encoder']!r} of modality {spec['name']!r} needs timm: pip install timm") \
            from error

    # Never pretrained weights here: from_pretrained builds the model on the meta device (docs/design.md §7).
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
    # The trainer computes its own losses; the model never takes `num_items_in_batch` (docs/design.md §7).
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
            own_linears = [m for m in module.children() if isinstance(m, nn.Linear)]
            own_linears += [m for name in ("private_heads", "latent_mean", "latent_logvar") if hasattr(module, name)
                            for m in getattr(module, name).children() if isinstance(m, nn.Linear)]
        else:
            own_linears = []
        for linear in own_linears:
            linear.reset_parameters()
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers has no multimodal-classification Auto class; a registered checkpoint maps every Auto class that
        # fits (AutoModel first) to the classifier, so any of them loads it with trust_remote_code=True.
        pipeline_source = Path(__file__).with_name(PIPELINE_FILE)
        ships_pipeline = False
        if self._auto_class is not None and isinstance(self, DIMMLForMultimodalClassification):
            class_path = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **dict.fromkeys(CLASSIFIER_AUTO_CLASSES, class_path)}
            # A model loaded as remote code without its pipeline file (an older checkpoint) saves without one.
            ships_pipeline = pipeline_source.is_file()
            if ships_pipeline:
                self.config.custom_pipelines = {
                    PIPELINE_TASK: {"impl": PIPELINE_CLASS, "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
                }
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if ships_pipeline and kwargs.get("is_main_process", True):
            target = Path(save_directory) / PIPELINE_FILE
            temporary = target.with_name(f".{PIPELINE_FILE}.tmp")
            shutil.copyfile(pipeline_source, temporary)
            os.replace(temporary, target)
        return result

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
        if not tensor.is_floating_point():
            raise ValueError(
                f"modality {spec['name']!r} ({spec['kind']}): expected a floating-point tensor, got dtype "
                f"{tensor.dtype} (the processor turns raw inputs, 8-bit images included, into float tensors)"
            )
        # Non-finite inputs would give NaN logits (argmax 0) without a word. Checked where it costs no device
        # synchronisation (CPU tensors, eager: a compiled forward stays one graph); on an accelerator the processor
        # has already rejected them.
        if (tensor.device.type == "cpu" and not torch.compiler.is_compiling()
                and not bool(torch.isfinite(tensor).all())):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"modality {spec['name']!r} ({spec['kind']}): {bad} value(s) are NaN or infinite")
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
            # Channels; the spatial size (a sequence's length for cnn1d) is free for convolutional backbones.
            mismatch = sample[0] != shape[0]
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
    The per-modality encoders plus the heads of `config.head_layout` (which the training method chose), all
    predicting from any non-empty subset of modalities:

    - `certainty_weighted` (DI-MML): a private linear head per modality, ONE shared linear classifier applied to each
      modality's feature alone, and a fusion head over the concatenated features (trained in stage 2);
      certainty-aware weighting of the available heads.
    - `unimodal_ensemble`: a private head per modality; the logits of the present modalities are averaged.
    - `fused` (joint, OGM-GE, PMR): one linear head over the concatenated features; an absent modality's feature is
      zero.
    - `fused_with_private` (MMPareto): the fused head predicts (absent modalities zeroed); a single modality alone is
      predicted by its own private head, which training fits beside the fused head.
    - `shared_head` (MLA): one shared linear head applied to each modality alone; per-sample entropy-weighted fusion.
    - `gaussian_embedding` (DMRNet): Gaussian embedding N(mu, sigma^2) of the concatenated features (absent ones
      zeroed), mu and log sigma^2 each from Linear + BatchNorm, a linear classifier on the embedding (sampled in
      training, the mean at inference).

    The model holds only what inference needs: the DI-MML layout's `fusion_head_trained` flag (the fusion head takes
    part in the weighting once stage 2 has trained it) is a persistent buffer. Training state (effective dimensions,
    MLA's projector, DMRNet's statistics, ...) belongs to the training method and is saved beside the checkpoint.
    """

    # Training state that checkpoints of hf_dimml 0.1 kept as buffers; loading one ignores them.
    _keys_to_ignore_on_load_unexpected = [
        r"^duc_mask(_ready)?$", r"^mla_(projector|previous_mean)$", r"^dmrnet_(variance_sum|variance_count|hard_combination)$",
    ]

    def __init__(self, config: DIMMLConfig) -> None:
        super().__init__(config)
        num_modalities, hidden_size, num_labels = len(config.modalities), config.hidden_size, config.num_labels
        layout = config.head_layout
        self.dimml = DIMMLModel(config)
        if layout in ("certainty_weighted", "unimodal_ensemble", "fused_with_private"):
            self.private_heads = nn.ModuleDict({n: nn.Linear(hidden_size, num_labels) for n in config.modality_names})
        if layout in ("certainty_weighted", "shared_head"):
            self.shared_classifier = nn.Linear(hidden_size, num_labels)
        if layout in ("certainty_weighted", "fused", "fused_with_private"):
            self.fusion_head = nn.Linear(num_modalities * hidden_size, num_labels)
        if layout == "certainty_weighted":
            self.register_buffer("fusion_head_trained", torch.zeros((), dtype=torch.bool))
        if layout == "gaussian_embedding":
            latent = config.dmrnet_latent_size
            self.latent_mean = nn.Sequential(nn.Linear(num_modalities * hidden_size, latent), nn.BatchNorm1d(latent))
            self.latent_logvar = nn.Sequential(nn.Linear(num_modalities * hidden_size, latent), nn.BatchNorm1d(latent))
            self.latent_classifier = nn.Linear(latent, num_labels)
        self.post_init()

    # --- helpers -------------------------------------------------------------------------------------------------

    def _concat(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenation in config order; an absent modality contributes zeros."""
        names = self.config.modality_names
        zeros = None
        if any(name not in features for name in names):  # no zeros tensor (a kernel) when every modality is present
            reference = next(iter(features.values()))
            zeros = reference.new_zeros(reference.shape[0], self.config.hidden_size)
        return torch.cat([features.get(name, zeros) for name in names], dim=1)

    def combination_index(self, present: torch.Tensor) -> torch.Tensor:
        """Index 0 .. 2^M - 2 of each sample's modality combination, from a boolean `(batch, M)` presence mask."""
        weights = 2 ** torch.arange(present.shape[1], device=present.device)
        return (present.long() * weights).sum(dim=1) - 1

    # --- heads ---------------------------------------------------------------------------------------------------

    def forward_heads(
        self,
        features: dict[str, torch.Tensor],
        fusion_grad: bool = True,
        modality_mask: torch.Tensor | None = None,
    ) -> DIMMLClassifierOutput:
        """The layout's heads on given features (`forward` = encoders + this). Any subset of modalities may be given.

        Args:
            features: pooled feature per present modality.
            fusion_grad: DI-MML stage 1 passes False: the fusion head runs without gradients (it is not trained
                yet, and must never send gradient into the encoders).
            modality_mask: `gaussian_embedding` training, boolean `(batch, M)`: per-sample modality dropout.
        """
        layout = self.config.head_layout
        if layout == "certainty_weighted":
            return self._dimml_heads(features, fusion_grad)
        if layout == "unimodal_ensemble":
            modality_logits = {name: self.private_heads[name](feature) for name, feature in features.items()}
            logits = torch.stack(list(modality_logits.values()), dim=1).mean(dim=1)
            return DIMMLClassifierOutput(logits=logits, modality_logits=modality_logits, features=features)
        if layout == "fused":
            logits = self.fusion_head(self._concat(features))
            with torch.no_grad():  # what the fused head says from each modality alone (others zeroed)
                modality_logits = {name: self.fusion_head(self._concat({name: f})) for name, f in features.items()}
            return DIMMLClassifierOutput(logits=logits, modality_logits=modality_logits, fusion_logits=logits,
                                         features=features)
        if layout == "fused_with_private":
            modality_logits = {name: self.private_heads[name](feature) for name, feature in features.items()}
            if len(features) == 1:  # one modality alone: its own head, trained for exactly that
                logits = next(iter(modality_logits.values()))
                return DIMMLClassifierOutput(logits=logits, modality_logits=modality_logits, features=features)
            logits = self.fusion_head(self._concat(features))
            return DIMMLClassifierOutput(logits=logits, modality_logits=modality_logits, fusion_logits=logits,
                                         features=features)
        if layout == "shared_head":
            modality_logits = {name: self.shared_classifier(feature) for name, feature in features.items()}
            logits, head_weights = entropy_weighted_logits(list(modality_logits.values()))
            return DIMMLClassifierOutput(logits=logits, modality_logits=modality_logits, head_weights=head_weights,
                                         features=features)
        return self._dmrnet_heads(features, modality_mask)

    def _dimml_heads(self, features: dict[str, torch.Tensor], fusion_grad: bool) -> DIMMLClassifierOutput:
        modality_logits = {name: self.private_heads[name](feature) for name, feature in features.items()}
        shared_logits = {name: self.shared_classifier(feature) for name, feature in features.items()}
        fusion_logits = None
        if len(features) == len(self.config.modalities):
            with torch.set_grad_enabled(torch.is_grad_enabled() and fusion_grad):
                fusion_logits = self.fusion_head(self._concat(features))
        heads = list(modality_logits.values())
        available = None
        if fusion_logits is not None:
            # The fusion head counts only once stage 2 has trained it (weight 0 before).
            heads.append(fusion_logits)
            available = F.pad(self.fusion_head_trained.view(1), (len(modality_logits), 0), value=True)
        logits, head_weights = certainty_weighted_logits(heads, self.config.logit_temperature, available)
        return DIMMLClassifierOutput(
            logits=logits,
            modality_logits=modality_logits,
            shared_logits=shared_logits,
            fusion_logits=fusion_logits,
            head_weights=head_weights,
            features=features,
        )

    def _dmrnet_embed(self, concatenated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, logvar = self.latent_mean(concatenated), self.latent_logvar(concatenated)
        if self.training:  # reparameterised sample; the mean embedding at inference
            embedding = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        else:
            embedding = mean
        return self.latent_classifier(embedding), mean, logvar

    def _dmrnet_heads(self, features: dict[str, torch.Tensor], modality_mask: torch.Tensor | None):
        if modality_mask is not None:
            features = {
                name: feature * modality_mask[:, self.config.modality_names.index(name), None].to(feature.dtype)
                for name, feature in features.items()
            }
        logits, mean, logvar = self._dmrnet_embed(self._concat(features))
        modality_logits = None
        if modality_mask is None:
            with torch.no_grad():  # each modality alone, the others zeroed: DMRNet's own subset prediction
                modality_logits = {name: self._dmrnet_embed(self._concat({name: f}))[0] for name, f in
                                   features.items()}
        return DIMMLClassifierOutput(logits=logits, modality_logits=modality_logits, latent_mean=mean,
                                     latent_logvar=logvar, features=features)

    # --- forward -------------------------------------------------------------------------------------------------

    def forward(
        self,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        training_stage: int | None = None,
        modality_mask: torch.Tensor | None = None,
        **modality_inputs: torch.Tensor | None,
    ) -> DIMMLClassifierOutput:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*):
                Class indices; when given, `loss` is the cross-entropy of the final `logits`.
            training_stage (`int`, *optional*):
                DI-MML only, set by the trainer. `1`: encoders, private heads and the shared classifier carry
                gradients; the fusion head runs without. `2`: encoders and heads run without gradients (frozen), only
                the fusion head carries them. Keeping the outputs that carry gradients exactly the ones the stage's
                loss uses is what DistributedDataParallel (`find_unused_parameters=True`) needs. `None`: everything.
            modality_mask (`torch.BoolTensor` of shape `(batch, num_modalities)`, *optional*):
                DMRNet training only: per-sample modality dropout.
            **modality_inputs:
                One tensor per modality, by the names in `config.modalities`. Omit a modality (or pass `None`) to
                predict without it.
        """
        if training_stage not in (None, 1, 2):
            raise ValueError(f"training_stage must be None, 1 or 2, got {training_stage!r}")
        if training_stage is not None and self.config.head_layout != "certainty_weighted":
            raise ValueError(f"training_stage is DI-MML's two-stage training; head layout "
                             f"{self.config.head_layout!r} has one stage")
        with torch.set_grad_enabled(torch.is_grad_enabled() and training_stage != 2):
            features = self.dimml(**modality_inputs).features
            output = self.forward_heads(features, fusion_grad=training_stage != 1, modality_mask=modality_mask)
        if training_stage == 2 and output.fusion_logits is not None:
            output.fusion_logits = self.fusion_head(self._concat(features))
        if labels is not None:
            output.loss = F.cross_entropy(output.logits.float(), labels)
        return output
