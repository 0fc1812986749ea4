"""A real MIT Kerberos KDC (Debian's ``krb5-kdc``) on loopback with a temporary realm, for one test session.

``running_kdc`` writes ``krb5.conf`` and ``kdc.conf`` into a temporary directory, creates the database with
``kdb5_util``, starts ``krb5kdc -n`` on a free port (TCP and UDP) and stops it afterwards. Principals and
keytabs are made with ``kadmin.local`` (``Kdc.principal``). Nothing outside the directory is touched: the
KDC and every client get ``KRB5_CONFIG`` / ``KRB5_KDC_PROFILE`` pointing into it.
"""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REALM = "PEACH.TEST"


def kdc_available() -> bool:
    return all(shutil.which(tool) for tool in ("krb5kdc", "kdb5_util", "kadmin.local", "kinit"))


def _free_port() -> int:
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        return int(tcp.getsockname()[1])


@dataclass
class Kdc:
    root: Path
    port: int
    process: "subprocess.Popen[bytes]"

    @property
    def krb5_conf(self) -> Path:
        return self.root / "krb5.conf"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.root / "kdc.conf"),
        }

    def kadmin(self, query: str) -> str:
        done = subprocess.run(
            ["kadmin.local", "-q", query],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def principal(self, name: str, keytab: Path | None = None) -> str:
        """Create ``name@REALM`` with a random key; with ``keytab``, export its keys there."""
        full = f"{name}@{REALM}"
        self.kadmin(f"addprinc -randkey {full}")
        if keytab is not None:
            self.kadmin(f"ktadd -k {keytab} {full}")
        return full

    def set_max_life(self, name: str, life: str) -> None:
        self.kadmin(f'modprinc -maxlife "{life}" {name}')


@contextmanager
def running_kdc(root: Path, timeout: float = 30.0) -> Iterator[Kdc]:
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (root / "krb5.conf").write_text(
        f"[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"
        " rdns = false\n dns_canonicalize_hostname = false\n ignore_acceptor_hostname = true\n"
        " udp_preference_limit = 1\n"
        f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n"
    )
    (root / "kdc.conf").write_text(
        f"[kdcdefaults]\n kdc_ports = {port}\n kdc_tcp_ports = {port}\n"
        f"[realms]\n {REALM} = {{\n  database_name = {root}/principal\n  key_stash_file = {root}/stash\n"
        f"  acl_file = {root}/kadm5.acl\n  max_life = 10h 0m 0s\n  max_renewable_life = 7d 0h 0m 0s\n }}\n"
        f"[logging]\n kdc = FILE:{root}/kdc.log\n"
    )
    (root / "kadm5.acl").write_text("")
    kdc = Kdc(root, port, None)  # type: ignore[arg-type]
    subprocess.run(
        ["kdb5_util", "create", "-s", "-r", REALM, "-P", "master-password-for-tests"],
        env=kdc.env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    kdc.process = subprocess.Popen(
        ["krb5kdc", "-n"],
        env=kdc.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert kdc.process.poll() is None, (
                    (root / "kdc.log").read_text() if (root / "kdc.log").exists() else ""
                )
                assert time.monotonic() < deadline, "the KDC did not listen"
                time.sleep(0.05)
        yield kdc
    finally:
        kdc.process.terminate()
        try:
            kdc.process.wait(10)
        except subprocess.TimeoutExpired:
            kdc.process.kill()
            kdc.process.wait()
