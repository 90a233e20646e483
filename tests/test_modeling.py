"""DI-MML config and model classes, following transformers' ModelTester pattern."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers

from hf_dimml import (
    DIMMLConfig,
    DIMMLForMultimodalClassification,
    DIMMLModel,
    certainty_weighted_logits,
)
from hf_dimml.losses import dimml_stage1_loss


class DIMMLModelTester:
    """Tiny configs: an MLP-encoded spectrogram, a timm-encoded image and timm-encoded frames."""

    batch_size = 3
    num_labels = 4
    hidden_size = 16

    def modalities(self) -> list[dict]:
        return [
            {"name": "audio", "kind": "spectrogram", "encoder": "mlp", "input_shape": [1, 6, 5],
             "encoder_kwargs": {"hidden_sizes": [12]}},
            # zero_init_last=False: timm zero-initialises each block's last BN scale, which would make the strict
            # "every parameter gets a non-zero gradient" check below fail for a reason unrelated to our losses.
            {"name": "image", "kind": "image", "encoder": "test_resnet", "input_shape": [3, 16, 16],
             "encoder_kwargs": {"zero_init_last": False}},
            {"name": "video", "kind": "frames", "encoder": "test_resnet", "input_shape": [2, 3, 16, 16],
             "encoder_kwargs": {"zero_init_last": False}},
        ]

    def get_config(self, **overrides) -> DIMMLConfig:
        kwargs = {"modalities": self.modalities(), "hidden_size": self.hidden_size, "num_labels": self.num_labels}
        kwargs.update(overrides)
        return DIMMLConfig(**kwargs)

    def prepare_inputs(self, seed: int = 0) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        inputs = {}
        for spec in self.modalities():
            inputs[spec["name"]] = torch.randn(self.batch_size, *spec["input_shape"], generator=generator)
        inputs["labels"] = torch.randint(0, self.num_labels, (self.batch_size,), generator=generator)
        return inputs


@pytest.fixture
def tester() -> DIMMLModelTester:
    return DIMMLModelTester()


@pytest.fixture
def model(tester) -> DIMMLForMultimodalClassification:
    torch.manual_seed(0)
    return DIMMLForMultimodalClassification(tester.get_config()).eval()


# --- configuration -----------------------------------------------------------------------------------------------


def test_default_config_is_valid_av_digits_model():
    config = DIMMLConfig()
    assert config.modality_names == ["audio", "image"]
    assert config.num_labels == 10
    assert config.model_type == "dimml"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m[:1], "at least two modalities"),
        (lambda m: [m[0], {**m[1], "name": "audio"}], "duplicate modality name"),
        (lambda m: [m[0], {**m[1], "encoder": "no_such_net_v9"}], "unknown timm model 'no_such_net_v9'"),
        (lambda m: [m[0], {**m[1], "kind": "hologram"}], "kind must be one of"),
        (lambda m: [m[0], {**m[1], "input_shape": [3, 16]}], "modality 'image' of kind 'image': input_shape"),
        (lambda m: [m[0], {**m[1], "input_shape": [3, 0, 16]}], "input_shape must be 3 positive ints"),
        (lambda m: [m[0], {**m[1], "name": "labels"}], "modality name 'labels'"),
        (lambda m: [{"name": "v", "kind": "vector", "encoder": "resnet18", "input_shape": [4]}, m[1]],
         "vector inputs take the 'mlp' encoder"),
        (lambda m: [{"name": "v", "kind": "vector", "input_shape": [4],
                     "encoder_kwargs": {"hidden_sizes": [0]}}, m[1]], "hidden_sizes must be positive"),
    ],
)
def test_config_validation_names_the_problem(tester, change, message):
    with pytest.raises(ValueError, match=message):
        DIMMLConfig(modalities=change(tester.modalities()), num_labels=4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"hidden_size": 0}, "hidden_size"), ({"num_labels": 1}, "num_labels"), ({"logit_temperature": -1.0},
     "logit_temperature"), ({"method": "magic"}, r"give head_layout"), ({"head_layout": "magic"}, "head_layout must"),
     ({"method": ""}, "name of a training method")],
)
def test_config_validation_of_scalars(tester, overrides, message):
    with pytest.raises(ValueError, match=message):
        tester.get_config(**overrides)


def test_config_training_knobs_of_older_versions_are_dropped_with_a_warning(tester, caplog):
    with caplog.at_level("WARNING", logger="hf_dimml.configuration_dimml"):
        config = tester.get_config(duc_temperature=10.0, shared_weight=0.5)
    assert not hasattr(config, "duc_temperature") and "duc_temperature" not in config.to_dict()
    assert "training arguments now" in caplog.text
    # A method of its own names its layout; the methods of hf_dimml 0.1 imply theirs.
    assert tester.get_config(method="ogm_like", head_layout="fused").head_layout == "fused"
    assert tester.get_config(method="mla").head_layout == "shared_head"


def test_config_round_trip(tmp_path, tester):
    config = tester.get_config(logit_temperature=3.0, id2label={0: "a", 1: "b", 2: "c", 3: "d"})
    config.save_pretrained(tmp_path)
    loaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, DIMMLConfig)
    assert {k: v for k, v in loaded.to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in config.to_dict().items() if k != "_name_or_path"
    }
    assert loaded.id2label[2] == "c"


# --- forward, shapes and errors ----------------------------------------------------------------------------------


def test_forward_outputs(model, tester):
    inputs = tester.prepare_inputs()
    output = model(**inputs)
    assert output.logits.shape == (tester.batch_size, tester.num_labels)
    assert set(output.modality_logits) == {"audio", "image", "video"}
    assert set(output.shared_logits) == {"audio", "image", "video"}
    assert output.fusion_logits.shape == (tester.batch_size, tester.num_labels)
    assert all(f.shape == (tester.batch_size, tester.hidden_size) for f in output.features.values())
    assert torch.isfinite(output.loss)
    # Before stage 2 the fusion head is not weighted in: three private heads, the fusion head at weight 0.
    assert output.head_weights.shape == (tester.batch_size, 4)
    assert (output.head_weights[:, 3] == 0).all()
    torch.testing.assert_close(output.head_weights.sum(1), torch.ones(tester.batch_size))


def test_base_model_gives_one_feature_per_modality(tester):
    base = DIMMLModel(tester.get_config()).eval()
    inputs = tester.prepare_inputs()
    inputs.pop("labels")
    out = base(**inputs)
    assert list(out.features) == ["audio", "image", "video"]
    assert out.stacked_features.shape == (tester.batch_size, 3, tester.hidden_size)


def test_frames_are_encoded_per_frame_and_averaged(model, tester):
    inputs = tester.prepare_inputs()
    video = inputs["video"]
    encoder = model.dimml.encoders["video"]
    per_frame = torch.stack([encoder.backbone(video[:, t]) for t in range(video.shape[1])], 1).mean(1)
    torch.testing.assert_close(encoder(video), encoder.projection(per_frame))


def test_certainty_weighting_matches_hand_computation():
    z1 = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    z2 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 4.0]])
    temperature = 0.5
    logits, weights = certainty_weighted_logits([z1, z2], temperature)
    for i in range(2):
        import math

        def max_softmax(row):
            exps = [math.exp(v) for v in row]
            return max(exps) / sum(exps)

        c1, c2 = max_softmax(z1[i].tolist()), max_softmax(z2[i].tolist())
        e1, e2 = math.exp(c1 / temperature), math.exp(c2 / temperature)
        w1, w2 = e1 / (e1 + e2), e2 / (e1 + e2)
        assert weights[i].tolist() == pytest.approx([w1, w2], rel=1e-6)
        expected = [w1 * a + w2 * b for a, b in zip(z1[i].tolist(), z2[i].tolist())]
        assert logits[i].tolist() == pytest.approx(expected, rel=1e-6)
    # Per sample: sample 0 leans on head 1, sample 1 on head 2.
    assert weights[0, 0] > weights[0, 1] and weights[1, 1] > weights[1, 0]


def test_model_logits_are_the_weighting_of_available_heads(model, tester):
    inputs = tester.prepare_inputs()
    output = model(**inputs)
    expected, _ = certainty_weighted_logits(list(output.modality_logits.values()), model.config.logit_temperature)
    torch.testing.assert_close(output.logits, expected)
    model.fusion_head_trained.fill_(True)
    output = model(**inputs)
    heads = [*output.modality_logits.values(), output.fusion_logits]
    expected, _ = certainty_weighted_logits(heads, model.config.logit_temperature)
    torch.testing.assert_close(output.logits, expected)
    assert output.head_weights.shape == (tester.batch_size, 4)


@pytest.mark.parametrize("missing", [["audio"], ["image", "video"]])
def test_missing_modality_still_predicts(model, tester, missing):
    model.fusion_head_trained.fill_(True)
    inputs = tester.prepare_inputs()
    for name in missing:
        inputs.pop(name)
    output = model(**inputs)
    assert output.fusion_logits is None
    assert output.logits.shape == (tester.batch_size, tester.num_labels)
    present = [name for name in ["audio", "image", "video"] if name not in missing]
    assert list(output.modality_logits) == present
    assert output.head_weights.shape == (tester.batch_size, len(present))


@pytest.mark.parametrize("method", ["dimml", "mla", "dmrnet", "joint", "unimodal"])
def test_inference_forward_is_one_graph(tester, method):
    # fullgraph=True raises on any graph break: the whole prediction can then be replayed as one CUDA graph
    # (torch.compile mode="reduce-overhead"), which is what batch-1 GPU serving needs (BENCHMARKS.md row 5b).
    torch._dynamo.reset()
    model = DIMMLForMultimodalClassification(tester.get_config(method=method)).eval()
    inputs = tester.prepare_inputs()
    inputs.pop("labels")
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
        subset = {"audio": inputs["audio"]}
        torch.testing.assert_close(compiled(**subset).logits, model(**subset).logits, rtol=0, atol=0)


def test_none_counts_as_missing(model, tester):
    inputs = tester.prepare_inputs()
    inputs["image"] = None
    assert "image" not in model(**inputs).modality_logits


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("audio", (3, 6, 5), r"modality 'audio' \(spectrogram\): expected a 4-D tensor of shape \(batch, 1, 6, 5\)"),
        ("audio", (3, 1, 6, 7), r"modality 'audio' \(spectrogram\): expected shape \(batch, 1, 6, 5\)"),
        ("image", (3, 1, 16, 16), r"modality 'image' \(image\): expected shape \(batch, 3, 16, 16\)"),
        ("video", (3, 4, 3, 16, 16), r"modality 'video' \(frames\): expected shape \(batch, 2, 3, 16, 16\)"),
        ("video", (3, 3, 16, 16), r"modality 'video' \(frames\): expected a 5-D tensor"),
    ],
)
def test_wrong_shape_raises_named_error(model, tester, name, shape, message):
    inputs = tester.prepare_inputs()
    inputs[name] = torch.randn(*shape)
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_unknown_or_no_modality_raises(model, tester):
    inputs = tester.prepare_inputs()
    with pytest.raises(ValueError, match=r"unknown modality input\(s\) \['depth'\]"):
        model(**inputs, depth=torch.randn(3, 4))
    with pytest.raises(ValueError, match="no modality given"):
        model(labels=inputs["labels"])


def test_timm_image_accepts_other_spatial_sizes(model, tester):
    inputs = tester.prepare_inputs()
    inputs["image"] = torch.randn(3, 3, 24, 24)
    assert model(**inputs).logits.shape == (3, tester.num_labels)


# --- gradients ---------------------------------------------------------------------------------------------------


def _stage1_loss(model, inputs, with_duc: bool):
    labels = inputs["labels"]
    output = model(**{k: v for k, v in inputs.items() if k != "labels"}, training_stage=1)
    mask = None
    if with_duc:
        mask = torch.zeros(3, model.config.hidden_size, dtype=torch.bool)
        mask[0, :8] = True
        mask[1, 4:12] = True
        mask[2, 10:] = True
    loss, _ = dimml_stage1_loss(output.modality_logits, output.shared_logits, output.features, labels,
                                shared_weight=1.0, duc_weight=1.0, duc_temperature=5.0, effective_mask=mask)
    return loss


def test_every_stage1_parameter_gets_a_gradient(tester):
    model = DIMMLForMultimodalClassification(tester.get_config()).train()
    _stage1_loss(model, tester.prepare_inputs(), with_duc=True).backward()
    for name, param in model.named_parameters():
        if name.startswith("fusion_head."):
            assert param.grad is None, name  # trained in stage 2 only
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient for {name}"


def test_every_stage2_parameter_gets_a_gradient_and_encoders_none(tester):
    model = DIMMLForMultimodalClassification(tester.get_config())
    inputs = tester.prepare_inputs()
    labels = inputs.pop("labels")
    output = model(**inputs, training_stage=2)
    # Only the fusion logits carry gradient in stage 2 (what DDP's unused-parameter search needs).
    assert output.fusion_logits.requires_grad
    assert not any(z.requires_grad for z in output.modality_logits.values())
    torch.nn.functional.cross_entropy(output.fusion_logits, labels).backward()
    for name, param in model.named_parameters():
        if name.startswith("fusion_head."):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, f"{name} must stay frozen in stage 2"


def test_stage1_forward_keeps_the_fusion_head_out_of_the_graph(tester):
    model = DIMMLForMultimodalClassification(tester.get_config())
    inputs = tester.prepare_inputs()
    inputs.pop("labels")
    output = model(**inputs, training_stage=1)
    assert not output.fusion_logits.requires_grad
    assert all(z.requires_grad for z in output.modality_logits.values())
    with pytest.raises(ValueError, match="training_stage"):
        model(**inputs, training_stage=3)


# --- save / load ---------------------------------------------------------------------------------------------------


def test_save_load_round_trip_identical_outputs(tmp_path, model, tester):
    model.fusion_head_trained.fill_(True)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = DIMMLForMultimodalClassification.from_pretrained(tmp_path).eval()
    inputs = tester.prepare_inputs()
    a, b = model(**inputs), loaded(**inputs)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.fusion_logits, b.fusion_logits)
    assert bool(loaded.fusion_head_trained)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


@pytest.mark.parametrize(
    "auto_class",
    ["AutoModel", "AutoModelForAudioClassification", "AutoModelForImageClassification",
     "AutoModelForVideoClassification"],
)
def test_auto_classes_resolve(tmp_path, model, auto_class):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"][auto_class] == "modeling_dimml.DIMMLForMultimodalClassification"
    assert config["auto_map"]["AutoConfig"] == "configuration_dimml.DIMMLConfig"
    loaded = getattr(transformers, auto_class).from_pretrained(tmp_path)
    assert type(loaded) is DIMMLForMultimodalClassification


def test_trust_remote_code_without_hf_dimml_installed(tmp_path, model, tester):
    """A subprocess that cannot import hf_dimml loads the folder with trust_remote_code=True and predicts the same."""
    model.fusion_head_trained.fill_(True)
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    assert (checkpoint / "modeling_dimml.py").exists() and (checkpoint / "configuration_dimml.py").exists()
    inputs = tester.prepare_inputs()
    inputs.pop("labels")
    torch.save(inputs, tmp_path / "inputs.pt")
    expected = model(**inputs).logits
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class BlockHfDimml(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "hf_dimml" or name.startswith("hf_dimml."):
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)")
                return None

        sys.meta_path.insert(0, BlockHfDimml())
        try:
            import hf_dimml  # noqa: F401
            raise SystemExit("hf_dimml should not be importable here")
        except ModuleNotFoundError:
            pass
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        assert "hf_dimml" not in type(model).__module__, type(model).__module__
        inputs = torch.load({str(tmp_path / 'inputs.pt')!r})
        with torch.no_grad():
            torch.save(model(**inputs).logits, {str(tmp_path / 'remote_logits.pt')!r})
        print("loaded", type(model).__module__)
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout
    remote = torch.load(tmp_path / "remote_logits.pt")
    torch.testing.assert_close(remote, expected.detach())


def test_auto_processor_resolves_locally_without_remote_code(tmp_path, model):
    from transformers import AutoFeatureExtractor, AutoProcessor

    from hf_dimml import DIMMLProcessor

    processor = DIMMLProcessor(modalities=[
        {"name": "audio", "kind": "spectrogram", "num_frames": 5, "n_bins": 6},
        {"name": "image", "kind": "image", "channels": 3, "image_size": [16, 16]},
    ])
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    for auto_class in (AutoProcessor, AutoFeatureExtractor):
        loaded = auto_class.from_pretrained(tmp_path)  # no trust_remote_code: the installed package serves it
        assert type(loaded) is DIMMLProcessor
        assert loaded.modalities == processor.modalities
