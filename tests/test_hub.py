"""Hub push, model card and the local Hub server, exercised through the real huggingface_hub client.

Everything runs against ``hub_server.HubServer`` on 127.0.0.1 (no network). The suite runs with
``HF_HUB_OFFLINE=1``; the ``hub`` fixture switches the in-process client online for one test.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from hub_server import HubServer, free_port, hub_fixture  # noqa: F401  (provides the `hub` fixture)
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download, metadata_load, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session
from safetensors.torch import save_file

from hf_dimml.hub import PushOutcomeUnknownError, push_to_hub, select_files_to_upload
from hf_dimml.model_card import build_model_card, find_model_card_template, load_training_summary, write_model_card

REPO_ID = "hf-dimml-tester/tiny-dimml"

# What a user of the checkpoint needs: exactly these files must reach the Hub.
EXPECTED_UPLOAD = {
    "README.md",
    "config.json",
    "configuration_tiny.py",
    "model.safetensors",
    "modeling_tiny.py",
    "preprocessor_config.json",
    "processing_tiny.py",
    "training_curves.png",
}

# Built from training_summary.json at push time: on the Hub, never in the folder.
EVAL_RESULTS_UPLOAD = {".eval_results/av_digits_test.yaml", ".eval_results/av_digits_validation.yaml"}
SUMMARY = {
    "method": "dimml",
    "method_hyperparameters": {
        "shared_weight": 1.0, "duc_weight": 1.0, "duc_temperature": 50.0, "duc_start_epoch": 20,
        "logit_temperature": 1.0,
    },
    "modalities": [
        {"name": "audio", "kind": "spectrogram", "encoder": "mlp", "input_shape": [1, 13, 20]},
        {"name": "image", "kind": "image", "encoder": "resnet18", "input_shape": [1, 8, 8]},
    ],
    "dataset": {
        "name": "av_digits", "config": "default", "recipe": {"audio_noise_std": 0.5, "image_pca_energy": 0.6},
        "splits": {"train": 2100, "validation": 450, "test": 450},
    },
    "training": {
        "epochs": 30, "stage2_epochs": 10, "learning_rate": 0.01, "batch_size": 64, "seed": 0,
        "mixed_precision": "no", "num_processes": 1,
    },
    "labels": ["zero", "one"],
    "metrics": {
        "test": {
            "accuracy": 0.9, "macro_f1": 0.89, "accuracy_audio": 0.85, "accuracy_image": 0.6, "accuracy_fusion": 0.88,
            "subset_accuracy": {"audio": 0.85, "image": 0.6, "audio+image": 0.9},
        },
        "validation": {"accuracy": 0.91},
    },
    "plot": "training_curves.png",
    "repo_id": REPO_ID,
}  # fmt: skip


def _write_plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(3, 2))
    axis.plot([0, 1, 2], [1.0, 0.6, 0.4], label="loss")
    axis.legend()
    figure.savefig(path, dpi=40)
    plt.close(figure)


def make_output_dir(root: Path) -> Path:
    """A fake training output folder: the checkpoint files plus training leftovers that must stay local."""
    folder = root / "output"
    folder.mkdir()
    save_file({"encoder.weight": torch.randn(4, 3), "head.bias": torch.zeros(2)}, str(folder / "model.safetensors"))
    auto_map = {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"}
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny", "auto_map": auto_map}))
    (folder / "configuration_tiny.py").write_text("class TinyConfig:\n    pass\n")
    (folder / "modeling_tiny.py").write_text("from .configuration_tiny import TinyConfig\n")
    (folder / "processing_tiny.py").write_text("class TinyProcessor:\n    pass\n")
    (folder / "preprocessor_config.json").write_text(json.dumps({"processor_class": "TinyProcessor"}))
    (folder / "training_summary.json").write_text(json.dumps(SUMMARY))
    _write_plot(folder / "training_curves.png")
    # Training leftovers: none of these may be uploaded.
    torch.save({"state": {}}, folder / "optimizer.pt")
    torch.save({}, folder / "scheduler.pt")
    torch.save({}, folder / "rng_state_0.pth")
    torch.save({}, folder / "training_args.bin")
    (folder / "trainer_state.json").write_text("{}")
    checkpoint = folder / "checkpoint-5"
    checkpoint.mkdir()
    save_file({"w": torch.ones(1)}, str(checkpoint / "model.safetensors"))
    (checkpoint / "config.json").write_text("{}")
    torch.save({}, checkpoint / "optimizer.pt")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out.tfevents.1").write_bytes(b"\x00tensorboard")
    return folder


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    return make_output_dir(tmp_path)


def test_push_uploads_exactly_the_checkpoint_and_downloads_identical_bytes(hub, output_dir, tmp_path):
    weights_before = {k: v for k, v in folder_digest(output_dir).items() if k != "README.md"}

    commit_url = push_to_hub(output_dir, REPO_ID, token=hub.token)

    assert commit_url == f"{hub.endpoint}/{REPO_ID}/commit/{hub.commits(REPO_ID)[-1].oid}"
    remote = hub.files(REPO_ID)
    # .gitattributes: made by the Hub at creation
    assert set(remote) - {".gitattributes"} == EXPECTED_UPLOAD | EVAL_RESULTS_UPLOAD
    # Generating the card wrote README.md and nothing else.
    assert {k: v for k, v in folder_digest(output_dir).items() if k != "README.md"} == weights_before
    # The real client downloads exactly the local bytes, one file and the whole snapshot.
    single = hf_hub_download(REPO_ID, "model.safetensors", cache_dir=tmp_path / "cache1")
    assert Path(single).read_bytes() == (output_dir / "model.safetensors").read_bytes()
    snapshot = Path(snapshot_download(REPO_ID, cache_dir=tmp_path / "cache2"))
    downloaded = {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()}
    assert downloaded - {".gitattributes"} == EXPECTED_UPLOAD | EVAL_RESULTS_UPLOAD
    assert not (output_dir / ".eval_results").exists()
    for name in EXPECTED_UPLOAD:
        assert (snapshot / name).read_bytes() == (output_dir / name).read_bytes(), name
    # The endpoints the client used for that (see hub_server's docstring).
    calls = {f"{method} {path}" for method, path in hub.requests}
    assert {
        "POST /api/repos/create",
        "POST /api/validate-yaml",
        f"POST /api/models/{REPO_ID}/preupload/main",
        f"POST /api/models/{REPO_ID}/commit/main",
        f"GET /api/models/{REPO_ID}/tree/main",
        f"HEAD /{REPO_ID}/resolve/main/model.safetensors",
        f"GET /{REPO_ID}/resolve/main/model.safetensors",
    } <= calls


def test_select_files_to_upload_skips_training_state(output_dir):
    write_model_card(output_dir)
    assert set(select_files_to_upload(output_dir)) == EXPECTED_UPLOAD

    (output_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        select_files_to_upload(output_dir)


def test_second_push_makes_a_new_commit_with_updated_files(hub, output_dir, tmp_path):
    (output_dir / "helpers.py").write_text("HELPER = 1\n")
    first_url = push_to_hub(output_dir, REPO_ID, token=hub.token)
    first_oid = first_url.rsplit("/", 1)[-1]
    assert "helpers.py" in hub.files(REPO_ID)
    # A file added to the repo by other means must survive our later pushes.
    HfApi(endpoint=hub.endpoint, token=hub.token).upload_file(
        path_or_fileobj=b"notes", path_in_repo="NOTES.txt", repo_id=REPO_ID, commit_message="notes"
    )

    new_weights = {"encoder.weight": torch.full((4, 3), 7.0), "head.bias": torch.ones(2)}
    save_file(new_weights, str(output_dir / "model.safetensors"))
    summary = dict(SUMMARY, metrics={"test": {"accuracy": 0.95, "macro_f1": 0.94}})
    (output_dir / "training_summary.json").write_text(json.dumps(summary))
    (output_dir / "helpers.py").unlink()
    second_url = push_to_hub(output_dir, REPO_ID, token=hub.token, commit_message="Second push")

    commits = hub.commits(REPO_ID)
    assert second_url != first_url and commits[-1].title == "Second push"
    assert [c.title for c in commits] == ["initial commit", "Upload hf_dimml model", "notes", "Second push"]
    remote = hub.files(REPO_ID)
    assert "helpers.py" not in remote  # no longer part of the checkpoint: deleted
    assert remote["NOTES.txt"] == b"notes"  # not ours: kept
    downloaded = hf_hub_download(REPO_ID, "model.safetensors", cache_dir=tmp_path / "cache")
    assert Path(downloaded).read_bytes() == (output_dir / "model.safetensors").read_bytes()
    readme = Path(hf_hub_download(REPO_ID, "README.md", cache_dir=tmp_path / "cache")).read_text()
    assert "95.00 %" in readme
    # History is kept: the first commit still serves the old card.
    old_readme = hf_hub_download(REPO_ID, "README.md", revision=first_oid, cache_dir=tmp_path / "cache")
    assert "90.00 %" in Path(old_readme).read_text()


def test_model_card_holds_eval_results_and_validates(hub, output_dir):
    readme = write_model_card(output_dir)

    metadata = metadata_load(readme)
    assert metadata["library_name"] == "transformers" and metadata["license"] == "apache-2.0"
    assert {"hf_dimml", "multimodal", "dimml"} <= set(metadata["tags"])
    model_index = metadata["model-index"]
    assert model_index[0]["name"] == "tiny-dimml"
    test_result = next(r for r in model_index[0]["results"] if r["dataset"]["split"] == "test")
    values = {(m["type"], m.get("name")): m["value"] for m in test_result["metrics"]}
    assert values[("accuracy", "Accuracy (all modalities)")] == 0.9
    assert values[("f1", "Macro F1 (all modalities)")] == 0.89
    assert values[("accuracy", "Accuracy (image branch)")] == 0.6
    assert values[("accuracy", "Accuracy (inputs: audio+image)")] == 0.9

    card = ModelCard.load(readme)
    eval_results = card.data.eval_results
    assert len(eval_results) == 9  # 8 test metrics + validation accuracy
    assert {r.dataset_split for r in eval_results} == {"test", "validation"}
    assert "![training curves](training_curves.png)" in card.text
    assert f'repo_id = "{REPO_ID}"' in card.text and "trust_remote_code=True" in card.text
    assert "Detached and Interactive Multimodal Learning" in card.text
    assert "Robust Multimodal Learning via Representation Decoupling" in card.text
    card.validate()  # the server's /api/validate-yaml accepts it

    card.data.license = "not-a-licence"
    with pytest.raises(ValueError, match="license"):
        card.validate()


def test_broken_model_index_is_rejected_by_the_server(hub):
    # The client drops a malformed model-index when it parses a card, so post the raw text.
    content = "---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n    metrics: []\n---\n# x\n"
    response = get_session().post(f"{hub.endpoint}/api/validate-yaml", json={"content": content, "repoType": "model"})
    assert response.status_code == 400
    messages = [error["message"] for error in response.json()["errors"]]
    assert any("task" in m for m in messages) and any("metrics" in m for m in messages)

    response = get_session().post(f"{hub.endpoint}/api/validate-yaml", json={"content": "---\n: [\n---\n"})
    assert response.status_code == 400 and "Invalid YAML" in response.text


def test_card_without_plot_or_repo_id_still_renders(tmp_path):
    summary = {k: v for k, v in SUMMARY.items() if k not in ("plot", "repo_id")}
    card = build_model_card(summary, None)
    assert "![training curves]" not in card.text and "<user>/<model>" in card.text
    assert find_model_card_template().name == "dimml_model_card_template.md"

    (tmp_path / "training_summary.json").write_text(json.dumps(SUMMARY))  # plot file absent: not embedded
    assert "![training curves]" not in write_model_card(tmp_path).read_text()
    assert load_training_summary(tmp_path)["method"] == "dimml"
    assert {p.name for p in tmp_path.iterdir()} == {"training_summary.json", "README.md"}  # no temporary file left


def test_card_snippet_describes_raw_inputs_and_file_mode_follows_umask(tmp_path):
    recipe = {"processor": [{"name": "image", "value_range": [0, 1]}]}  # as train.py records the processor config
    summary = dict(SUMMARY, dataset=dict(SUMMARY["dataset"], recipe=recipe))
    (tmp_path / "training_summary.json").write_text(json.dumps(summary))
    umask = os.umask(0o027)
    try:
        readme = write_model_card(tmp_path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(readme.stat().st_mode) == 0o640  # not tempfile's 0600: the umask decides, as for any file
    text = readme.read_text()
    assert "# audio_sample = a (13, T) array of spectrogram frames, any length T; processed to (1, 13, 20)" in text
    assert "# image_sample = an image: PIL image, (H, W) / (H, W, C) array, values in [0, 1], or file path" in text
    assert 'inputs = processor(audio=audio_sample, image=image_sample, return_tensors="pt")' in text


def test_push_without_token_fails_clearly_and_leaves_folder_intact(hub, output_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
    before = folder_digest(output_dir)

    with pytest.raises(ValueError, match="hf auth login"):
        push_to_hub(output_dir, REPO_ID)

    assert folder_digest(output_dir) == before
    assert not hub.repo_exists(REPO_ID) and hub.requests == []


def test_push_with_rejected_token_fails_clearly(hub, output_dir):
    before = folder_digest(output_dir)
    with pytest.raises(PermissionError, match="token is invalid"):
        push_to_hub(output_dir, REPO_ID, token="hf_not_a_valid_token")
    assert folder_digest(output_dir) == before


def test_push_to_unreachable_endpoint_names_it_and_leaves_folder_intact(output_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    before = folder_digest(output_dir)

    with pytest.raises(ConnectionError, match=endpoint.replace(".", r"\.")):
        push_to_hub(output_dir, REPO_ID, token="hf_anything", endpoint=endpoint)

    assert folder_digest(output_dir) == before


def test_push_in_offline_mode_says_so(output_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = folder_digest(output_dir)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        push_to_hub(output_dir, REPO_ID, token="hf_anything")
    assert folder_digest(output_dir) == before


def test_server_requires_a_token_for_writes(hub):
    anonymous = HfApi(endpoint=hub.endpoint, token=False)
    with pytest.raises(HfHubHTTPError) as error:
        anonymous.create_repo(REPO_ID)
    assert error.value.response.status_code == 401
    assert error.value.response.json() == {"error": "Invalid username or password."}

    HfApi(endpoint=hub.endpoint, token=hub.token).create_repo(REPO_ID)
    with pytest.raises(HfHubHTTPError) as error:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO_ID)
    assert error.value.response.status_code == 401
    assert set(hub.files(REPO_ID)) == {".gitattributes"}


def test_lfs_upload_path(output_dir, monkeypatch, tmp_path):
    # The real Hub stores weights in LFS; with lfs_patterns the client takes the LFS batch route.
    with HubServer(lfs_patterns=("*.safetensors", "*.png")) as lfs_hub:
        lfs_hub.patch_client(monkeypatch)
        push_to_hub(output_dir, REPO_ID, token=lfs_hub.token)
        assert lfs_hub.lfs_paths(REPO_ID) == {"model.safetensors", "training_curves.png"}
        assert any(path.endswith(".git/info/lfs/objects/batch") for _, path in lfs_hub.requests)
        snapshot = Path(snapshot_download(REPO_ID, cache_dir=tmp_path / "cache"))
        for name in EXPECTED_UPLOAD:
            assert (snapshot / name).read_bytes() == (output_dir / name).read_bytes(), name


def test_subprocess_downloads_through_the_server(hub, output_dir, tmp_path):
    push_to_hub(output_dir, REPO_ID, token=hub.token)
    env = hub.subprocess_env(tmp_path / "hf_home", base={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert "HF_HUB_OFFLINE" not in env
    code = (
        "import sys; from huggingface_hub import hf_hub_download; "
        f"sys.stdout.write(open(hf_hub_download({REPO_ID!r}, 'config.json'), encoding='utf-8').read())"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((output_dir / "config.json").read_text())


def _interrupt_commits(monkeypatch, hub: HubServer, *, store: bool, stop: bool) -> None:
    """Make the server's commit endpoint drop the connection without an answer: after storing the commit or not,
    and stopping the whole server (nothing answers afterwards) or not."""
    import hub_server

    original = hub_server._HubRequestHandler._commit
    original = getattr(original, "original", original)  # not an earlier interruption

    def interrupted(handler, repo_type, repo_id, revision, body):
        if store:
            handler._send_json = lambda *args, **kwargs: None  # the commit is made, its answer never sent
            original(handler, repo_type, repo_id, revision, body)
        handler.close_connection = True
        if stop:
            # Stopping waits for the serving loop, which is not this handler's thread: no deadlock.
            thread = threading.Thread(target=hub.stop)
            thread.start()
            thread.join(timeout=10)
        handler.connection.shutdown(socket.SHUT_RDWR)

    interrupted.original = original
    monkeypatch.setattr(hub_server._HubRequestHandler, "_commit", interrupted)


@pytest.mark.parametrize("store", [True, False], ids=["stored", "not-stored"])
def test_push_interrupted_mid_commit_leaves_folder_identical_and_says_outcome_unknown(
    hub, output_dir, monkeypatch, store
):
    (output_dir / "README.md").write_text("# my hand-written notes\n")  # what a failed push must not overwrite
    before = folder_digest(output_dir)
    _interrupt_commits(monkeypatch, hub, store=store, stop=True)

    with pytest.raises(PushOutcomeUnknownError, match="unknown") as error:
        push_to_hub(output_dir, REPO_ID, token=hub.token)

    assert isinstance(error.value, ConnectionError)  # callers catching ConnectionError still catch it
    message = str(error.value)
    assert f"{REPO_ID}/commits/main" in message and "push again" in message and "nothing was" not in message
    assert folder_digest(output_dir) == before  # byte-identical, README.md included
    assert [c.title for c in hub.commits(REPO_ID)][-1] == ("Upload hf_dimml model" if store else "initial commit")


def test_push_whose_commit_answer_is_lost_asks_the_hub(hub, output_dir, monkeypatch):
    before = folder_digest(output_dir)
    _interrupt_commits(monkeypatch, hub, store=False, stop=False)
    with pytest.raises(ConnectionError, match="nothing was committed") as error:
        push_to_hub(output_dir, REPO_ID, token=hub.token)
    assert not isinstance(error.value, PushOutcomeUnknownError)
    assert folder_digest(output_dir) == before and len(hub.commits(REPO_ID)) == 1

    # The commit is made but its answer lost; the Hub still answers: the push is done, the card written after it.
    _interrupt_commits(monkeypatch, hub, store=True, stop=False)
    commit_url = push_to_hub(output_dir, REPO_ID, token=hub.token)
    assert commit_url.endswith(hub.commits(REPO_ID)[-1].oid)
    assert (output_dir / "README.md").read_bytes() == hub.files(REPO_ID)["README.md"]
    assert {k: v for k, v in folder_digest(output_dir).items() if k != "README.md"} == before


def test_push_script_exits_3_when_the_outcome_is_unknown(hub, output_dir, monkeypatch, capsys):
    from hf_dimml import hub as cli  # what training_scripts/push_to_hub.py runs
    monkeypatch.setenv("HF_TOKEN", hub.token)
    before = folder_digest(output_dir)
    _interrupt_commits(monkeypatch, hub, store=True, stop=True)

    assert cli.main(["--output_dir", str(output_dir), "--repo_id", REPO_ID]) == 3
    assert "may or may not have happened" in capsys.readouterr().err
    assert folder_digest(output_dir) == before
