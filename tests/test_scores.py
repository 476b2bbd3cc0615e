"""Survey scores as the literature defines them."""

from __future__ import annotations

from analysis.scores import ces, csat, distribution, nps, summarise_scale


def test_nps_is_promoters_minus_detractors() -> None:
    score, groups = nps([10, 9, 8, 7, 6, 0, 10, 10])
    assert groups == {"promoters": 4, "passives": 2, "detractors": 2}
    assert score == 25.0
    assert nps([]) == (None, {"promoters": 0, "passives": 0, "detractors": 0})


def test_csat_and_ces_top_box() -> None:
    assert csat([5, 4, 3, 1]) == (50.0, {"satisfied": 2, "neutral": 1, "dissatisfied": 1})
    assert ces([7, 5, 4, 2, 1]) == (40.0, {"easy": 2, "neutral": 1, "difficult": 2})


def test_distribution_covers_every_point_and_drops_out_of_range() -> None:
    assert distribution([1, 1, 3, 9], 1, 4) == {1: 2, 2: 0, 3: 1, 4: 0}


def test_summary() -> None:
    summary = summarise_scale("nps", [10, 0], 0, 10)
    assert (summary.count, summary.mean, summary.score, summary.score_name) == (2, 5.0, 0.0, "NPS")
    assert summarise_scale("rating", [], 1, 5).mean is None
