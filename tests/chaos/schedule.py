"""The seeded fault schedule: pure, so one seed always names the same faults.

The schedule fixes which faults come, in which order, and their parameters (gaps,
downtimes, how lossy the link gets, how a state file is torn). Timing on a loaded
machine is not reproducible; the schedule is, so a seed that failed is re-run with
the same faults (`python -m tests.chaos --variant V --faults N --seed S`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

KILL_INGRESS = "kill_ingress"  # kill -9, restarted after `down` seconds
KILL_EGRESS = "kill_egress"
TERM_INGRESS = "term_ingress"  # SIGTERM: must exit 0 within STOP_LIMIT, then restarted
TERM_EGRESS = "term_egress"
KILL_BROKER_HIGH = "kill_broker_high"  # kill -9 of the source-side Kafka broker
KILL_BROKER_LOW = "kill_broker_low"  # and of the destination-side one
LOSSY_LINK = "lossy_link"  # random/bursty loss and reordering for `duration` seconds
TEAR_STATE = "tear_state"  # kill -9 a daemon, truncate one of its state files, restart
DELETE_STATE = "delete_state"  # kill -9 a daemon, delete one of its state files, restart
CLOCK_BACK = "clock_back"  # restart the ingress with its wall clock one more hour behind
WIPE_EGRESS_STATE = "wipe_egress_state"  # kill -9 the egress, rm -rf its state_dir, restart

COMMON_KINDS = (KILL_INGRESS, KILL_EGRESS, TERM_INGRESS, TERM_EGRESS, LOSSY_LINK, TEAR_STATE,
                DELETE_STATE, CLOCK_BACK, WIPE_EGRESS_STATE)
KINDS = {
    "udp": COMMON_KINDS,
    "kafka": COMMON_KINDS + (KILL_BROKER_HIGH, KILL_BROKER_LOW),
}
# Faults that stop the ingress (the UDP load pauses around them: a UDP source has no
# replay, so what is sent while no ingress listens never entered the product).
STOPS_INGRESS = (KILL_INGRESS, TERM_INGRESS, CLOCK_BACK)


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    gap: float  # seconds of plain load before the fault
    down: float  # seconds the killed thing stays down before it is started again
    side: str = ""  # tear_state / delete_state: "ingress" or "egress"
    pick: float = 0.0  # which state file (fraction into the sorted list)
    tear_at: float = 0.0  # truncate the file to this fraction of its length
    link: dict = field(default_factory=dict)  # lossy_link: LossModel settings + duration

    def describe(self) -> str:
        what = self.kind
        if self.side:
            what += f" ({self.side})"
        if self.link:
            what += " (" + ", ".join(f"{k}={v}" for k, v in self.link.items()) + ")"
        return f"#{self.index} {what}"

    def as_dict(self) -> dict:
        return asdict(self)


def make_schedule(variant: str, faults: int, seed: int) -> list[Fault]:
    """`faults` faults for `variant`. The first ones are every kind once, in a seeded
    order, so even a short run covers each kind; the rest are drawn at random."""
    if variant not in KINDS:
        raise ValueError(f"variant must be one of {', '.join(KINDS)}, got {variant!r}")
    if faults < 0:
        raise ValueError(f"faults must be >= 0, got {faults}")
    rng = random.Random(f"ddc-chaos/{variant}/{seed}")
    kinds = list(KINDS[variant])
    rng.shuffle(kinds)
    order = kinds[:faults] + [rng.choice(KINDS[variant]) for _ in range(faults - len(kinds))]
    out = []
    for i, kind in enumerate(order, 1):
        link = {}
        if kind == LOSSY_LINK:
            link = {"loss": round(rng.choice([0.01, 0.05, 0.1, 0.3]), 3),
                    "burst_start": rng.choice([0.0, 0.002, 0.01]),
                    "burst_length": rng.choice([5, 30, 200]),
                    "reorder": rng.choice([0.0, 0.05, 0.2]),
                    "duration": round(rng.uniform(1.0, 6.0), 1)}
        out.append(Fault(
            index=i, kind=kind, gap=round(rng.uniform(0.5, 3.0), 2),
            down=round(rng.uniform(0.1, 2.5), 2),
            side=rng.choice(["ingress", "egress"]) if kind in (TEAR_STATE, DELETE_STATE) else "",
            pick=rng.random(), tear_at=rng.choice([0.0, rng.random()]), link=link))
    return out
