"""The training requests an agent behind the embedded request gate would decide: the first
600 prompts of the harmful agent pool and the first 1,500 of the benign one (training pools
only, core.splits), kept where the gate flags them (rewards/request_gate.py).

    PYTHONPATH=. python docs/results/reader-gated/flagged_prompts.py runs/splits runs/splits/agent_flagged.json
"""

import json
import sys
from pathlib import Path

from core.agent_file import EMBEDDED_GATE
from rewards.request_gate import load_request_gate

POOLS = {"agent_harmful.json": 600, "agent_benign.json": 1500}


def main(splits: Path, out: Path) -> None:
    gate = load_request_gate(EMBEDDED_GATE, None)
    kept = []
    for name, n in POOLS.items():
        prompts = [row["instruction"] for row in json.loads((splits / name).read_text())[:n]]
        flags = gate(prompts)
        kept += [{"instruction": p, "pool": name} for p, f in zip(prompts, flags) if f]
        print(f"{name}: {int(flags.sum())} of {len(prompts)} flagged")
    out.write_text(json.dumps(kept, indent=0))
    print(f"wrote {len(kept)} requests to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
