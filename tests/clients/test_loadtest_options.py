"""The load test's typed options and worker configuration, without a server."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from attnserve.clients.loadtest import GeneratorConfig, LoadPhase, Measure
from attnserve.clients.loadtest_options import LoadTestOptions
from attnserve.clients.settings import ClientSettings
from attnserve.errors import UserInputError


def test_options_know_their_mode_and_sorted_levels() -> None:
    assert LoadTestOptions(concurrency=[4, 1, 2]).levels == [1.0, 2.0, 4.0]
    assert LoadTestOptions(concurrency=[4]).mode == "concurrency"
    rates = LoadTestOptions(rates=[200, 50.5], poisson=True)
    assert rates.mode == "rate" and rates.levels == [50.5, 200.0]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of concurrency"),
        ({"concurrency": [1], "rates": [10.0]}, "exactly one of concurrency"),
        ({"concurrency": [0, 2]}, "levels must be positive"),
        ({"concurrency": []}, "levels must be positive"),
        ({"concurrency": [1], "min_windows": 4, "max_windows": 3}, "min_windows <= max_windows"),
        ({"rates": [5.0], "workers": 0}, "workers >= 1"),
        ({"rates": [5.0], "window_s": 0}, "window_s > 0"),
    ],
)
def test_bad_combinations_are_the_callers_mistake(fields: dict[str, object], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        LoadTestOptions(**fields)  # type: ignore[arg-type]


def test_a_misspelt_or_mistyped_option_is_refused() -> None:
    with pytest.raises(ValidationError, match="concurency"):
        LoadTestOptions(concurency=[1])  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="concurrency"):
        LoadTestOptions(concurrency=["many"])  # type: ignore[list-item]


def test_a_worker_receives_the_secrets_of_its_settings() -> None:
    """Regression: workers got the settings as JSON, where pydantic masks secrets (`**********`), so a spawned
    worker sent a wrong API key / admin token. The typed config travels pickled, as `spawn` passes it."""
    settings = ClientSettings(url="127.0.0.1:1", protocol="grpc", api_key="k3y", admin_token="t0ken")
    config = pickle.loads(pickle.dumps(GeneratorConfig(settings, "m", batch_size=2, seed=3)))
    assert config.settings.api_key is not None and config.settings.api_key.get_secret_value() == "k3y"
    assert config.settings.admin_token is not None and config.settings.admin_token.get_secret_value() == "t0ken"
    assert (config.model, config.batch_size, config.seed) == ("m", 2, 3)
    plan = Measure(LoadPhase("rate", 12.5, True), start_at=1.0, settle_s=0.1, window_s=0.5)
    assert pickle.loads(pickle.dumps(plan)) == plan
