"""What state costs, against the least any ledger could cost: rounds of three syncs of the same rows, run
alternately (the machine's speed drifts over minutes): with no state writes (bench/no_state_writes.py),
with only the acknowledged ids appended to a one-column table (bench/bare_id_ledger.py), and with the real
state writes (ledger with sync name, event time, acked_at and run id; rejects; watermark).

    python bench/ledger_floor.py                  # 1M rows, 4 rounds (about 3 minutes)
    python bench/ledger_floor.py --rows 100000 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from run import NO_STATE_WRITES, alternating, generate

KINDS = {"no state writes": NO_STATE_WRITES, "bare-id ledger": "bare_id_ledger.py", "state writes": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tiktok-ledger-floor-") as tmp:
        work = Path(tmp)
        warehouse = work / "events.duckdb"
        generate(warehouse, args.rows)
        rounds = alternating(work, warehouse, args.rows, args.rounds, KINDS)
    for measured in rounds:
        print(" | ".join(f"{kind}: {r.seconds} s, {r.connector_cpu} CPU s" for kind, r in measured.items()))
    print(f"\nadded to a {args.rows:,}-row sync with no state writes, median of {len(rounds)} rounds:")
    for kind in ("bare-id ledger", "state writes"):
        wall = sorted(r[kind].seconds / r["no state writes"].seconds - 1 for r in rounds)
        cpu = sorted((r[kind].connector_cpu or 0) - (r["no state writes"].connector_cpu or 0) for r in rounds)
        print(f"- {kind}: {statistics.median(wall):.0%} of the wall time ({', '.join(f'{w:.0%}' for w in wall)}), "
              f"{statistics.median(cpu):.2f} connector CPU s")


if __name__ == "__main__":
    main()
