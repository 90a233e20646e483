"""End to end through the real ``huggingface_hub`` client and a local Hub (``hub_server.HubServer`` on 127.0.0.1).

``training_scripts/train.py --push_to_hub`` trains a tiny DI-MML model on av_digits and pushes it; a user process
that cannot import ``hf_dimml`` then runs the model card's "How to use" snippet, taken verbatim from the pushed
card (the README shows the same snippet), on raw test samples and must reproduce the local model's logits.
``training_scripts/push_to_hub.py`` updates the repo after retraining and after editing the card, and fails with a
clear message and a non-zero exit status, leaving the folder untouched, when there is no token or no Hub.

One training run per module (a few seconds on 2 cores); everything else reuses it. The tests run in file order: the
update test, near the end, is the one that changes the repo after the first push.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from hub_server import HubServer, free_port
from huggingface_hub import ModelCard, constants

from hf_dimml import DIMMLForMultimodalClassification
from hf_dimml.processing_dimml import DIMMLProcessor

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = ROOT / "training_scripts" / "train.py"
PUSH_SCRIPT = ROOT / "training_scripts" / "push_to_hub.py"
CONFIG = ROOT / "training_scripts" / "configs" / "av_digits_dimml.yaml"
REPO_ID = "tester/dimml-tiny"
# A few seconds of training: enough for a real checkpoint, a summary, a plot and a card.
TINY_RUN = ["--stage1_epochs", "2", "--stage2_epochs", "1", "--max_train_samples", "256", "--duc_start_epoch", "1"]
NUM_SAMPLES = 4  # raw test samples the user process classifies

# What a user of the checkpoint needs, and all that may reach the Hub (".gitattributes" is the Hub's own).
USER_FILES = {
    "README.md",
    "config.json",
    "configuration_dimml.py",
    "modality_contribution.png",
    "model.safetensors",
    "modeling_dimml.py",
    "pipeline_dimml.py",
    "preprocessor_config.json",
    "processing_dimml.py",
    "training_curves.png",
}
# The Hub's newer results format, built from training_summary.json at push time (not local files).
EVAL_RESULTS_FILES = {".eval_results/av_digits_test.yaml", ".eval_results/av_digits_validation.yaml"}
NEVER_UPLOADED = re.compile(
    r"(^|/)(optimizer\.pt|scheduler\.pt|rng_state.*|training_args\.bin|trainer_state\.json|training_summary\.json)$"
    r"|^(checkpoint-\d+|runs)/|\.(bin|pt|pth|pkl)$"
)
SUBPROCESS_TIMEOUT = 240


# ----------------------------------------------------------------------------- helpers


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, sub-folders included (relative path -> digest)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def run_python(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )


def check(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result


def usage_snippet(card_text: str) -> str:
    """The Python code block of the card's "## How to use" section (also the README's Hub snippet)."""
    section = card_text.split("\n## How to use\n", 1)
    assert len(section) == 2, "the card has no '## How to use' section"
    match = re.search(r"```python\n(.*?)\n```", section[1].split("\n## ", 1)[0], re.DOTALL)
    assert match, "the '## How to use' section has no python code block"
    return match.group(1) + "\n"


def card_metadata(card_text: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card_text, re.DOTALL)
    assert match, "the card has no YAML front matter"
    metadata = yaml.safe_load(match.group(1))
    assert isinstance(metadata, dict)
    return metadata


def reported_metrics(metadata: dict, split: str) -> dict[str, float]:
    """``{metric name: value}`` of one split of the card's model-index."""
    (entry,) = metadata["model-index"]
    (result,) = [r for r in entry["results"] if r["dataset"]["split"] == split]
    return {metric["name"]: metric["value"] for metric in result["metrics"]}


