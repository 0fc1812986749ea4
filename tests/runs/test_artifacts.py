"""Run artifacts and compressed logs, through the real service: real git repositories, real child
processes, SQLite; the API over real HTTP, the CLI in this process."""

import gzip
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.cli.main import main
from scheduler.config import load_config
from scheduler.runs import runlogs
from scheduler.runs.artifacts import ArtifactNotFound, collect, open_artifact
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.records import Run
from tests.helpers.orgs import org_repo, write_config
from tests.service.test_service import TOKEN, http

# Through the environment variable, in a subdirectory.
BY_ENV = (
    "import os, pathlib\n\n"
    "def main():\n"
    "    out = pathlib.Path(os.environ['PEACH_ARTIFACTS_DIR']) / 'data'\n"
    "    out.mkdir()\n"
    "    (out / 'out.txt').write_text('written through the environment\\n')\n"
    "    print('wrote data/out.txt', flush=True)\n"
)
# Through the entry function's `artifacts` parameter; each run writes its own run id.
BY_PARAM = (
    "import os\n\n"
    "def main(artifacts):\n"
    "    (artifacts / 'report.csv').write_text('run,' + os.environ['PEACH_RUN_ID'] + '\\n')\n"
    "    (artifacts / '<script>x.html').write_text('<script>window.pwned=1</script>')\n"
)
# Links out of the directory (to a file and to a directory), and a FIFO.
ESCAPE = (
    "import os\n\n"
    "def main(artifacts, secret):\n"
    "    os.symlink(secret, artifacts / 'secret.txt')\n"
    "    os.symlink(os.path.dirname(secret), artifacts / 'outside')\n"
    "    os.mkfifo(artifacts / 'pipe')\n"
    "    (artifacts / 'fine.txt').write_text('fine')\n"
)
# 600 + 300 + 2000 bytes against a limit of 1000: the largest is dropped, the run is not killed.
BIG = (
    "def main(artifacts):\n"
    "    (artifacts / 'a.bin').write_bytes(b'a' * 600)\n"
    "    (artifacts / 'b.bin').write_bytes(b'b' * 300)\n"
    "    (artifacts / 'c.bin').write_bytes(b'c' * 2000)\n"
    "    print('wrote 2900 bytes', flush=True)\n"
)
CHATTY = "def main():\n    for line in range(2000):\n        print('line', line, 'of a typical log')\n"


