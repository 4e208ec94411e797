"""How a Nezha stream's alerts score when a fault's window opens some seconds before its
listed injection time: a diagnostic beside the dataset's `score.py` (whose window is
[injection, injection + 240 s] and whose figures are the ones reported), for streams
whose traces change before the listed time. Prints, for each lead, the alerts that start
before their fault's listed time, and recall, precision and F1 with that window.

  python3 scripts/nezha_lead.py FAULTS.json ALERTS.jsonl [LEAD_SECONDS ...]   (default 90)
"""
import json
import sys

WINDOW_MS = 240_000


def new_firing(path):
    for line in open(path):
        if line.strip():
            a = json.loads(line)
            if a.get("status") == "firing" and a.get("annotations", {}).get("notification", "new") == "new":
                yield a


def main(faults_path, alerts_path, leads):
    faults = json.load(open(faults_path))
    alerts = list(new_firing(alerts_path))
    for lead in leads:
        lead_ms = lead * 1000

        def inside(f, a):
            return f["time_ms"] - lead_ms <= a["starts_at"] <= f["time_ms"] + WINDOW_MS

        detected = sum(any(inside(f, a) for a in alerts) for f in faults)
        true = [a for a in alerts if any(inside(f, a) for f in faults)]
        early = sum(all(a["starts_at"] < f["time_ms"] for f in faults if inside(f, a)) for a in true)
        recall = detected / len(faults) if faults else 0.0
        precision = len(true) / len(alerts) if alerts else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        print(f"window from {lead} s before the listed time: {early} of {len(alerts)} alerts start before it; "
              f"recall {recall:.2f}, precision {precision:.2f}, F1 {f1:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]] or [90])
