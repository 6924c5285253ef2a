"""Feedback plans, t_post strategies (eq. 4–5), cache locations and the paper's block counts."""

import pytest
import torch

from ilf import (
    CacheConfig, ILFConfig, ILFError, LoopRangeError, ScheduleError, feedback_steps, predicted_block_forwards,
)
from ilf.schedule import loop_ratio, post_timestep


@pytest.mark.parametrize(
    "plan, n, expected",
    [
        ("all", 4, {0, 1, 2, 3}),
        ("none", 4, set()),
        ("outer:2", 10, {0, 1, 8, 9}),
        ("skip-inner:6", 10, {0, 1, 8, 9}),  # the paper's 1.8x setting, two ways
        ("skip-inner:8", 12, {0, 1, 10, 11}),  # the paper's 1.5x setting
        ("skip-inner:5", 10, {0, 1, 2, 8, 9}),  # odd remainder: the extra feedback step goes first
        ("first:3", 10, {0, 1, 2}),
        ("last:3", 10, {7, 8, 9}),
        ("skip-first:8", 10, {8, 9}),
        ("skip-last:8", 10, {0, 1}),
        ("skip-outer:4", 10, {4, 5}),
        ("alternating", 6, {0, 2, 4}),
        ((0, 1, -2, -1), 10, {0, 1, 8, 9}),
        ("0, 3,-1", 5, {0, 3, 4}),
        ("outer:9", 10, set(range(10))),
    ],
)
def test_feedback_plans(plan, n, expected):
    assert feedback_steps(plan, n) == frozenset(expected)


@pytest.mark.parametrize("plan", ["outer", "sometimes", "skip-middle:3", "1,,2", (0, "a")])
def test_bad_plans_name_the_valid_forms(plan):
    with pytest.raises(ScheduleError):
        ILFConfig(feedback_steps=plan)


def test_explicit_step_outside_the_schedule_is_refused():
    with pytest.raises(ScheduleError, match="does not exist in a 10-step schedule"):
        feedback_steps((0, 10), 10)


def test_post_timestep_strategies_by_hand():
    k = loop_ratio(12, 28, "m/n")  # paper loop 8..19 of 28 blocks
    assert k == pytest.approx(12 / 28)
    assert loop_ratio(12, 28, "n/m") == pytest.approx(28 / 12)
    t, gap = torch.tensor(900.0), 100.0
    assert post_timestep("none", t, gap, k=k).item() == 900.0
    assert post_timestep("uniform", t, gap, k=k).item() == pytest.approx(850.0)
    assert post_timestep("rescale", t, gap, k=k).item() == pytest.approx(900 - 100 * 12 / 28)
    assert post_timestep("rescale", t, gap, k=28 / 12).item() == pytest.approx(900 - 100 * 28 / 12, rel=1e-6)
    # eq. 5: eq. 4 on the first step, then t - max(i k t / T, 10)
    assert post_timestep("anneal", t, gap, k=k, first_step=True).item() == pytest.approx(900 - 100 * 12 / 28)
    assert post_timestep("anneal", 500.0, gap, k=k).item() == pytest.approx(500 - 100 * (12 / 28) * 0.5)
    assert post_timestep("anneal", 50.0, 50.0, k=k).item() == pytest.approx(40.0)  # the floor of 10
    assert post_timestep("anneal", 50.0, 50.0, k=k, floor=0.0).item() == pytest.approx(50 - 50 * (12 / 28) * 0.05)
    assert post_timestep("rescale", 40.0, 100.0, k=2.0).item() == 0.0  # never below the data


def test_post_timestep_is_elementwise_for_training_batches():
    t = torch.tensor([999.0, 500.0, 20.0])
    got = post_timestep("anneal", t, 100.0, k=0.5)
    expected = torch.tensor([999 - max(50 * 0.999, 10), 500 - 25.0, 20 - 10.0])
    torch.testing.assert_close(got, expected)


# Block forwards of Tables 1–4 and Table 6 of the paper (28-block PixArt).
@pytest.mark.parametrize(
    "steps, kwargs, expected",
    [
        (20, {}, 560),
        (12, {}, 336),
        (10, dict(loop=(8, 19), feedback_plan="outer:2"), 332),
        (12, dict(loop=(8, 19), feedback_plan="skip-inner:8"), 388),
        (12, dict(loop=(0, 5), feedback_plan="all"), 420),
        (20, dict(cached_blocks=18, refresh_every=3), 326),
        (20, dict(cached_blocks=18, refresh_every=2), 380),
    ],
)
def test_predicted_block_forwards_match_the_paper(steps, kwargs, expected):
    assert predicted_block_forwards(28, steps, **kwargs) == expected


@pytest.mark.parametrize(
    "location, c, expected",
    [
        ("inner", 18, list(range(5, 23))),
        ("first", 4, [0, 1, 2, 3]),
        ("last", 4, [24, 25, 26, 27]),
        ("outer", 4, [0, 1, 26, 27]),
        ("outer", 5, [0, 1, 2, 26, 27]),
        ("alternating", 14, list(range(0, 28, 2))),
    ],
)
def test_cache_locations(location, c, expected):
    assert list(CacheConfig(location, c, 2).block_indices(28)) == expected


def test_alternating_spreads_any_count_evenly():
    idx = CacheConfig("alternating", 18, 2).block_indices(28)
    assert len(idx) == 18 and len(set(idx)) == 18 and idx[0] == 0 and idx[-1] <= 27
    gaps = [b - a for a, b in zip(idx, idx[1:])]
    assert set(gaps) <= {1, 2}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(loop=(5, 3)), LoopRangeError, "not a range"),
        (dict(loop=(-1, 3)), LoopRangeError, "not a range"),
        (dict(loop=(1, 2, 3)), LoopRangeError, "two block indices"),
        (dict(t_post="later"), ScheduleError, "t_post='later' is unknown"),
        (dict(t_post_ratio="1/2"), ScheduleError, "unknown"),
        (dict(init="random"), ILFError, "init='random' is unknown"),
        (dict(feed_text="yes"), ILFError, "feed_text must be True or False"),
    ],
)
def test_config_validation_names_the_problem(kwargs, error, match):
    with pytest.raises(error, match=match):
        ILFConfig(**kwargs)


def test_loop_beyond_the_model_is_refused_with_the_valid_range():
    with pytest.raises(LoopRangeError, match=r"0 <= b <= e <= 27"):
        ILFConfig(loop=(8, 28)).check_model(28)
    with pytest.raises(LoopRangeError, match="cannot cache 30 blocks"):
        CacheConfig("inner", 30, 2).block_indices(28)


def test_config_round_trips_through_json_dict():
    cfg = ILFConfig(loop=(3, 7), feedback_steps=(0, -1), t_post="anneal", t_post_ratio="n/m")
    assert ILFConfig.from_dict(cfg.to_dict()) == cfg


def test_the_clock_refuses_a_batch_of_mixed_timesteps_and_takes_a_shared_one():
    from diffusers import DDIMScheduler

    from ilf.runtime.clock import SchedulerClock, scalar_timestep

    sched = DDIMScheduler()
    sched.set_timesteps(10)
    clock = SchedulerClock(lambda: sched)
    t = sched.timesteps[3]
    assert scalar_timestep(torch.full((4,), float(t))) == float(t)
    assert clock.locate(torch.full((4,), float(t))).index == 3
    with pytest.raises(ScheduleError, match="mixes timesteps.*ilf_t_post"):
        clock.locate(torch.tensor([float(t), float(sched.timesteps[4])]))
    with pytest.raises(ScheduleError, match="empty timestep"):
        scalar_timestep(torch.tensor([]))