def service_with_artifacts(tmp: Path, repos: dict[str, Path], **artifacts: Any) -> Service:
    path = write_config(tmp, repos)
    config = yaml.safe_load(path.read_text())
    config["artifacts"] = {"max_bytes": 1000, "keep_runs": 2, **artifacts}
    path.write_text(yaml.safe_dump(config))
    return Service(load_config(path), environ={"PEACH_TEST_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, Run]]]:
    """One pass of every task, then the HTTP server up: (service, last run by task name)."""
    tmp = tmp_path_factory.mktemp("artifacts")
    secret = tmp / "secret" / "token.txt"
    secret.parent.mkdir()
    secret.write_text("never served")
    tasks = {
        "by_env": (BY_ENV, {}),
        "by_param": (BY_PARAM, {}),
        "escape": (ESCAPE, {"args": {"secret": str(secret)}}),
        "big": (BIG, {}),
        "chatty": (CHATTY, {}),
    }
    service = service_with_artifacts(tmp, {"alpha": org_repo(tmp, "alpha", tasks)})
    try:
        runs = {run.task: run for run in service.once()}
        service.start_http()
        yield service, runs
    finally:
        service.close()


def api(service: Service, path: str, method: str = "GET", **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    return http(service, path, method, **kwargs)


def listing(service: Service, run: Run) -> dict[str, Any]:
    status, _, body = api(service, f"/api/v1/runs/{run.id}/artifacts")
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def test_artifacts_written_through_the_environment_and_the_parameter_are_listed_and_downloaded(
    served: tuple[Service, dict[str, Run]],
) -> None:
    service, runs = served
    assert {task: run.status for task, run in runs.items()} == dict.fromkeys(runs, RunStatus.SUCCEEDED)

    by_env = listing(service, runs["by_env"])
    content = b"written through the environment\n"
    assert by_env["state"] == "kept" and by_env["dropped"] == []
    assert [(a["path"], a["size"], a["sha256"]) for a in by_env["artifacts"]] == [
        ("data/out.txt", len(content), hashlib.sha256(content).hexdigest())
    ]
    status, headers, body = api(service, by_env["artifacts"][0]["url"])
    assert (status, body) == (200, content)
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith('attachment; filename="out.txt"')
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"].startswith("sandbox")

    by_param = listing(service, runs["by_param"])
    assert [a["path"] for a in by_param["artifacts"]] == ["<script>x.html", "report.csv"]
    report = next(a for a in by_param["artifacts"] if a["path"] == "report.csv")
    assert api(service, report["url"])[2] == f"run,{runs['by_param'].id}\n".encode()
    html = next(a for a in by_param["artifacts"] if a["path"].endswith(".html"))
    assert html["url"].endswith("/artifacts/%3Cscript%3Ex.html")
    status, headers, _ = api(service, html["url"])
    assert status == 200 and headers["content-type"] == "application/octet-stream"  # never text/html
    assert "attachment" in headers["content-disposition"]

    record = json.loads(api(service, f"/api/v1/runs/{runs['by_param'].id}")[2])
    assert (record["artifacts"], record["keep"]) == ("kept", False)
    assert (
        "/api/v1/runs/{run_id}/artifacts/{path}"
        in json.loads(api(service, "/api/v1/openapi.json")[2])["paths"]
    )


def raw_get(service: Service, target: str) -> int:
    """GET with the target sent exactly as given (no client-side normalisation of ``..``)."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])


def test_traversal_and_links_out_of_the_directory_are_refused(served: tuple[Service, dict[str, Run]]) -> None:
    service, runs = served
    escape = listing(service, runs["escape"])
    assert [a["path"] for a in escape["artifacts"]] == ["fine.txt"]
    assert "secret.txt (a symbolic link, not followed)" in escape["note"]
    assert (
        "outside (a symbolic link, not followed)" in escape["note"]
        and "pipe (not a regular file)" in escape["note"]
    )

    base = f"/api/v1/runs/{runs['escape'].id}/artifacts"
    for target in (
        f"{base}/secret.txt",  # a link to a file outside
        f"{base}/outside/token.txt",  # through a link to a directory outside
        f"{base}/pipe",
        f"{base}/..%2F..%2Frunner.py",  # the run's own files next to the artifacts
        f"{base}/%2e%2e/output.log.gz",
        f"{base}/../../{runs['escape'].id}/log",
        f"{base}//etc/passwd",
        f"{base}/fine.txt%00",
    ):
        assert raw_get(service, target) in (404, 400), target
    assert raw_get(service, f"{base}/fine.txt") == 200

    directory = Path(service.store.get_run(runs["escape"].id).artifacts_dir or "")
    for bad in ("secret.txt", "outside/token.txt", "../output.log.gz", "pipe"):
        with pytest.raises(ArtifactNotFound):
            os.close(open_artifact(directory, bad))


def test_size_limit_drops_the_largest_files_and_says_so(served: tuple[Service, dict[str, Run]]) -> None:
    service, runs = served
    big = listing(service, runs["big"])
    assert [(a["path"], a["size"]) for a in big["artifacts"]] == [("a.bin", 600), ("b.bin", 300)]
    assert big["dropped"] == [{"path": "c.bin", "size": 2000, "sha256": None, "dropped": True}]
    assert big["total_bytes"] == 900 and "dropped over the 1000 B limit: c.bin (2.0 KiB)" in big["note"]
    run = service.store.get_run(runs["big"].id)
    assert run.status is RunStatus.SUCCEEDED  # over the limit is reported, never killed
    assert not (Path(run.artifacts_dir or "") / "c.bin").exists()
    assert b"dropped over the 1000 B limit: c.bin" in runlogs.read(Path(run.log_path or ""))[0]
    assert raw_get(service, f"/api/v1/runs/{run.id}/artifacts/c.bin") == 404
    metrics = api(service, "/metrics")[2].decode()
    assert "peach_artifacts_dropped_total 1.0" in metrics


def test_finished_logs_are_gzip_on_disk_and_served_whole_and_by_range(
    served: tuple[Service, dict[str, Run]], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    service, runs = served
    run = service.store.get_run(runs["chatty"].id)
    stored = Path(run.log_path or "")
    assert stored.name == "output.log.gz" and not stored.with_name("output.log").exists()
    assert stored.read_bytes()[:2] == b"\x1f\x8b"
    text = gzip.decompress(stored.read_bytes())
    assert b"line 1999 of a typical log" in text and len(stored.read_bytes()) < len(text) / 3

    status, headers, body = api(service, f"/api/v1/runs/{run.id}/log")
    assert (status, body) == (200, text)
    assert headers["content-type"].startswith("text/plain")
    size = len(text)
    status, headers, tail = api(service, f"/api/v1/runs/{run.id}/log", headers={"Range": "bytes=100-"})
    assert (status, tail, headers["content-range"]) == (206, text[100:], f"bytes 100-{size - 1}/{size}")
    status, headers, part = api(service, f"/api/v1/runs/{run.id}/log", headers={"Range": "bytes=10-19"})
    assert (status, part, headers["content-range"]) == (206, text[10:20], f"bytes 10-19/{size}")
    assert api(service, f"/api/v1/runs/{run.id}/log", headers={"Range": f"bytes={size}-"})[0] == 416

    config = ["--config", str(Path(service.config.workspace).parent / "config.yaml")]
    assert main(["logs", run.id, *config]) == 0
    assert capsysbinary.readouterr().out == text


def test_a_reader_of_the_plain_path_finds_the_compressed_log(tmp_path: Path) -> None:
    plain = tmp_path / "output.log"
    plain.write_bytes(b"0123456789" * 100)
    packed = runlogs.compress(plain)
    assert runlogs.read(plain, 5, 14) == runlogs.read(packed, 5, 14) == (b"5678901234", 1000)
    plain.unlink()  # the store points at the .gz now; a reader that looked before still finds it
    assert runlogs.read(plain, 990) == (b"0123456789", 1000)
    assert runlogs.read(tmp_path / "missing.log") == (b"", 0)


def test_collect_never_follows_a_replaced_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("x")
    (tmp_path / "artifacts").symlink_to(outside)
    with pytest.raises(OSError):
        collect(tmp_path / "artifacts", 1000)


def test_retention_keeps_the_last_runs_and_the_marked_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = service_with_artifacts(tmp_path, {"alpha": org_repo(tmp_path, "alpha", {"p": (BY_PARAM, {})})})
    try:
        service.start_http()
        first, second = (service.once()[0] for _ in range(2))
        keep = f"/api/v1/runs/{first.id}/keep"
        assert api(service, keep, "PUT")[0] == 401
        assert api(service, keep, "PUT", token="wrong")[0] == 401
        assert api(service, "/api/v1/runs/r-nope/keep", "PUT", token=TOKEN)[0] == 404
        status, _, body = api(service, keep, "PUT", token=TOKEN)
        assert status == 200 and json.loads(body)["keep"] is True
        third, fourth = (service.once()[0] for _ in range(2))  # each pass ends with a retention pass

        def state(run: Run) -> str | None:
            return service.store.get_run(run.id).artifacts_state

        assert [state(run) for run in (first, second, third, fourth)] == ["kept", "pruned", "kept", "kept"]
        assert not Path(second.artifacts_dir or "x").exists() and Path(first.artifacts_dir or "").is_dir()
        pruned = listing(service, second)
        assert pruned["artifacts"] == [] and "pruned by retention" in pruned["note"]
        assert raw_get(service, f"/api/v1/runs/{second.id}/artifacts/report.csv") == 404
        metrics = api(service, "/metrics")[2].decode()
        assert "peach_artifacts_pruned_total 1.0" in metrics
        kept = sum(a["size"] for run in (first, third, fourth) for a in listing(service, run)["artifacts"])
        assert f"peach_artifacts_bytes {float(kept)}" in metrics

        config = ["--config", str(tmp_path / "config.yaml")]
        assert main(["runs", "keep", first.id, "--unset", *config]) == 0
        assert "subject to retention" in capsys.readouterr().out
        assert api(service, keep, "DELETE")[0] == 401
        service.housekeeping.run_pass()
        assert state(first) == "pruned" and not Path(first.artifacts_dir or "x").exists()
        assert main(["runs", "keep", "r-nope", *config]) == 1
    finally:
        service.close()


def test_refused_without_a_configured_token(tmp_path: Path) -> None:
    service = Service(load_config(write_config(tmp_path, {})), environ={})
    try:
        service.start_http()
        assert api(service, "/api/v1/runs/r-any/keep", "PUT", token="anything")[0] == 403
    finally:
        service.close()