def expected_metrics(split_metrics: dict, modality_names: list[str]) -> dict[str, float]:
    """What the card must report for one split of training_summary.json."""
    expected = {
        "Accuracy (all modalities)": split_metrics["accuracy"],
        "Macro F1 (all modalities)": split_metrics["macro_f1"],
    }
    for name in modality_names:
        expected[f"Accuracy ({name} branch)"] = split_metrics[f"accuracy_{name}"]
    if "accuracy_fusion" in split_metrics:
        expected["Accuracy (fusion head)"] = split_metrics["accuracy_fusion"]
    for subset, value in split_metrics["subset_accuracy"].items():
        expected[f"Accuracy (inputs: {subset})"] = value
    return expected


def local_logits(output_dir: Path, samples: list[dict[str, np.ndarray]], **only: bool) -> torch.Tensor:
    """Logits of the checkpoint in ``output_dir``, loaded here with hf_dimml, on raw samples (one at a time)."""
    model = DIMMLForMultimodalClassification.from_pretrained(output_dir).eval()
    processor = DIMMLProcessor.from_pretrained(output_dir)
    rows = []
    with torch.no_grad():
        for sample in samples:
            inputs = processor(**{k: v for k, v in sample.items() if only.get(k, True)}, return_tensors="pt")
            rows.append(model(**inputs).logits[0])
    return torch.stack(rows)


# The user's process: hf_dimml cannot be imported (transformers, torch, timm, numpy and Pillow can); it runs the card's
# snippet once per raw sample, with that sample's arrays bound to the names the snippet uses.
BLOCK_HF_DIMML = textwrap.dedent(
    '''
    import contextlib, importlib.abc, io, json, sys

    BLOCKED = ("hf_dimml",)

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    for blocked in BLOCKED:
        try:
            __import__(blocked)
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit(f"{blocked} is importable in the user process")
    '''
)
USER_SCRIPT = BLOCK_HF_DIMML + textwrap.dedent(
    '''
    import numpy as np
    import torch

    samples_path, snippet_path, result_path = sys.argv[1:4]
    data = np.load(samples_path)
    snippet = open(snippet_path, encoding="utf-8").read()
    code = compile(snippet, "<model card snippet>", "exec")
    results = []
    for index in range(int(data["count"])):
        namespace = {"audio_sample": data[f"audio_{index}"], "image_sample": data[f"image_{index}"]}
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(code, namespace)
        model, processor, inputs = namespace["model"], namespace["processor"], namespace["inputs"]
        with torch.no_grad():
            logits = model(**inputs).logits
            audio_only = model(**processor(audio=namespace["audio_sample"], return_tensors="pt")).logits
        results.append({
            "printed": printed.getvalue().strip(),
            "prediction": namespace["prediction"],
            "logits": logits[0].tolist(),
            "audio_only_logits": audio_only[0].tolist(),
            "input_shapes": {name: list(value.shape) for name, value in inputs.items()},
            "model_module": type(model).__module__,
            "processor_module": type(processor).__module__,
        })
    leaked = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    json.dump({"results": results, "leaked": leaked}, open(result_path, "w"))
    '''
)

