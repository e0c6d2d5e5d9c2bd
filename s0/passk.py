"""Unbiased pass@k (Chen et al. 2021, Codex paper, Sec 2.1), for the sampled evaluations (Tables 9, 10).

Usage:
    pass_at_k(n=10, c=3, k=5)                                  # one problem: n samples, c correct
    mean_pass_at_k([(10, 3), (10, 0)], k=5)                    # mean over problems
    pass_at_k_from_records(records, ks=(1, 5, 10))             # scored records -> {"pass@1": ...}
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn without replacement from n is correct) = 1 - C(n-c, k) / C(n, k).

    Computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.
    """
    if not (0 <= c <= n) or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given (n, c) per problem."""
    vals = [pass_at_k(n, c, k) for n, c in counts]
    if not vals:
        raise ValueError("no problems")
    return sum(vals) / len(vals)


def pass_at_k_from_records(records: Iterable[dict], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Group scored records ({"id", "correct"}) by problem id, then mean pass@k for each k."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        counts[r["id"]][0] += 1
        counts[r["id"]][1] += bool(r["correct"])
    return {f"pass@{k}": mean_pass_at_k([tuple(v) for v in counts.values()], k) for k in ks}
