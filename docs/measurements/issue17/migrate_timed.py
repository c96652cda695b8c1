"""One-off (stop 36): give the records that the efficiency runs produced their timed ids.

The efficiency suite's jobs got their own ids (DefendJob.timed) after its CIFAR-10 run and during its GTSRB
run. A record written by the efficiency run itself (file time after the run's start; on GTSRB only the
methods that run computed) is copied to its timed id, with id and spec updated and nothing else changed.
"""
import dataclasses
import json
import sys

from ibau.bench.grid import bench_plan, record_path
from ibau.records import write_record

folder, preset, since, methods = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].split(",")
for job in bench_plan("efficiency", preset).defends:
    if job.method not in methods:
        continue
    src, dst = record_path(folder, dataclasses.replace(job, timed=False).id), record_path(folder, job.id)
    if dst.exists() or not src.exists() or src.stat().st_mtime < since:
        print("skip", job.method, src.exists(), dst.exists())
        continue
    rec = json.loads(src.read_text())
    assert rec["status"] == "ok" and rec["method"] == job.method
    rec["id"], rec["spec"] = job.id, job.spec
    write_record(dst, rec)
    print("copied", src.name, "->", dst.name)