# The pipeline user's process: hf_dimml cannot be imported; `pipeline(..., trust_remote_code=True)` by repo id, on
# every sample with all modalities, with each single one, and batched; the model's own argmax to compare with.
PIPELINE_SCRIPT = BLOCK_HF_DIMML + textwrap.dedent(
    '''
    import numpy as np
    import torch
    from transformers import AutoModel, AutoProcessor, pipeline

    repo_id, samples_path, result_path = sys.argv[1:4]
    data = np.load(samples_path)
    samples = [{"audio": data[f"audio_{i}"], "image": data[f"image_{i}"]} for i in range(int(data["count"]))]
    classifier = pipeline("multimodal-classification", model=repo_id, trust_remote_code=True, device=-1)
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True)
    cases = {"all": None, "audio": ("audio",), "image": ("image",)}
    result = {"pipeline_module": type(classifier).__module__, "single": {}, "batched": {}, "argmax": {}}
    for case, keep in cases.items():
        inputs = [{k: v for k, v in sample.items() if keep is None or k in keep} for sample in samples]
        result["single"][case] = [classifier(sample, top_k=3) for sample in inputs]
        result["batched"][case] = classifier(inputs, batch_size=3)
        with torch.no_grad():
            logits = model(**processor(**{k: [s[k] for s in inputs] for k in inputs[0]}, is_batched=True)).logits
        result["argmax"][case] = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    mixed = [{"audio": samples[0]["audio"]}, samples[1], {"image": samples[2]["image"]}]
    result["mixed"] = classifier(mixed, batch_size=2)
    result["leaked"] = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    json.dump(result, open(result_path, "w"))
    '''
)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server():
    with HubServer(username="tester") as hub:
        yield hub


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """train.py --push_to_hub into ``output``, as a subprocess talking to the local Hub."""
    root = tmp_path_factory.mktemp("hub_e2e")
    env = server.subprocess_env(root / "hf_home_trainer")  # online, HF_TOKEN of the server, own cache
    env["HF_DIMML_CACHE"] = str(root / "dimml_cache")
    env.setdefault("OMP_NUM_THREADS", "2")
    output = root / "output"
    result = check(
        run_python(
            [TRAIN_SCRIPT, CONFIG, "--output_dir", output, *TINY_RUN, "--push_to_hub", "true",
             "--hub_model_id", REPO_ID],
            env,
            cwd=ROOT,
        )
    )  # fmt: skip
    return SimpleNamespace(
        root=root,
        env=env,
        output=output,
        summary=json.loads((output / "training_summary.json").read_text()),
        digest=folder_digest(output),
        log=result.stdout + result.stderr,
        # The repo right after this push (a later test pushes updates to it).
        commits=server.commits(REPO_ID),
        remote=server.files(REPO_ID),
        card_text=server.files(REPO_ID)["README.md"].decode("utf-8"),
    )


@pytest.fixture(scope="module")
def raw_samples(trained) -> list[dict[str, np.ndarray]]:
    """Raw av_digits test rows: an MFCC sequence (13, T) with T != 20 (the model's length) and an 8x8 image."""
    from hf_dimml.data import load_av_digits

    test = load_av_digits(cache_dir=trained.root / "dimml_cache")["test"]
    samples, lengths = [], set()
    for row in test:
        audio = np.asarray(row["audio"], dtype=np.float32)
        if audio.shape[1] != 20 and audio.shape[1] not in lengths:  # lengths other than the model's, all different
            lengths.add(audio.shape[1])
            samples.append({"audio": audio, "image": np.asarray(row["image"], dtype=np.float32)})
        if len(samples) == NUM_SAMPLES:
            break
    assert len(samples) == NUM_SAMPLES
    for sample in samples:  # raw, as a user has them
        assert sample["audio"].shape[0] == 13 and sample["audio"].shape[1] != 20
        assert sample["image"].shape == (8, 8) and 0.0 <= sample["image"].min() <= sample["image"].max() <= 1.0
    return samples


# ----------------------------------------------------------------------------- tests


def test_train_push_uploads_exactly_what_a_user_needs(server, trained):
    commits = trained.commits
    assert [c.title for c in commits] == ["initial commit", "Upload hf_dimml model"]  # pushed once, by hf_dimml.hub
    assert f"pushed to {server.endpoint}/{REPO_ID}/commit/{commits[-1].oid}" in trained.log
    remote = trained.remote
    assert set(remote) - {".gitattributes"} == USER_FILES | EVAL_RESULTS_FILES
    assert not [path for path in remote if NEVER_UPLOADED.search(path)]
    for name in USER_FILES:  # byte-identical to the local checkpoint (the card included: regenerated identically)
        assert remote[name] == (trained.output / name).read_bytes(), name
    # The run did leave training state locally: the selection above is what kept it off the Hub.
    local = set(trained.digest)
    assert "training_args.bin" in local and "training_summary.json" in local
    assert any(path.startswith("checkpoint-") and path.endswith("optimizer.pt") for path in local)


