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


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def holders(haves, pieces):
    """For each piece, the indexes into `haves` (wire bitfields) of those that hold it."""
    return [[k for k, have in enumerate(haves) if have[i // 8] & (0x80 >> (i % 8))] for i in range(pieces)]


def availability(held):
    """(lowest, mean) over pieces of how many hold each piece (`held` from `holders`)."""
    return min(len(h) for h in held), sum(len(h) for h in held) / len(held)


def sole_holders(held, classes):
    """How many pieces one peer alone holds, by that peer's class (`held` from `holders`,
    `classes` side by side with its `haves`): who holds what the swarm would lose."""
    out = {}
    for h in held:
        if len(h) == 1:
            out[classes[h[0]]] = out.get(classes[h[0]], 0) + 1
    return out


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
