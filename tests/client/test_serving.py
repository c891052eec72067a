"""Settings of the engine plugins (``guidance_client.serving``): from the environment only."""

from __future__ import annotations

import pytest

from guidance_client.serving import ServingConfig


def test_defaults_with_an_empty_environment() -> None:
    config = ServingConfig.load({})
    assert config == ServingConfig()
    assert config.url == "http://127.0.0.1:8000" and config.timeout == 30.0
    assert config.spec({"regex": "a"}) == {"regex": "a"}


def test_the_environment_sets_every_field() -> None:
    config = ServingConfig.load(
        {
            "GUIDANCE_CLIENT_URL": "http://10.0.0.5:9000",
            "GUIDANCE_CLIENT_API_KEY": "k",
            "GUIDANCE_CLIENT_WORKER_ID": "w1",
            "GUIDANCE_CLIENT_TIMEOUT": "2.5",
            "GUIDANCE_CLIENT_TOKENIZER": "llama",
            "GUIDANCE_SERVER_API_KEYS": "not ours",
        }
    )
    assert config == ServingConfig("http://10.0.0.5:9000", "k", "w1", 2.5, "llama")
    # The default tokenizer fills specs that name none, and only those.
    assert config.spec({"regex": "a"}) == {"regex": "a", "tokenizer": "llama"}
    assert config.spec({"regex": "a", "tokenizer": "other"})["tokenizer"] == "other"


def test_the_client_carries_the_settings() -> None:
    config = ServingConfig.load({"GUIDANCE_CLIENT_API_KEY": "k", "GUIDANCE_CLIENT_WORKER_ID": "w1"})
    with config.client() as client:
        assert client.http.headers["authorization"] == "Bearer k"
        assert client.http.headers["x-worker-id"] == "w1"


def test_without_a_worker_id_each_client_sends_one_of_its_own() -> None:
    # a balancer hashing on X-Worker-Id keeps each client's sessions on one replica
    with ServingConfig().client() as a, ServingConfig().client() as b:
        assert a.http.headers["x-worker-id"] == a.worker_id and len(a.worker_id) >= 16
        assert b.http.headers["x-worker-id"] == b.worker_id != a.worker_id
    with ServingConfig(worker_id="").client() as none:
        assert "x-worker-id" not in none.http.headers


def test_a_bad_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="number of seconds"):
        ServingConfig.load({"GUIDANCE_CLIENT_TIMEOUT": "soon"})