def test_pushed_card_holds_the_run_results_and_shows_the_plot(trained):
    card_text = trained.card_text
    metadata = card_metadata(card_text)
    assert metadata["library_name"] == "transformers" and metadata["license"] == "apache-2.0"
    assert {"hf_dimml", "dimml", "custom_code", "audio", "image"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["av_digits"]
    assert metadata["model-index"][0]["name"] == "dimml-tiny"
    modality_names = [m["name"] for m in trained.summary["modalities"]]
    for split in ("test", "validation"):
        reported = reported_metrics(metadata, split)
        expected = expected_metrics(trained.summary["metrics"][split], modality_names)
        assert expected.items() <= reported.items(), split  # the exact numbers of training_summary.json
    # The real client parses the same results out of the card.
    card = ModelCard(card_text)
    test_accuracy = [r for r in card.data.eval_results if r.dataset_split == "test" and r.metric_name.startswith(
        "Accuracy (all")]  # fmt: skip
    assert [r.metric_value for r in test_accuracy] == [trained.summary["metrics"]["test"]["accuracy"]]
    # The text shows the numbers and the plot, and the plot is in the repo.
    assert f"| Accuracy (all modalities) | {100 * trained.summary['metrics']['test']['accuracy']:.2f} % |" in card_text
    assert trained.summary["plot"] == "training_curves.png"
    assert "![training curves](training_curves.png)" in card_text
    assert trained.remote["training_curves.png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_results_files_parse_and_hold_the_card_numbers(trained):
    import yaml
    from huggingface_hub import parse_eval_result_entries

    metadata = card_metadata(trained.card_text)
    for split in ("test", "validation"):
        entries = parse_eval_result_entries(yaml.safe_load(trained.remote[f".eval_results/av_digits_{split}.yaml"]))
        assert {entry.dataset_id for entry in entries} == {"av_digits"}
        by_task = {entry.task_id: entry.value for entry in entries}
        metrics = trained.summary["metrics"][split]
        assert by_task["accuracy"] == metrics["accuracy"] and by_task["macro_f1"] == metrics["macro_f1"]
        assert by_task["accuracy_subset_audio+image"] == metrics["subset_accuracy"]["audio+image"]
        # The same numbers as the model-index of the card, one entry per result.
        reported = reported_metrics(metadata, split)
        assert {entry.notes.removesuffix(f", {split} split"): entry.value for entry in entries} == reported


def test_card_snippet_predicts_without_hf_dimml_like_the_local_model(server, trained, raw_samples, tmp_path):
    snippet = usage_snippet(server.files(REPO_ID)["README.md"].decode("utf-8"))
    assert f'repo_id = "{REPO_ID}"' in snippet and "trust_remote_code=True" in snippet
    assert "processor(audio=audio_sample, image=image_sample" in snippet
    samples_path, snippet_path, result_path = tmp_path / "samples.npz", tmp_path / "snippet.py", tmp_path / "out.json"
    arrays = {f"{name}_{i}": value for i, sample in enumerate(raw_samples) for name, value in sample.items()}
    np.savez(samples_path, count=len(raw_samples), **arrays)
    snippet_path.write_text(snippet)
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    user_dir = tmp_path / "user"  # not the repository: nothing of hf_dimml on the path
    user_dir.mkdir()
    # A user: online, no token (the repo is public), an empty cache, the Hub at HF_ENDPOINT.
    env = server.subprocess_env(tmp_path / "hf_home_user", base=trained.env, token_in_env=False)
    env.pop("PYTHONPATH", None)
    requests_before = len(server.requests)

    check(run_python([tmp_path / "user.py", samples_path, snippet_path, result_path], env, cwd=user_dir))

    answer = json.loads(result_path.read_text())
    assert answer["leaked"] == []
    results = answer["results"]
    assert len(results) == len(raw_samples)
    # The code came from the Hub repo (transformers' dynamic-module cache), not from an installed package.
    assert all(r["model_module"].startswith("transformers_modules.") for r in results)
    assert all(r["processor_module"].startswith("transformers_modules.") for r in results)
    assert all(r["input_shapes"] == {"audio": [1, 1, 13, 20], "image": [1, 1, 8, 8]} for r in results)
    served = {path for method, path in server.requests[requests_before:] if method == "GET"}
    assert any(re.fullmatch(rf"/{REPO_ID}/resolve/[^/]+/model\.safetensors", path) for path in served), served

    expected = local_logits(trained.output, raw_samples)
    remote = torch.tensor([r["logits"] for r in results])
    assert remote.shape == expected.shape == (len(raw_samples), 10)
    assert torch.equal(remote.argmax(-1), expected.argmax(-1))
    assert [r["prediction"] for r in results] == expected.argmax(-1).tolist()
    torch.testing.assert_close(remote, expected, atol=1e-5, rtol=0)
    id2label = {int(k): v for k, v in json.loads((trained.output / "config.json").read_text())["id2label"].items()}
    assert [r["printed"] for r in results] == [id2label[i] for i in expected.argmax(-1).tolist()]
    # A missing modality: only the audio, as the card says.
    audio_only = torch.tensor([r["audio_only_logits"] for r in results])
    torch.testing.assert_close(audio_only, local_logits(trained.output, raw_samples, image=False), atol=1e-5, rtol=0)


def test_pipeline_from_the_hub_without_hf_dimml_matches_the_model(server, trained, raw_samples, tmp_path):
    samples_path, result_path = tmp_path / "samples.npz", tmp_path / "pipeline.json"
    arrays = {f"{name}_{i}": value for i, sample in enumerate(raw_samples) for name, value in sample.items()}
    np.savez(samples_path, count=len(raw_samples), **arrays)
    (tmp_path / "pipeline_user.py").write_text(PIPELINE_SCRIPT)
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    env = server.subprocess_env(tmp_path / "hf_home_pipeline", base=trained.env, token_in_env=False)
    env.pop("PYTHONPATH", None)

    check(run_python([tmp_path / "pipeline_user.py", REPO_ID, samples_path, result_path], env, cwd=user_dir))

    answer = json.loads(result_path.read_text())
    assert answer["leaked"] == [] and answer["pipeline_module"].startswith("transformers_modules.")
    for case, present in (("all", ["audio", "image"]), ("audio", ["audio"]), ("image", ["image"])):
        expected = answer["argmax"][case]
        for mode in ("single", "batched"):
            outputs = answer[mode][case]
            assert [out["predictions"][0]["label"] for out in outputs] == expected, (case, mode)
            assert all(out["modalities"] == present for out in outputs)
            # DI-MML's certainty weights: one per present modality's head (+ the fusion head with both), summing to 1.
            heads = present + (["fusion"] if len(present) == 2 else [])
            assert all(list(out["head_weights"]) == heads for out in outputs), (case, mode)
            assert all(abs(sum(out["head_weights"].values()) - 1) < 1e-5 for out in outputs)
        scores = [[p["score"] for p in out["predictions"]] for out in answer["single"][case]]
        assert all(len(s) == 3 and s == sorted(s, reverse=True) for s in scores)  # top_k=3, best first
    # A batch mixing modality subsets comes back in input order, each sample with its own modalities.
    mixed = answer["mixed"]
    assert [out["modalities"] for out in mixed] == [["audio"], ["audio", "image"], ["image"]]
    assert [out["predictions"][0]["label"] for out in mixed] == [
        answer["argmax"]["audio"][0], answer["argmax"]["all"][1], answer["argmax"]["image"][2]]


def test_readme_shows_the_card_snippet(trained):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Sharing on the Hub\n" in readme
    section = readme.split("\n## Sharing on the Hub\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)\n```", section, re.DOTALL)
    assert len(blocks) == 2  # the card's snippet, then the pipeline
    assert 'pipeline("multimodal-classification", model=repo_id, trust_remote_code=True)' in blocks[1]
    card_snippet = usage_snippet(trained.card_text)
    readme_snippet = re.sub(r'^repo_id = ".*"$', f'repo_id = "{REPO_ID}"', blocks[0] + "\n", flags=re.MULTILINE)
    assert readme_snippet == card_snippet
    assert "--push_to_hub --hub_model_id" in section and "training_scripts/push_to_hub.py --output_dir" in section


def test_push_script_updates_the_repo_after_retraining_and_editing_the_card(server, trained, raw_samples, tmp_path):
    first = trained.commits[-1]
    folder = tmp_path / "output"  # the trained folder, retrained in place (a copy: other tests keep the first run)
    shutil.copytree(trained.output, folder)
    # Retraining into a folder that holds a run takes --overwrite_output_dir (without it, train.py refuses).
    refused = run_python([TRAIN_SCRIPT, CONFIG, "--output_dir", folder, *TINY_RUN, "--seed", "1"], trained.env, ROOT)
    assert refused.returncode != 0 and "--overwrite_output_dir true" in refused.stderr
    assert folder_digest(folder) == trained.digest
    check(run_python([TRAIN_SCRIPT, CONFIG, "--output_dir", folder, *TINY_RUN, "--seed", "1",
                      "--overwrite_output_dir", "true"], trained.env, ROOT))
    summary = json.loads((folder / "training_summary.json").read_text())
    assert summary["training"]["seed"] == 1 and summary["repo_id"] is None
    assert (folder / "model.safetensors").read_bytes() != first.files["model.safetensors"].data

    result = check(
        run_python(
            [PUSH_SCRIPT, "--output_dir", folder, "--repo_id", REPO_ID, "--commit_message", "Retrain with seed 1"],
            trained.env,
            ROOT,
        )
    )
    commits = server.commits(REPO_ID)
    assert [c.title for c in commits[-2:]] == [first.title, "Retrain with seed 1"]
    assert result.stdout.strip().splitlines()[-1] == f"{server.endpoint}/{REPO_ID}/commit/{commits[-1].oid}"
    remote = server.files(REPO_ID)
    assert set(remote) - {".gitattributes"} == USER_FILES | EVAL_RESULTS_FILES
    for name in USER_FILES:
        assert remote[name] == (folder / name).read_bytes(), name
    card_text = remote["README.md"].decode("utf-8")
    assert f'repo_id = "{REPO_ID}"' in card_text  # regenerated for the repo
    modality_names = [m["name"] for m in summary["modalities"]]
    assert expected_metrics(summary["metrics"]["test"], modality_names).items() <= reported_metrics(
        card_metadata(card_text), "test").items()  # fmt: skip
    assert "| `seed` | 1 |" in card_text
    # History is kept: the first commit still serves the first run.
    assert server.files(REPO_ID, revision=first.oid)["model.safetensors"] == trained.output.joinpath(
        "model.safetensors").read_bytes()  # fmt: skip
    # The new weights are what a download gets now (the real client, in this process).
    with pytest.MonkeyPatch.context() as patch:
        server.patch_client(patch)
        from huggingface_hub import hf_hub_download

        downloaded = hf_hub_download(REPO_ID, "model.safetensors", cache_dir=tmp_path / "cache")
    assert Path(downloaded).read_bytes() == (folder / "model.safetensors").read_bytes()

    # A hand-edited card, kept as it is with --keep_card (the same CLI, in this process to save a start-up).
    edited = (folder / "README.md").read_text() + "\n## Notes\n\nRetrained with seed 1 for the release.\n"
    (folder / "README.md").write_text(edited)
    cli = _load_push_cli()
    with pytest.MonkeyPatch.context() as patch:
        server.patch_client(patch, token_in_env=True)
        argv = ["--output_dir", str(folder), "--repo_id", REPO_ID, "--keep_card", "--commit_message", "Edit card"]
        assert cli.main(argv) == 0
    assert server.commits(REPO_ID)[-1].title == "Edit card"
    assert server.files(REPO_ID)["README.md"].decode("utf-8") == edited == (folder / "README.md").read_text()
    assert set(server.files(REPO_ID)) - {".gitattributes"} == USER_FILES | EVAL_RESULTS_FILES


def _load_push_cli():
    """What training_scripts/push_to_hub.py runs (its `main`), in this process to save a start-up."""
    from hf_dimml import hub

    return hub


def test_push_script_fails_clearly_and_leaves_the_folder_intact(server, trained, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "output"
    shutil.copytree(trained.output, folder)
    before = folder_digest(folder)
    commits_before = len(server.commits(REPO_ID))
    command = [PUSH_SCRIPT, "--output_dir", folder, "--repo_id", REPO_ID]

    # No token anywhere (no HF_TOKEN, an empty HF_HOME): a real process, its exit status and its one-line message.
    env = server.subprocess_env(tmp_path / "hf_home_empty", base=trained.env, token_in_env=False)
    result = run_python(command, env, ROOT)
    assert result.returncode == 1, result.stderr
    assert "No Hugging Face token found" in result.stderr and "hf auth login" in result.stderr
    assert "Traceback" not in result.stderr
    assert folder_digest(folder) == before

    # The same CLI in this process (a process start-up each would cost seconds): nothing listening at HF_ENDPOINT,
    # a refused token, offline mode, a missing folder.
    cli = _load_push_cli()
    unreachable = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", unreachable)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", server.token)
    assert cli.main([*map(str, command[1:])]) == 1
    assert f"Could not reach the Hugging Face Hub at {unreachable}" in capsys.readouterr().err
    assert folder_digest(folder) == before
    server.patch_client(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    assert cli.main([*map(str, command[1:])]) == 1
    assert "token is invalid" in capsys.readouterr().err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cli.main([*map(str, command[1:])]) == 1
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    assert cli.main(["--output_dir", str(tmp_path / "missing"), "--repo_id", REPO_ID]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert folder_digest(folder) == before
    assert len(server.commits(REPO_ID)) == commits_before

    # --dry_run: the files, no network, nothing written.
    assert cli.main(["--output_dir", str(folder), "--dry_run"]) == 0
    assert set(capsys.readouterr().out.split()) == USER_FILES
    assert folder_digest(folder) == before


def test_a_downloaded_config_cannot_make_model_construction_read_files(server, trained, tmp_path):
    # A repo whose config asks timm to read a local file: loading it with hf_dimml installed is refused up front.
    config = json.loads((trained.output / "config.json").read_text())
    config["modalities"][1].update(encoder="resnet18", encoder_kwargs={
        "pretrained_cfg_overlay": {"file": str(tmp_path / "secret.pth")}, "drop_rate": 0.1})
    from hf_dimml import DIMMLConfig

    with pytest.MonkeyPatch.context() as patch:
        server.patch_client(patch)
        from huggingface_hub import HfApi

        api = HfApi(endpoint=server.endpoint, token=server.token)
        api.create_repo("tester/file-reading-config")
        api.upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json",
                        repo_id="tester/file-reading-config")
        with pytest.raises(ValueError, match=r"encoder_kwargs \['pretrained_cfg_overlay'\] refused"):
            DIMMLConfig.from_pretrained("tester/file-reading-config", cache_dir=tmp_path / "cache")
        config["modalities"][1]["encoder_kwargs"] = {"act_layer": "https://example.com/layer.py"}
        api.upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json",
                        repo_id="tester/file-reading-config")
        with pytest.raises(ValueError, match="names a file or URL"):
            DIMMLConfig.from_pretrained("tester/file-reading-config", cache_dir=tmp_path / "cache2")
