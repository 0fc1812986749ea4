"""The same trivial Spark app on a real YARN through the scheduler and through bare ``spark-submit``.

    PEACH_HADOOP_HOME=/path/to/hadoop-3.x .venv/bin/python bench/spark_yarn.py [--runs 3]

Starts the single-node cluster of tests/helpers/hadoop.py (RM, NM, timeline server on 127.0.0.1), then
alternates, ``--runs`` times each:

- bare: ``spark-submit --master yarn --deploy-mode cluster`` of the app (waiting for its end, as a person
  would), with the same queue, resources and Spark settings as the scheduler's submission;
- scheduler: one pass of the service (``Service.once``) whose only task is the same app.

For each it prints the median wall time (from the submission's start to the run's end as its caller sees
it: spark-submit exiting, the run recorded with its driver logs) and submit-to-RUNNING (until the
ResourceManager reports the application RUNNING), and their ratios, scheduler / bare; then where the wall
time goes, from the application's own report: before YARN has it (until its ``startedTime``), on YARN
(until its ``finishedTime``) and after it ended (until the caller has its end).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executors.spark import spark_home
from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.hadoop import YarnCluster, hadoop_home, peach_config, running_cluster, spark_repo

APP = "def main(spark):\n    print(spark.range(1000).count())\n"


def running_at(cluster: YarnCluster, tag: str, began: float, done: threading.Event) -> list[float]:
    """Poll the RM (every 50 ms) for the application tagged ``tag`` submitted from now on (an earlier
    run's carries the same task tag); the seconds until it was RUNNING."""
    seen: list[float] = []
    since_ms = time.time() * 1000 - 1000  # the RM's startedTime, with a second of clock slack

    def poll() -> None:
        while not done.is_set() and not seen:
            try:
                answer = requests.get(
                    f"{cluster.rm}/ws/v1/cluster/apps", params={"applicationTags": tag}, timeout=5
                ).json()
                apps = (answer.get("apps") or {}).get("app") or []
                fresh = [app for app in apps if app.get("startedTime", 0) >= since_ms]
                if any(app["state"] in ("RUNNING", "FINISHED") for app in fresh):
                    seen.append(time.monotonic() - began)
            except requests.RequestException:
                pass
            time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()
    return seen


Trial = tuple[float, float, tuple[float, float, float]]  # wall, to RUNNING, phases


def phases(cluster: YarnCluster, tag: str, began: float, ended: float) -> tuple[float, float, float]:
    """(before, on YARN, after) of the application tagged ``tag`` that started after ``began`` (epoch s)."""
    answer = requests.get(f"{cluster.rm}/ws/v1/cluster/apps", params={"applicationTags": tag}, timeout=5)
    apps = [a for a in (answer.json().get("apps") or {}).get("app") or [] if a["startedTime"] >= began * 1000]
    app = max(apps, key=lambda a: a["startedTime"])
    started, finished = app["startedTime"] / 1000, app["finishedTime"] / 1000
    return started - began, finished - started, ended - finished


def bare(cluster: YarnCluster, root: Path, number: int) -> Trial:
    home = spark_home()
    assert home is not None
    app = root / "bare_app.py"
    app.write_text(
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\nprint(spark.range(1000).count())\nspark.stop()\n"
    )
    tag = f"bench-bare-{number}"
    conf = {
        "spark.yarn.tags": tag,
        "spark.yarn.jars": f"local:{home}/jars/*",
        "spark.yarn.appMasterEnv.SPARK_LOCAL_IP": "127.0.0.1",
        "spark.executorEnv.SPARK_LOCAL_IP": "127.0.0.1",
        "spark.yarn.stagingDir": f"file://{root / 'staging'}",
        "spark.yarn.maxAppAttempts": "1",
    }
    argv = [str(home / "bin" / "spark-submit"), "--master", "yarn", "--deploy-mode", "cluster"]
    argv += ["--queue", "alpha", "--num-executors", "1", "--executor-cores", "1"]
    argv += ["--executor-memory", "512m", "--driver-memory", "512m"]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    env = {**os.environ, **cluster.env, "SPARK_LOCAL_IP": "127.0.0.1"}
    done = threading.Event()
    began, epoch = time.monotonic(), time.time()
    seen = running_at(cluster, tag, began, done)
    subprocess.run([*argv, str(app)], env=env, check=True, capture_output=True)
    wall = time.monotonic() - began
    done.set()
    return wall, seen[0] if seen else float("nan"), phases(cluster, tag, epoch, time.time())


def scheduled(cluster: YarnCluster, service: Service) -> Trial:
    done = threading.Event()
    began, epoch = time.monotonic(), time.time()
    seen = running_at(cluster, "peach-task-app", began, done)
    runs = service.once()
    wall = time.monotonic() - began
    done.set()
    assert [run.status for run in runs] == [RunStatus.SUCCEEDED], [run.outcome for run in runs]
    return wall, seen[0] if seen else float("nan"), phases(cluster, "peach-task-app", epoch, time.time())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    try:
        home = hadoop_home()
    except BaseException as skipped:  # pytest.skip's exception: the reason is the message
        sys.exit(f"bench/spark_yarn.py: {skipped}")
    with tempfile.TemporaryDirectory(prefix="peach-bench-yarn-") as tmp:
        root = Path(tmp)
        with running_cluster(home, root / "cluster") as cluster:
            os.environ.update({k: cluster.env[k] for k in ("HADOOP_CONF_DIR", "YARN_CONF_DIR", "JAVA_HOME")})
            os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
            config = peach_config(root, cluster, spark_repo(root, {"app": (APP, {})}))
            service = Service(load_config(config))
            try:
                bare(cluster, root, -1)  # warm-up: the JVMs' files cached, the task's environment packed
                scheduled(cluster, service)
                figures: dict[str, list[Trial]] = {"bare": [], "scheduler": []}
                for number in range(args.runs):  # alternate, so that a slower moment hits both
                    figures["bare"].append(bare(cluster, root, number))
                    figures["scheduler"].append(scheduled(cluster, service))
                    b, s = figures["bare"][-1], figures["scheduler"][-1]
                    print(f"run {number + 1}: wall / to RUNNING: bare {b[0]:.1f} / {b[1]:.1f} s, ", end="")
                    print(f"scheduler {s[0]:.1f} / {s[1]:.1f} s")
            finally:
                service.close()
    medians = {
        name: (statistics.median(w for w, _, _ in values), statistics.median(r for _, r, _ in values))
        for name, values in figures.items()
    }
    (bare_wall, bare_running), (sched_wall, sched_running) = medians["bare"], medians["scheduler"]
    print(f"median of {args.runs}: wall bare {bare_wall:.1f} s, scheduler {sched_wall:.1f} s")
    print(f"median of {args.runs}: to RUNNING bare {bare_running:.1f} s, scheduler {sched_running:.1f} s")
    print(f"ratio scheduler/bare: wall {sched_wall / bare_wall:.2f}x, ", end="")
    print(f"to RUNNING {sched_running / bare_running:.2f}x")
    for name, values in figures.items():
        before, on_yarn, after = (statistics.median(p[2][i] for p in values) for i in range(3))
        print(f"where {name}'s wall goes (medians): before YARN has it {before:.1f} s, ", end="")
        print(f"on YARN {on_yarn:.1f} s, after it ended {after:.1f} s")


if __name__ == "__main__":
    main()
