"""Standard survey scores, computed the way the research literature defines them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ScaleSummary:
    """Responses to one rating-scale question."""

    kind: str
    low: int
    high: int
    count: int
    distribution: dict[int, int]
    mean: float | None
    score: float | None
    score_name: str | None
    groups: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "count": self.count,
            "distribution": {str(k): v for k, v in self.distribution.items()},
            "mean": self.mean,
            "score": self.score,
            "score_name": self.score_name,
            "groups": self.groups,
        }


def distribution(values: Iterable[int], low: int, high: int) -> dict[int, int]:
    counts = Counter(v for v in values if low <= v <= high)
    return {point: counts.get(point, 0) for point in range(low, high + 1)}


def nps(values: Iterable[int]) -> tuple[float | None, dict[str, int]]:
    """Net Promoter Score: % promoters (9–10) minus % detractors (0–6), from −100 to 100."""
    groups = {"promoters": 0, "passives": 0, "detractors": 0}
    for v in values:
        groups["promoters" if v >= 9 else "passives" if v >= 7 else "detractors"] += 1
    total = sum(groups.values())
    if not total:
        return None, groups
    return round(100 * (groups["promoters"] - groups["detractors"]) / total, 1), groups


def _top_box(
    values: Iterable[int], good_from: int, neutral: int, names: tuple[str, str, str]
) -> tuple[float | None, dict[str, int]]:
    """Share of answers at or above ``good_from``, with the good/neutral/bad counts."""
    good, middle, bad = names
    groups = {good: 0, middle: 0, bad: 0}
    for v in values:
        groups[good if v >= good_from else middle if v == neutral else bad] += 1
    total = sum(groups.values())
    return (round(100 * groups[good] / total, 1) if total else None), groups


def csat(values: Iterable[int]) -> tuple[float | None, dict[str, int]]:
    """CSAT: share of satisfied answers (4 or 5 on 1–5), in percent."""
    return _top_box(values, 4, 3, ("satisfied", "neutral", "dissatisfied"))


def ces(values: Iterable[int]) -> tuple[float | None, dict[str, int]]:
    """CES: share of answers 5–7 on the 1–7 "easy" scale, in percent (mean is reported too)."""
    return _top_box(values, 5, 4, ("easy", "neutral", "difficult"))


def summarise_scale(kind: str, values: list[int], low: int, high: int) -> ScaleSummary:
    dist = distribution(values, low, high)
    count = sum(dist.values())
    mean = round(sum(k * v for k, v in dist.items()) / count, 2) if count else None
    inside = [v for v in values if low <= v <= high]
    score: float | None = None
    name: str | None = None
    groups: dict[str, int] = {}
    if kind == "nps":
        score, groups = nps(inside)
        name = "NPS"
    elif kind == "csat":
        score, groups = csat(inside)
        name = "CSAT"  # the share of satisfied answers, shown as a percentage
    elif kind == "ces":
        score, groups = ces(inside)
        name = "CES easy"  # the share of easy answers, shown as a percentage
    return ScaleSummary(kind, low, high, count, dist, mean, score, name, groups)


def bar(count: int, biggest: int, width: int = 30) -> str:
    """A text bar for terminal charts."""
    if biggest <= 0 or count <= 0:
        return ""
    return "█" * max(1, round(width * count / biggest))
