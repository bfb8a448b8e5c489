"""The group's broadcasts: every rank ends up with rank 0's value (2 and 3 local ranks)."""

import pytest

from mlx_backend.distributed.group import GroupCancel, RankGroup, leader_sampler
from tests.support.launch import launch


def test_a_single_process_is_a_group_of_one():
    group = RankGroup(None)
    assert (group.rank, group.size, group.is_leader, group.is_distributed) == (0, 1, True, False)
    assert group.broadcast_bytes(b"abc") == b"abc"
    assert group.any_rank(True) and not group.any_rank(False)
    marker = object()
    sampler = lambda logprobs: marker  # noqa: E731
    assert leader_sampler(sampler, group) is sampler
    cancel = GroupCancel(group)
    assert not cancel.is_set()
    cancel.set()
    assert cancel.is_set()


@pytest.mark.parametrize("ranks", [2, 3])
def test_every_rank_gets_the_leaders_bytes_token_and_stop(ranks):
    result = launch("group_checks.py", ranks, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    reports = result.reports()
    assert sorted(reports) == list(range(ranks))
    for rank, report in reports.items():
        assert report["size"] == ranks
        assert report["received"] == "{\"question\": \"w\u00f6rld \u4f60\u597d\"}"
        assert report["empty"] == ""
        assert report["token"] == 7  # rank 0's sample, not the rank's own (rank + 7)
        assert report["stops"] == [True, False]  # one rank's cancel stops all; none, none


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from tests.support.checkpoints import write_random_checkpoint

    folder = tmp_path_factory.mktemp("replica") / "model"
    write_random_checkpoint(folder, tokenizer="qwen3")
    return folder


def test_ranks_answer_with_rank_zeros_samples_and_stop_together(small_model):
    """Each rank seeds its generator differently; the tokens still agree (rank 0 samples) and
    the last rank's cancel stops every rank at the same token."""
    result = launch("engine_replicas.py", 2, str(small_model), "5", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    reports = result.reports()
    assert sorted(reports) == [0, 1]
    assert reports[0]["reason"] == reports[1]["reason"] == "cancelled"
    assert reports[0]["tokens"] == reports[1]["tokens"] < 40
    assert reports[0]["text"] == reports[1]["text"] != ""


def test_in_a_group_prefill_chunks_and_cache_keeping_do_not_depend_on_the_rank(small_model):
    """Each prefill chunk ends in a collective cancel check, so ranks must cut the same chunks
    and reuse the same prefixes: no per-rank timing or per-rank byte budget may decide them."""
    from mlx_backend import Engine
    from mlx_backend.generation.prefill import PrefillPolicy

    class StandIn:  # a group's handle: nothing here communicates at construction
        def rank(self):
            return 0

        def size(self):
            return 2

    alone = Engine.load(small_model)
    grouped = Engine(alone.model, alone.tokenizer, group=RankGroup(StandIn()), cache_budget_bytes=1)
    policy = grouped.prefill_policy
    assert policy.min_chunk_tokens == policy.first_chunk_tokens == policy.max_chunk_tokens
    assert alone.prefill_policy == PrefillPolicy()  # a single process keeps timed chunks
    assert grouped.prompt_caches.byte_budget > 2**60
