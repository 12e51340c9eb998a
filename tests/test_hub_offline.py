"""A hub id on a machine without internet: an immediate error that says how to get the weights
(no half minute of retries ending in "does not appear to have a file named config.json")."""

from __future__ import annotations

import socket
import time

import pytest

import gen4d.metrics.weights as weights
from gen4d.metrics.weights import MissingWeightsError, hub_offline_reason, resolve_hub_model

HUB_ID = "nobody-gen4d/no-such-model"


@pytest.fixture
def no_network(monkeypatch):
    """The network is unreachable: every TCP connection fails as it does without a route."""
    calls = []

    def refuse(address, *args, **kwargs):
        calls.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(weights, "_reachable_hosts", set())
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-gen4d-hf-home")  # an empty cache
    return calls


def test_offline_is_detected_and_explained(no_network):
    assert "huggingface.co:443 is not reachable" in hub_offline_reason()
    started = time.perf_counter()
    with pytest.raises(MissingWeightsError) as info:
        resolve_hub_model(HUB_ID, "model")
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert f"model '{HUB_ID}': not a local folder" in message
    assert f"huggingface-cli download {HUB_ID} --local-dir no-such-model" in message
    assert "pass its path" in message


def test_hf_hub_offline_needs_no_network_probe(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline_reason() == "HF_HUB_OFFLINE is set"
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE is set"):
        resolve_hub_model(HUB_ID, "model")
    assert no_network == []  # no connection attempted


def test_local_folders_and_online_hub_pass_through(tmp_path, no_network, monkeypatch):
    assert resolve_hub_model(str(tmp_path), "model") == str(tmp_path)
    assert no_network == []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: socket.socket())
    assert resolve_hub_model(HUB_ID, "model") == HUB_ID


def test_model_loaders_fail_fast_offline(no_network):
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401 - imported before timing
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection  # noqa: F401

    from gen4d.diffusion.zero123 import Zero123Guidance
    from gen4d.diffusion.zero123pp import Zero123Plus

    for load in (Zero123Guidance.from_pretrained, Zero123Plus.from_pretrained):
        started = time.perf_counter()
        with pytest.raises(MissingWeightsError, match=f"huggingface-cli download {HUB_ID}"):
            load(HUB_ID)
        assert time.perf_counter() - started < 5


def test_sample_vdm_with_a_hub_id_offline_is_one_line(no_network, tmp_path, capsys):
    pytest.importorskip("diffusers")
    from gen4d.cli import main

    assert main(["sample-vdm", HUB_ID, "--out", str(tmp_path / "out"), "--prompt", "a fox", "--variant", "text"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"huggingface-cli download {HUB_ID}" in err[0], err
