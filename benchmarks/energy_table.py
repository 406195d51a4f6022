"""The README's energy table from a ``tinyodl demo --json`` file (issue 15).

    python benchmarks/energy_table.py [benchmarks/results/demo.json]

One Markdown row per method: accuracy and measured peak training memory (the demo's memory
table) beside the energy columns ``tinyodl demo`` adds (:mod:`tinyodl.energy`), then the
row "upload the new data and retrain in the cloud" over BLE, LoRa and Wi-Fi.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(doc: dict) -> str:
    head = (
        "| method | accuracy | peak training memory (measured) | MACs / step (int8 + fp32) "
        "| SRAM / flash bytes per step | energy / step | steps | energy / adaptation "
        "| update bytes | radio to send the update (BLE) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in doc["rows"]:
        if r.get("accuracy") is None or "energy" not in r:
            continue
        e = r["energy"]
        lines.append(
            f"| `{r['method']}` | {100 * r['accuracy']:.2f}% "
            f"| {r['peak_train_bytes_measured'] / 1024:.1f} KB "
            f"| {e['macs_int8']:,} + {e['macs_fp32']:,} "
            f"| {e['sram_bytes']:,} / {e['flash_bytes']:,} "
            f"| {1e6 * r['energy_step_joules']:.2f} uJ | {r['adaptation_steps']} "
            f"| **{1e3 * r['energy_adaptation_joules']:.2f} mJ** | {r['update_bytes']:,} "
            f"| {1e3 * r['update_radio_joules']['ble']:.2f} mJ |"
        )
    c = doc["cloud_row"]
    j = c["radio_joules"]
    lines.append(
        f"| `{c['method']}` | {100 * c['accuracy']:.2f}% ({c['accuracy_source']}) | - | - "
        f"| {c['radio_bytes_up']:,} B up / {c['radio_bytes_down']:,} B down (radio) | - | - "
        f"| **{1e3 * j['ble']:.2f} mJ** (BLE); {1e3 * j['wifi']:.2f} mJ (Wi-Fi); "
        f"{j['lora']:.1f} J (LoRa) | - | - |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/demo.json")
    print(table(json.loads(path.read_text())))
