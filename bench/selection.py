"""Choosing a default by its worst set: the leave-one-set-out check that every bench which picks
a setting prints (the brief: a default earns its place by its worst set, not its mean)."""
from __future__ import annotations


def leave_one_set_out(score: dict, choices) -> list:
    """For each set, the choice the other sets make and its score on the held-out set.

    ``score``: (set, choice) -> a number, higher is better (one per set and choice). The other
    sets choose by their worst score; equal worst scores go to the better second worst, and so
    on; a tie throughout goes to the first of ``choices``. Returns (held-out set, choice, score)."""
    sets = list(dict.fromkeys(s for s, _ in score))
    out = []
    for held in sets if len(sets) > 1 else []:
        choice = max(choices, key=lambda c: sorted(v for (s, cc), v in score.items() if cc == c and s != held))
        out.append((held, choice, score[(held, choice)]))
    return out
