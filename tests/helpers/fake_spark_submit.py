"""A stand-in for ``spark-submit --master yarn``: submits to the fake ResourceManager and writes the lines the
real YARN client writes (``org.apache.spark.deploy.yarn.Client``), then exits as with
``spark.yarn.submit.waitAppCompletion=false``.

``write_stand_in`` makes an executable script for one test: its argument list is recorded to a JSON file;
``mode`` is ``normal``, ``silent`` (submits, but its output is lost) or ``refused`` (exits 1, submits
nothing).
"""

import json
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_stand_in(directory: Path, rm_url: str, mode: str = "normal") -> Path:
    script = directory / "spark-submit"
    record = directory / "argv.json"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.helpers.fake_spark_submit import main\n"
        f"sys.exit(main(sys.argv, {rm_url!r}, {mode!r}, {str(record)!r}))\n"
    )
    script.chmod(0o755)
    return script


def _stamp() -> str:
    return time.strftime("%y/%m/%d %H:%M:%S")


def main(argv: list[str], rm_url: str, mode: str, record: str) -> int:
    Path(record).write_text(json.dumps(argv))
    args = argv[1:]
    conf = dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "--conf")
    queue = args[args.index("--queue") + 1]
    name = args[args.index("--name") + 1]
    out = sys.stdout
    print(
        f"{_stamp()} WARN NativeCodeLoader: Unable to load native-hadoop library for your platform", file=out
    )
    print(f"{_stamp()} INFO DefaultNoHARMFailoverProxyProvider: Connecting to ResourceManager", file=out)
    print(f"{_stamp()} INFO Client: Requesting a new application from cluster with 1 NodeManagers", file=out)
    if mode == "refused":
        print(f"{_stamp()} ERROR Client: Queue {queue} is STOPPED, application_1_0001 was refused", file=out)
        return 1
    user = args[args.index("--proxy-user") + 1] if "--proxy-user" in args else "peach"
    tags = conf["spark.yarn.tags"].split(",")
    body = json.dumps({"name": name, "queue": queue, "tags": tags, "user": user}).encode()
    request = urllib.request.Request(f"{rm_url}/fake/submit", body, {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http to the fake)
        app_id = json.load(response)["id"]
    if mode == "silent":
        return 0
    print(
        f"{_stamp()} INFO Client: Uploading resource file:/tmp/env.tar.gz -> hdfs:///user/peach/x", file=out
    )
    print(f"{_stamp()} INFO Client: Submitting application {app_id} to ResourceManager", file=out)
    print(f"{_stamp()} INFO YarnClientImpl: Submitted application {app_id}", file=out)
    print(f"{_stamp()} INFO Client: Application report for {app_id} (state: ACCEPTED)", file=out)
    print(f"{_stamp()} INFO Client: \n\t client token: N/A\n\t queue: {queue}\n\t tracking URL: x", file=out)
    out.flush()
    return 0
