"""The figures of a run, as plain functions of what the runner recorded."""


def ranks(xs):
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(xs, ys):
    """Spearman's rank correlation (Pearson's over average ranks); None if undefined."""
    if len(xs) < 3:
        return None
    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / (vx * vy) ** 0.5


def sole_holders(haves, classes, pieces):
    """How many pieces are held by one peer only, by that peer's class (`haves` and `classes`
    side by side): who holds what the swarm would lose."""
    holders = [[] for _ in range(pieces)]
    for have, cls in zip(haves, classes):
        for i in range(pieces):
            if have[i // 8] & (0x80 >> (i % 8)):
                holders[i].append(cls)
    out = {}
    for h in holders:
        if len(h) == 1:
            out[h[0]] = out.get(h[0], 0) + 1
    return out


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def availability(haves, pieces):
    """(lowest, mean) over pieces of how many of `haves` (wire bitfields) hold each piece."""
    counts = [0] * pieces
    for have in haves:
        for i in range(pieces):
            if have[i // 8] & (0x80 >> (i % 8)):
                counts[i] += 1
    return min(counts), sum(counts) / pieces


def summary(run):
    """The headline figures of a finished run (see the script's doc for each)."""
    leechers = [p for p in run["peers_detail"] if p["class"] != "seed"]
    done = [p for p in leechers if p["completion_s"] is not None]
    rate = [p["download_mib_s"] for p in done]
    caps = [p["upload_cap_kib"] for p in done]
    paid = [p for p in done if p["class"] != "free"]
    free = [p["completion_s"] for p in done if p["class"] == "free"]
    contributors = [p["completion_s"] for p in done if p["class"] != "free"]
    after = [m for t, m, _ in run["availability"] if run["seed_left_s"] is not None and t >= run["seed_left_s"]]
    by_client = {}
    for c in sorted({p["client"] for p in done}):
        by_client[c] = median([p["completion_s"] for p in done if p["client"] == c and p["class"] != "free"])
    return {
        "swarm_completion_s": max(p["completion_s"] for p in done) if len(done) == len(leechers) else None,
        "completion_s": [p["completion_s"] for p in leechers],
        "tft_correlation": spearman(caps, rate),
        # The same among contributors only: free riders alone can make the one above positive.
        "tft_correlation_contributors": spearman([p["upload_cap_kib"] for p in paid], [p["download_mib_s"] for p in paid]),
        "free_rider_slowdown": median(free) / median(contributors) if free and contributors else None,
        "min_availability_after_seed_left": min(after) if after else None,
        "median_contributor_completion_s": median(contributors),
        "median_contributor_completion_s_by_client": by_client,
    }
