"""Swarm profiles: who is in the swarm, with which caps, and when each one comes and goes.

Upload caps per class, bytes per second. Every peer may download at `DOWN_CAP`, the same for
all, so a peer's download rate shows what the swarm gives it back, not its own line.

| profile       | leechers                                                            | events |
|---------------|---------------------------------------------------------------------|--------|
| heterogeneous | 10 % free riders; of the rest 10 % fast, 60 % medium, 30 % slow     | seeder leaves once a full copy is out |
| uniform       | all medium                                                          | seeder leaves once a full copy is out |
| churn         | as heterogeneous; 20 % leave once for 5-15 s and come back on their data, 10 % join 5-30 s late | seeder leaves once a full copy is out |

The seeder uploads at the fast rate. One-way delays are drawn from 5-20 ms per peer (so round
trips between peers are 10-40 ms). Everything is drawn from `random.Random(seed)`.
"""
import random

KIB = 1024
CAPS = {"seed": 8192 * KIB, "fast": 8192 * KIB, "medium": 3072 * KIB, "slow": 1024 * KIB, "free": 16 * KIB}
DOWN_CAP = 16384 * KIB
PROFILES = ("heterogeneous", "uniform", "churn")


class Spec:
    """One peer of the plan: class, client, delay, and (churn) when it joins, leaves and returns."""

    def __init__(self, index, cls, client, delay_ms):
        self.index = index
        self.cls = cls
        self.client = client
        self.delay_ms = delay_ms
        self.join_at = 0.0
        self.leave = None  # (at, back_at) in seconds after the leechers start


def share(n, fraction):
    return int(n * fraction + 0.5)


def plan(profile, peers, client, seed):
    """The peers of a run: index 0 is the seeder (class "seed"), 1.. the leechers."""
    rng = random.Random(seed)
    n = peers - 1
    if profile == "uniform":
        classes = ["medium"] * n
    else:
        free = share(n, 0.10)
        contributors = n - free
        fast = max(1, share(contributors, 0.10))
        slow = share(contributors, 0.30)
        classes = ["free"] * free + ["fast"] * fast + ["slow"] * slow + ["medium"] * (contributors - fast - slow)
    rng.shuffle(classes)
    # In a mixed swarm each class is split between the clients alternately, so both get the same mix.
    clients, toggle = [], {}
    for cls in classes:
        if client == "mixed":
            toggle[cls] = not toggle.get(cls, False)
            clients.append("shoal" if toggle[cls] else "lt")
        else:
            clients.append(client)
    seeder = Spec(0, "seed", "lt" if client == "lt" else "shoal", rng.randint(5, 20))
    specs = [seeder] + [Spec(i + 1, classes[i], clients[i], rng.randint(5, 20)) for i in range(n)]
    if profile == "churn":
        leechers = specs[1:]
        rng.shuffle(leechers)
        late = share(n, 0.10)
        for s in leechers[:late]:
            s.join_at = rng.uniform(5, 30)
        for s in leechers[late:late + share(n, 0.20)]:
            at = rng.uniform(10, 40)
            s.leave = (at, at + rng.uniform(5, 15))
    return specs
