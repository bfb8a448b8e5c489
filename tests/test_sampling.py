"""Sampling presets, validation, seeds and the presence penalty."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlx_backend.errors import RequestError
from mlx_backend.events import SamplingParams
from mlx_backend.generation.sampling import (
    NON_THINKING_PRESET,
    THINKING_PRESET,
    make_request_logits_processors,
    make_request_sampler,
    preset_for,
    resolve_sampling,
    seed_random,
    validate_seed,
)


def test_presets_follow_qwen3_guidance_and_never_sample_greedily():
    assert preset_for(True) == SamplingParams(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
    assert preset_for(False) == SamplingParams(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0)
    for preset in (THINKING_PRESET, NON_THINKING_PRESET):
        assert preset.temperature > 0
        assert preset.presence_penalty == 0.0


def test_request_settings_override_the_preset_and_zero_temperature_is_allowed():
    mine = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
    assert resolve_sampling(mine, thinking=True) is mine
    assert resolve_sampling(None, thinking=True) == THINKING_PRESET
    assert resolve_sampling(None, thinking=False) == NON_THINKING_PRESET


@pytest.mark.parametrize(
    ("params", "words"),
    [
        (SamplingParams(temperature=-0.1, top_p=0.9, top_k=20), "Temperature"),
        (SamplingParams(temperature=float("nan"), top_p=0.9, top_k=20), "Temperature"),
        (SamplingParams(temperature=0.7, top_p=0.0, top_k=20), "Top-p"),
        (SamplingParams(temperature=0.7, top_p=1.5, top_k=20), "Top-p"),
        (SamplingParams(temperature=0.7, top_p=0.9, top_k=-1), "Top-k"),
        (SamplingParams(temperature=0.7, top_p=0.9, top_k=2.5), "Top-k"),
        (SamplingParams(temperature=0.7, top_p=0.9, top_k=20, min_p=1.2), "Min-p"),
        (SamplingParams(temperature=0.7, top_p=0.9, top_k=20, presence_penalty=3.0), "Presence"),
    ],
)
def test_bad_settings_are_rejected_with_the_setting_named(params, words):
    with pytest.raises(RequestError, match=words):
        resolve_sampling(params, thinking=False)


def test_zero_temperature_is_argmax():
    sampler = make_request_sampler(SamplingParams(temperature=0.0, top_p=1.0, top_k=0), 8)
    logprobs = mx.log(mx.array([[0.1, 0.2, 0.5, 0.2, 0.0, 0.0, 0.0, 0.0]]) + 1e-9)
    assert sampler(logprobs).item() == 2


def test_top_k_restricts_sampling_to_the_k_most_likely_tokens():
    logprobs = mx.log(mx.array([[0.30, 0.25, 0.20, 0.15, 0.10]]))
    sampler = make_request_sampler(SamplingParams(temperature=1.0, top_p=1.0, top_k=2), 5)
    seed_random(0)
    drawn = {sampler(logprobs).item() for _ in range(200)}
    assert drawn == {0, 1}


def test_top_k_at_or_above_the_vocabulary_keeps_everything_instead_of_failing():
    logprobs = mx.log(mx.full((1, 4), 0.25))
    sampler = make_request_sampler(SamplingParams(temperature=1.0, top_p=1.0, top_k=20), 4)
    seed_random(1)
    drawn = {sampler(logprobs).item() for _ in range(200)}
    assert drawn == {0, 1, 2, 3}


def test_the_same_seed_reproduces_the_same_draws():
    logprobs = mx.log(mx.full((1, 50), 1 / 50))
    sampler = make_request_sampler(NON_THINKING_PRESET, 50)

    def draws(seed: int) -> list[int]:
        seed_random(seed)
        return [sampler(logprobs).item() for _ in range(30)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_negative_seed_is_a_request_error():
    with pytest.raises(RequestError, match="seed"):
        validate_seed(-1)


def test_presence_penalty_lowers_the_logits_of_tokens_already_seen():
    assert make_request_logits_processors(NON_THINKING_PRESET) == []
    params = SamplingParams(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5)
    (processor,) = make_request_logits_processors(params)
    logits = mx.zeros((1, 6))
    out = processor(mx.array([1, 4, 4]), logits)
    assert out.tolist() == [[0.0, -1.5, 0.0, 0.0, -1.5, 0.0]]
