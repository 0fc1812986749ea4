"""The scheduler's own Kerberos ticket cache against a real MIT KDC on loopback (tests/helpers/kdc.py)."""

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from executors.yarn.client import Refused, ResourceManager
from executors.yarn.kerberos import KerberosError, SpnegoAuth, TicketCache
from scheduler.config import KerberosSettings, load_config
from scheduler.service.service import Service
from tests.helpers.backends import wait_for
from tests.helpers.fake_rm import FakeResourceManager
from tests.helpers.kdc import Kdc, kdc_available, running_kdc
from tests.helpers.orgs import org_repo, write_config
from tests.helpers.spnego import spnego_front
from tests.service.test_service import TOKEN, http

pytestmark = pytest.mark.skipif(not kdc_available(), reason="MIT Kerberos KDC not installed (bin/setup)")


@pytest.fixture(scope="module")
def kdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kdc]:
    with running_kdc(tmp_path_factory.mktemp("kdc")) as server:
        yield server


class Clock:
    def __init__(self) -> None:
        import time

        self.offset, self._time = 0.0, time.time

    def __call__(self) -> float:
        return self._time() + self.offset


def klist(kdc: Kdc, cache: str) -> str:
    done = subprocess.run(["klist", "-c", cache], env=kdc.env, capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def test_kinit_fills_the_schedulers_own_cache_and_renews_it(kdc: Kdc, tmp_path: Path) -> None:
    keytab = tmp_path / "peach.keytab"
    principal = kdc.principal("peach/scheduler", keytab)
    user_cache = tmp_path / "user-cache"  # a user's default cache: never read or written
    settings = KerberosSettings(principal=principal, keytab=keytab, krb5_conf=kdc.krb5_conf)
    clock, events = Clock(), []
    cache = TicketCache(
        settings,
        tmp_path / "workspace" / "kerberos",
        environ={**kdc.env, "KRB5CCNAME": f"FILE:{user_cache}"},
        clock=clock,
        observe=events.append,
    )
    assert not cache.valid and cache.due()
    assert cache.refresh() is True
    assert cache.valid and cache.error is None and events == ["renewed"]
    assert cache.path.parent.stat().st_mode & 0o777 == 0o700
    assert f"Default principal: {principal}" in klist(kdc, cache.name)
    assert cache.expires is not None and cache.obtained is not None
    assert 9 * 3600 < cache.expires - cache.obtained <= 10 * 3600  # the realm's max_life
    assert not user_cache.exists()

    first = cache.obtained
    assert cache.refresh() is False  # not due yet
    clock.offset = 7 * 3600  # two thirds of the ticket's life later
    assert cache.refresh() is True and cache.obtained > first and events == ["renewed", "renewed"]
    clock.offset = 11 * 3600
    assert cache.expires > clock()  # the renewed ticket outlives the first one's expiry


def test_a_keytab_not_matching_the_principal_is_a_clear_error(kdc: Kdc, tmp_path: Path) -> None:
    other = tmp_path / "other.keytab"
    kdc.principal("someone/else", other)
    principal = kdc.principal("peach/mismatch")
    events: list[str] = []
    settings = KerberosSettings(principal=principal, keytab=other, krb5_conf=kdc.krb5_conf)
    cache = TicketCache(settings, tmp_path / "k", environ=kdc.env, observe=events.append)
    with pytest.raises(KerberosError) as info:
        cache.kinit()
    assert f"kinit -kt {other} {principal} failed: " in str(info.value)
    assert "not found" in str(info.value).lower() or "keytab" in str(info.value).lower()
    assert cache.refresh() is False and not cache.valid and events == ["failure", "failure"]


def kerberos_service(tmp_path: Path, kdc: Kdc, keytab: Path, principal: str) -> Service:
    code = (
        "import json, os\n\ndef main(artifacts):\n"
        "    (artifacts / 'env.json').write_text(json.dumps(dict(os.environ)))\n"
    )
    path = write_config(tmp_path, {"alpha": org_repo(tmp_path, "alpha", {"env": (code, {})})})
    config = yaml.safe_load(path.read_text())
    config["kerberos"] = {"principal": principal, "keytab": str(keytab), "krb5_conf": str(kdc.krb5_conf)}
    path.write_text(yaml.safe_dump(config))
    return Service(load_config(path), environ={**kdc.env, "PEACH_TEST_TOKEN": TOKEN})


def metric(service: Service, name: str) -> float:
    text = http(service, "/metrics")[2].decode()
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_the_service_is_ready_with_a_ticket_and_tasks_never_see_it(kdc: Kdc, tmp_path: Path) -> None:
    keytab = tmp_path / "svc.keytab"
    service = kerberos_service(tmp_path, kdc, keytab, kdc.principal("peach/service", keytab))
    try:
        service.start()
        assert http(service, "/readyz")[0] == 200
        assert metric(service, "peach_kerberos_renewals_total") == 1
        assert metric(service, "peach_kerberos_renewal_failures_total") == 0
        run = wait_for(lambda: [r for r in service.store.list_runs() if r.status.final], 60, "a run")[0]
        env = json.loads(Path(run.artifacts_dir or "", "env.json").read_text())
        assert "KRB5CCNAME" not in env and "KRB5_CONFIG" not in env
        assert not any(str(keytab) in value or "krb5cc" in value for value in env.values())
    finally:
        service.request_force_stop()
        service.wait_stopped(30)
        service.close()


def test_a_wrong_keytab_keeps_the_service_not_ready_and_counts_it(kdc: Kdc, tmp_path: Path) -> None:
    other = tmp_path / "wrong.keytab"
    kdc.principal("not/peach", other)
    service = kerberos_service(tmp_path, kdc, other, kdc.principal("peach/unlucky"))
    try:
        service.start()
        status, _, body = http(service, "/readyz")
        assert (status, json.loads(body)["status"]) == (503, "starting")
        assert metric(service, "peach_kerberos_renewal_failures_total") == 1
        assert service.tickets is not None and "peach/unlucky" in (service.tickets.error or "")
    finally:
        service.request_force_stop()
        service.wait_stopped(30)
        service.close()


@pytest.fixture
def rm() -> Iterator[FakeResourceManager]:
    fake = FakeResourceManager()
    yield fake
    fake.close()


def test_spnego_rest_calls_succeed_as_the_right_principal_and_fail_clearly_as_another(
    kdc: Kdc, tmp_path: Path, rm: FakeResourceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRB5_CONFIG", str(kdc.krb5_conf))  # the MIT library of this process
    http_keytab = tmp_path / "http.keytab"
    kdc.principal("HTTP/127.0.0.1", http_keytab)
    caches = {}
    for name in ("peach/allowed", "peach/stranger"):
        keytab = tmp_path / f"{name.replace('/', '-')}.keytab"
        principal = kdc.principal(name, keytab)
        settings = KerberosSettings(principal=principal, keytab=keytab, krb5_conf=kdc.krb5_conf)
        caches[name] = TicketCache(settings, tmp_path / name.replace("/", "-"), environ=kdc.env)
        caches[name].kinit()
    allowed = caches["peach/allowed"].settings.principal
    with spnego_front(rm.url, http_keytab, {allowed}) as (front, seen):
        rm.node_address = front.removeprefix("http://")  # the NodeManager's logs behind SPNEGO too
        events: list[str] = []
        good = ResourceManager(
            [front], timeout=5, retries=1, auth=SpnegoAuth(caches["peach/allowed"]), identity=allowed
        )
        app_id = rm.submit("peach-chrts-job", "chrts", ["peach", "peach-run-r-1"])
        assert good.app(app_id)["state"] == "ACCEPTED"
        good.set_lifetime(app_id, 4_000_000_000)
        rm.set_state(app_id, "RUNNING")
        rm.node_logs[rm.container(app_id)] = {"stdout": "driver says hi\n", "stderr": ""}
        source, files = good.driver_logs(app_id, None, 1 << 20, wait=0)
        assert files["stdout"] == b"driver says hi\n" and "NodeManager" in source
        assert good.kill(app_id, confirm=5, poll=0.05) in ("KILLED", "FINISHED")
        assert rm.apps[app_id]["state"] == "KILLED" and set(seen) == {allowed}

        stranger = caches["peach/stranger"].settings.principal
        bad = ResourceManager(
            [front],
            timeout=5,
            retries=1,
            auth=SpnegoAuth(caches["peach/stranger"]),
            identity=stranger,
            observe=events.append,
        )
        with pytest.raises(Refused) as info:
            bad.app(app_id)
        assert str(info.value) == (
            f"YARN: report of {app_id}: {front}/ws/v1/cluster/info refused it as {stranger} "
            "(HTTP 403: not allowed)"
        )
        anonymous = ResourceManager([front], timeout=5, retries=1, observe=events.append)
        with pytest.raises(Refused, match=r"as anonymous \(HTTP 401: not authenticated\)"):
            anonymous.kill(app_id)
        assert [e for e in events if e != "request"] == ["refused", "refused"]
