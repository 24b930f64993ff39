"""Statistics for the report, on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mario_apo import stats


def test_statistics_on_synthetic_data_with_known_answers():
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    rng = np.random.default_rng(1)
    sample = rng.normal(0.5, 0.1, size=400)
    point, low, high = stats.stratified_bootstrap_ci(sample, stats.mean, reps=2000)
    assert low < 0.5 < high
    assert high - low == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(400), rel=0.15)
    x, y = np.full((5, 2), 1.0), np.zeros((5, 2))
    assert stats.probability_of_improvement(x, y) == 1.0
    assert stats.probability_of_improvement(y, y) == 0.5
    # one task certain win, one certain loss: 0.5 overall
    assert stats.probability_of_improvement(np.array([[1.0, 0.0]] * 3), np.array([[0.0, 1.0]] * 3)) == 0.5
    mean_curve, band_low, band_high = stats.bootstrap_band(np.tile(np.linspace(0, 1, 5), (6, 1)))
    np.testing.assert_allclose(mean_curve, np.linspace(0, 1, 5))
    np.testing.assert_allclose(band_low, band_high)  # identical seeds: no spread


def test_paired_difference_keeps_the_pairs():
    # seeds differ a lot, the difference within each pair hardly: pairing sees a clear +0.1
    x, y = np.array([0.9, 0.2, 0.6, 0.4, 0.75]), np.array([0.8, 0.1, 0.5, 0.3, 0.65])
    point, low, high = stats.paired_difference_ci(x, y)
    assert point == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    point, low, high = stats.paired_difference_ci(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    assert point == 0.5 and low == 0.0 and high == 1.0  # the two possible pair means


def test_paired_t_interval_matches_a_hand_computation():
    x, y = np.array([0.9, 0.5, 0.7, 0.6]), np.array([0.7, 0.45, 0.4, 0.6])
    # differences 0.2, 0.05, 0.3, 0.0: mean 0.1375, sd 0.1376, t(0.975, 3) = 3.1824
    sd = np.sqrt(((0.2 - 0.1375) ** 2 + (0.05 - 0.1375) ** 2 + (0.3 - 0.1375) ** 2 + 0.1375**2) / 3)
    half = 3.182446305284263 * sd / 2
    point, low, high = stats.paired_t_ci(x, y)
    assert point == pytest.approx(0.1375)
    assert (low, high) == pytest.approx((0.1375 - half, 0.1375 + half))
    assert np.isnan(stats.paired_t_ci(x[:1], y[:1])[1])  # one pair: no interval


def test_seeds_to_resolve_counts_the_seeds_a_t_interval_needs_to_exclude_zero():
    differences = np.array([0.2, 0.05, 0.3, 0.0])  # mean 0.1375, sd 0.1376: the 4-seed interval includes 0
    # t(0.975, 5) / sqrt(6) = 2.5706 / 2.4495 = 1.049 > mean / sd = 0.9992; t(0.975, 6) / sqrt(7) = 0.925 < it
    assert stats.seeds_to_resolve(differences) == 7
    assert stats.seeds_to_resolve(-differences) == 7
    assert stats.seeds_to_resolve(np.array([0.1, -0.1])) is None  # no difference to resolve
    assert stats.seeds_to_resolve(np.array([0.1])) is None  # one seed: no spread
    assert stats.seeds_to_resolve(np.array([0.001, -0.0009]), most=1000) is None  # beyond any budget


def test_the_verdict_says_a_tiny_mean_is_not_zero_when_no_budget_would_resolve_it():
    from mario_apo.report import _seeds_to_resolve_note

    def comparison(differences):
        differences = np.asarray(differences)
        return {"mean": float(differences.mean()), "seeds_to_resolve": stats.seeds_to_resolve(differences)}

    assert _seeds_to_resolve_note(comparison([0.2, 0.05, 0.3, 0.0])) == "; seeds to resolve: 7"
    assert _seeds_to_resolve_note(comparison([0.1, -0.1])) == "; the mean difference is 0"
    # mean 0.00005 beside a spread of 0.1: more seeds than any budget, but not a zero difference
    assert _seeds_to_resolve_note(comparison([0.1001, -0.1])) == "; seeds to resolve: more than 100,000"
