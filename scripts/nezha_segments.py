"""The fault segments of a Nezha stream: Nezha kept only the minutes around each fault
it injected, so every run of consecutive minutes with spans is one injection. Faults
whose minutes were incomplete upstream are left out of the dataset's `.faults.json`,
but their spans are in the stream, so an alert on them counts as a false alarm in
`score.py`. Prints how many segments the stream has, how many hold a listed fault, and
the precision and F1 of a detector that alerts exactly once on every injection.

  python3 scripts/nezha_segments.py STREAM.jsonl.gz FAULTS.json
"""
import gzip
import json
import sys


def minutes(stream):
    seen = set()
    for line in gzip.open(stream, "rt"):
        for rs in json.loads(line).get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    seen.add(int(span["startTimeUnixNano"]) // 60_000_000_000)
    return sorted(seen)


def segments(mins):
    runs, start, last = [], mins[0], mins[0]
    for m in mins[1:]:
        if m - last > 1:
            runs.append((start, last))
            start = m
        last = m
    runs.append((start, last))
    return runs


def main(stream, faults_path):
    faults = json.load(open(faults_path))
    runs = segments(minutes(stream))
    listed = sum(any(a <= f["time_ms"] // 60_000 <= b for f in faults) for a, b in runs)
    precision = listed / len(runs)
    f1 = 2 * precision / (precision + 1)
    print(f"{len(runs)} segments, {listed} with a listed fault: one alert on every injection "
          f"scores precision {precision:.2f}, F1 {f1:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
