#!/bin/bash
# issue 16 acceptance: every cell recorded (clean + badnets), and a SIGINT mid-defense then a re-run
# ends with every job ok and the same numbers as an uninterrupted run.
set -m  # job control: a background job keeps SIGINT (a non-interactive shell would ignore it)
cd "$(dirname "$0")/.."
IB=.venv/bin/ibau
export OUT=${OUT:-runs/sigint_check}
mkdir -p $OUT; rm -rf $OUT/int
[ -d $OUT/full ] || $IB bench --suite benchmarks/suites/clean_badnets.json --preset smoke --out $OUT/full > $OUT/full.log 2>&1
echo "full rc=$?"
# this script runs as a background job, whose children inherit SIGINT ignored: restore Python's handler
.venv/bin/python -c "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); from ibau.cli import main; main(sys.argv[1:])" bench --suite benchmarks/suites/clean_badnets.json --preset smoke --out $OUT/int > $OUT/int1.log 2>&1 &
pid=$!
# wait for the two trainings to be recorded, then for the first defense to be under way
while [ "$(ls $OUT/int/records/train-*.json 2>/dev/null | wc -l)" -lt 2 ]; do sleep 0.5; done
sleep 4
kill -INT $pid
wait $pid; echo "interrupted rc=$?"
ls $OUT/int/records | wc -l
$IB bench --suite benchmarks/suites/clean_badnets.json --preset smoke --out $OUT/int > $OUT/int2.log 2>&1
echo "rerun rc=$?"
.venv/bin/python - <<'PY'
import json, os, pathlib
full = {p.name: json.loads(p.read_text()) for p in pathlib.Path(os.environ["OUT"], "full", "records").glob("*.json")}
rerun = {p.name: json.loads(p.read_text()) for p in pathlib.Path(os.environ["OUT"], "int", "records").glob("*.json")}
print("jobs", len(full), len(rerun), "same ids", set(full) == set(rerun))
print("status full", sorted({r["status"] for r in full.values()}), "rerun", sorted({r["status"] for r in rerun.values()}))
same = all(full[k].get("after") == rerun[k].get("after") and full[k].get("test") == rerun[k].get("test") for k in full)
print("numbers equal", same)
for k, r in sorted(full.items()):
    if r["kind"] == "defend":
        print(k[:60], r["method"], {m: round(v, 4) for m, v in r["after"].items()}, "der", r["der"], "failed", r["failed"])
PY
echo "the interrupted run's log:"; cat $OUT/int1.log
