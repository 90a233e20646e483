"""hf_dimml: balanced multimodal learning (DI-MML, MLA, DMRNet, OGM-GE, PMR, MMPareto and baselines) in the Hugging Face
ecosystem."""

import transformers

from .configuration_dimml import DIMMLConfig
from .processing_dimml import DIMMLProcessor
from .pipeline_dimml import MultimodalClassificationPipeline
from .data import MultimodalDataCollator, load_av_digits
from .trainer import DIMMLTrainer, DIMMLTrainingArguments
from .modeling_dimml import (
    CLASSIFIER_AUTO_CLASSES,
    PIPELINE_TASK,
    DIMMLClassifierOutput,
    DIMMLForMultimodalClassification,
    DIMMLModel,
    DIMMLModelOutput,
    DIMMLPreTrainedModel,
    certainty_weighted_logits,
    entropy_weighted_logits,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "DIMMLConfig",
    "DIMMLProcessor",
    "DIMMLTrainer",
    "DIMMLTrainingArguments",
    "MultimodalDataCollator",
    "load_av_digits",
    "MultimodalClassificationPipeline",
    "DIMMLPreTrainedModel",
    "DIMMLModel",
    "DIMMLForMultimodalClassification",
    "DIMMLModelOutput",
    "DIMMLClassifierOutput",
    "certainty_weighted_logits",
    "entropy_weighted_logits",
]

# Local Auto-class registration, and the same mapping written into saved configs' `auto_map` so that a checkpoint
# loads with trust_remote_code=True where hf_dimml is not installed.
transformers.AutoConfig.register(DIMMLConfig.model_type, DIMMLConfig, exist_ok=True)
for _auto_class_name in CLASSIFIER_AUTO_CLASSES:
    getattr(transformers, _auto_class_name).register(DIMMLConfig, DIMMLForMultimodalClassification, exist_ok=True)
transformers.AutoFeatureExtractor.register(DIMMLConfig, DIMMLProcessor, exist_ok=True)
transformers.AutoProcessor.register(DIMMLConfig, DIMMLProcessor, exist_ok=True)
DIMMLConfig.register_for_auto_class()
DIMMLForMultimodalClassification.register_for_auto_class("AutoModel")
del _auto_class_name
# `pipeline("multimodal-classification", model=model, feature_extractor=processor)` for models in memory; a saved
# checkpoint names the same pipeline in its own `custom_pipelines` (loaded with trust_remote_code=True).
transformers.pipelines.PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=MultimodalClassificationPipeline, pt_model=transformers.AutoModel,
    type="multimodal",
)
