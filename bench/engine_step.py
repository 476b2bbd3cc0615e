"""Engine step cost: accept an answer and produce the next question, in-process.

Prints microseconds per step for ``advance`` next to a floor measured in the same run — a JSON
round trip of the same conversation state (the least any persisted step must do) — and the
ratio. DESIGN.md's budget: well under a millisecond per step.

    python bench/engine_step.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bot.engine import Answer, Start, advance, new_state
from bot.flow import load_flow

ROOT = Path(__file__).resolve().parent.parent
ANSWERS = [("score", 4), ("why_low", "It is too slow when the project gets big")]


def one_conversation(flow) -> int:  # type: ignore[no-untyped-def]
    state = advance(flow, new_state(flow, {"first_name": "Ann"}), Start()).state
    for step, value in ANSWERS:
        state = advance(flow, state, Answer(step, value)).state
    assert state.status == "completed"
    return len(ANSWERS)


def floor(flow) -> int:  # type: ignore[no-untyped-def]
    state = advance(flow, new_state(flow), Start()).state
    text = state.to_json()
    for _ in ANSWERS:
        text = json.dumps(json.loads(text))
    return len(ANSWERS)


def timed(fn, flow, rounds: int) -> float:  # type: ignore[no-untyped-def]
    steps = 0
    start = time.perf_counter()
    for _ in range(rounds):
        steps += fn(flow)
    return (time.perf_counter() - start) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    flow = load_flow(ROOT / "flows" / "nps.yml", root=ROOT / "flows")
    timed(one_conversation, flow, 100)  # warm up
    engine = min(timed(one_conversation, flow, args.rounds) for _ in range(3))
    base = min(timed(floor, flow, args.rounds) for _ in range(3))
    print(
        f"engine step: {engine:.1f} µs/answer   floor (state JSON round trip): {base:.1f} µs   ratio {engine / base:.1f}x"
    )


if __name__ == "__main__":
    main()
