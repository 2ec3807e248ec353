"""Each `migrator run` row against its targets: the hot loop's ceiling, the peers on the same
data, the destination disk, restic's compression and the memory limit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from datasets import KINDS
from peer_runs import Peers
from timed_runs import Run

from migrator.sizes import MiB

# End-to-end share of the ceiling: records pay for key extraction, objects should not.
CEILING_TARGETS = {"records": 0.60, "objects": 0.70}
PRODUCT_TARGETS = {"records": 0.60, "objects": 0.85}
# migrator's MB/s over the peer's (or the disk's) on the same data, at least.
RECORDS_PEER_TARGETS = {"restic": 1.5, "rclone crypt": 0.8}
OBJECTS_PEER_TARGETS = {"rclone crypt": 1.5, "disk": 0.85}
RSS_LIMIT_MIB = 512.0
CHECKS = ("ceiling", "restic", "rclone crypt", "disk", "compression", "rss")

TARGETS_NOTE = (
    f"targets: records kinds × restic ≥{RECORDS_PEER_TARGETS['restic']:.2f},"
    f" × rclone crypt ≥{RECORDS_PEER_TARGETS['rclone crypt']:.2f}, compression no worse than"
    f" restic's (its repository size against dest/); objects × rclone crypt"
    f" ≥{OBJECTS_PEER_TARGETS['rclone crypt']:.2f}, × disk ≥{OBJECTS_PEER_TARGETS['disk']:.2f};"
    f" × ceiling records ≥{CEILING_TARGETS['records']:.2f} (product"
    f" {PRODUCT_TARGETS['records']:.2f}), objects ≥{CEILING_TARGETS['objects']:.2f} (product"
    f" {PRODUCT_TARGETS['objects']:.2f}); peak RSS ≤{RSS_LIMIT_MIB:.0f} MiB"
)


def family(kind: str) -> str:
    return "records" if KINDS[kind].is_records else "objects"


@dataclass
class Check:
    value: float | None  # None: not measured (a peer missing or failed)
    target: float
    at_most: bool = False  # the value must not exceed the target (memory)

    @property
    def verdict(self) -> str:
        if self.value is None:
            return ""
        ok = self.value <= self.target if self.at_most else self.value >= self.target
        return "PASS" if ok else "MISS"


@dataclass
class Scorecard:
    kind: str
    run: Run
    checks: dict[str, Check] = field(default_factory=dict)
    restic_compression: float | None = None

    @property
    def misses(self) -> list[str]:
        return [name for name, check in self.checks.items() if check.verdict == "MISS"]


def score(
    kind: str,
    run: Run,
    ceiling_mb_s: float | None,
    disk_mb_s: float | None,
    peer_result: Peers | None,
) -> Scorecard:
    """The checks that apply to the kind; a check without its measurement has value None."""
    card = Scorecard(kind, run)
    if not run.ok:
        return card
    fam = family(kind)
    card.checks["ceiling"] = Check(
        run.mb_s / ceiling_mb_s if ceiling_mb_s else None, CEILING_TARGETS[fam]
    )
    targets = RECORDS_PEER_TARGETS if fam == "records" else OBJECTS_PEER_TARGETS
    for tool, target in targets.items():
        if tool == "disk":
            card.checks[tool] = Check(run.mb_s / disk_mb_s if disk_mb_s else None, target)
            continue
        peer = peer_result.find(tool, kind) if peer_result is not None else None
        ratio = run.mb_s / peer.mb_s if peer is not None and peer.ok and peer.mb_s else None
        card.checks[tool] = Check(ratio, target)
    if fam == "records":
        restic = peer_result.find("restic", kind) if peer_result is not None else None
        if restic is not None and restic.ok and restic.compression:
            card.restic_compression = restic.compression
        card.checks["compression"] = Check(
            run.compression / card.restic_compression if card.restic_compression else None, 1.0
        )
    card.checks["rss"] = Check(run.peak_rss_bytes / MiB, RSS_LIMIT_MIB, at_most=True)
    return card


def run_record(card: Scorecard) -> dict[str, object]:
    """The run's JSON: its figures, its ratio to the ceiling as before, and every check."""
    run, fam = card.run, family(card.kind)
    ceiling = card.checks.get("ceiling")
    ratio = ceiling.value if ceiling is not None and ceiling.value is not None else 0.0
    return {
        **asdict(run),
        "mb_s": run.mb_s if run.ok else 0.0,
        "ratio_to_ceiling": ratio,
        "target": CEILING_TARGETS[fam],
        "product_target": PRODUCT_TARGETS[fam],
        "verdict": ceiling.verdict if ceiling is not None else "FAILED",
        "compression": run.compression,
        "restic_compression": card.restic_compression,
        "peak_rss_mib": run.peak_rss_bytes / MiB,
        "checks": {
            name: {**asdict(check), "verdict": check.verdict} for name, check in card.checks.items()
        },
    }
