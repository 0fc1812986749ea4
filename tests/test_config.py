import json
import textwrap
from pathlib import Path

import pytest

from scheduler.cli.main import main
from scheduler.config import Repository, default_config, load_config, redact_url
from scheduler.errors import ConfigError

DB_PASSWORD = "db-pa55word-never-shown"
FULL = f"""\
workspace: ws
state_url: postgresql+psycopg://peach:{DB_PASSWORD}@db:5432/peach
http:
  host: 0.0.0.0
  port: 8081
loops:
  timeout: 2h
  metadata_timeout: 10m
  pause: 5s
spark:
  submit: bin/spark-submit
  master: yarn
  deploy_mode: cluster
  python: /usr/bin/python3.11
  conf:
    spark.hadoop.fs.s3a.secret.key: {DB_PASSWORD}
    spark.sql.shuffle.partitions: 8
yarn:
  resourcemanagers: [http://rm1:8088, http://rm2:8088/]
organisations:
  chrts:
    repositories:
      - url: https://git.example.org/chrts/tasks.git
        token_env: CHRTS_GIT_TOKEN
      - url: ../repos/extra
        branch: main
        username: robot
        password_file: secrets/extra
    queue: analytics
    resources: {{executors: 4, executor_cores: 2, executor_memory: 4g, driver_memory: 2g}}
  default:
    repositories: []
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "peach.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.workspace == tmp_path / "peach-workspace"
    assert config.database_url == f"sqlite:///{tmp_path}/peach-workspace/state.db"
    assert (config.spark.master, config.spark.deploy_mode, config.spark.submit) == (
        "local[*]",
        "client",
        "spark-submit",
    )
    assert (config.loops.timeout, config.loops.metadata_timeout, config.loops.pause) == (3600, 300, 30)
    assert (config.http.host, config.http.port, config.http.api_token_env) == (
        "127.0.0.1",
        8080,
        "PEACH_API_TOKEN",
    )
    assert config.git.timeout == 120
    [(codops, organisation)] = config.organisations.items()
    assert (codops, organisation.queue) == ("default", "default")
    [repository] = organisation.repositories
    assert (repository.url, repository.branch) == (
        str(tmp_path / "peach-workspace" / "sample-repo"),
        "master",
    )
    assert repository.credentials({}) is None
    assert default_config({"PEACH_WORKSPACE": "/srv/peach"}).organisations["default"].repositories[0].url == (
        "/srv/peach/sample-repo"
    )


def test_file_values_relative_paths_and_queue_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), environ={})
    etc = tmp_path / "etc"
    assert config.workspace == etc / "ws"
    assert config.spark.submit == str(etc / "bin/spark-submit")
    assert config.yarn.resourcemanagers == ("http://rm1:8088", "http://rm2:8088")
    assert config.loops.limits.codops == 7200 and config.loops.limits.metadata == 600
    chrts = config.organisations["chrts"]
    assert (chrts.queue, chrts.resources.executors, chrts.resources.executor_memory) == ("analytics", 4, "4g")
    assert config.organisations["default"].queue == "default"
    remote, local = chrts.repositories
    assert (remote.branch, remote.token_env) == ("master", "CHRTS_GIT_TOKEN")
    assert local.url == str(tmp_path / "repos" / "extra")
    assert local.password_file == etc / "secrets" / "extra"
    relative_db = load_config(write(tmp_path, "state_url: sqlite:///db/state.db\n"), environ={})
    assert relative_db.database_url == f"sqlite:///{etc}/db/state.db"
    assert relative_db.workspace == etc / "peach-workspace"


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, FULL)
    monkeypatch.chdir(tmp_path)
    environ = {
        "PEACH_CONFIG": str(path),
        "PEACH_WORKSPACE": "elsewhere",
        "PEACH_STATE_URL": "sqlite:////var/lib/peach/state.db",
        "PEACH_HTTP_PORT": "9999",
        "PEACH_SPARK_MASTER": "local[2]",
        "PEACH_YARN_RESOURCEMANAGERS": "http://a:8088, http://b:8088",
        "PEACH_LOOP_TIMEOUT": "30m",
    }
    config = load_config(None, environ=environ)
    assert config.workspace == tmp_path / "elsewhere"
    assert config.database_url == "sqlite:////var/lib/peach/state.db"
    assert (config.http.port, config.http.host) == (9999, "0.0.0.0")  # noqa: S104
    assert (config.spark.master, config.spark.deploy_mode) == ("local[2]", "cluster")
    assert config.yarn.resourcemanagers == ("http://a:8088", "http://b:8088")
    assert config.loops.timeout == 1800
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"PEACH_HTTP_PORT": "eighty"})
    assert "PEACH_HTTP_PORT (http.port): " in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http:\n  port: 80\n  hots: x\n", ":3: http.hots: unknown key 'hots' (did you mean 'host'?)"),
        ("loops:\n  timeout: forever\n", ":2: loops.timeout: cannot parse duration 'forever'"),
        (
            "organisations:\n  chrts:\n    repositories:\n      - url: a\n      - url: b\n"
            "        branch: -x\n",
            ":6: organisations.chrts.repositories.1.branch: '-x' is not a branch name",
        ),
        (
            "organisations:\n  chrts:\n    repositories:\n      - branch: main\n",
            ":4: organisations.chrts.repositories.0.url: missing required key",
        ),
        (
            "organisations:\n  Bad Name: {}\n",
            ":2: organisations.Bad Name: codops 'Bad Name' is not valid",
        ),
        (
            "organisations:\n  chrts:\n    resources: {executors: 0}\n",
            ":3: organisations.chrts.resources.executors: Input should be greater than 0",
        ),
        (
            "organisations:\n  c:\n    repositories:\n"
            "      - {url: u, token_env: A, password_env: B, username: x}\n",
            ":4: organisations.c.repositories.0: give at most one credential, not token_env and password_env",
        ),
        (
            "organisations:\n  c:\n    repositories:\n      - {url: u, password_file: p}\n",
            ":4: organisations.c.repositories.0: password_file needs a username",
        ),
        ("workspace: a\nworkspace: b\n", ":2: duplicate key 'workspace' (first defined on line 1)"),
        ("- a list\n", ":1: the configuration must be a mapping of keys"),
    ],
)
def test_errors_name_the_line_and_key_path(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert f"{path}{expected}" in str(info.value)


def test_secrets_never_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path, environ={})
    assert config.database_url.endswith(f"peach:{DB_PASSWORD}@db:5432/peach")
    assert DB_PASSWORD not in repr(config) and DB_PASSWORD not in str(config)
    shown = config.show()
    assert DB_PASSWORD not in shown
    assert "state_url: postgresql+psycopg://peach:**********@db:5432/peach" in shown
    assert "spark.sql.shuffle.partitions: 8" in shown

    assert main(["config", "show", "--config", str(path)]) == 0
    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert DB_PASSWORD not in out
    assert json.loads(out[out.index("\n{") :])["organisations"]["chrts"]["queue"] == "analytics"

    inline = write(
        tmp_path, f"organisations:\n  c:\n    repositories:\n      - url: https://u:{DB_PASSWORD}@h/r\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(inline, environ={})
    assert ":4: organisations.c.repositories.0.url: credentials must not be written in the URL" in str(
        info.value
    )
    assert DB_PASSWORD not in str(info.value)
    assert main(["config", "show", "--config", str(inline)]) == 2  # a configuration error, as everywhere
    assert DB_PASSWORD not in capsys.readouterr().err


def test_credentials_are_read_when_needed(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-a-file\n")
    assert Repository(url="u", token_file=token).credentials({}) == ("oauth2", "from-a-file")
    assert Repository(url="u", token_env="T").credentials({"T": "t0k"}) == ("oauth2", "t0k")
    assert Repository(url="u", username="me", password_env="P").credentials({"P": "pw"}) == ("me", "pw")
    with pytest.raises(
        ConfigError, match=r"environment variable T \(credentials of https://h/r\) is not set"
    ):
        Repository(url="https://h/r", token_env="T").credentials({})
    with pytest.raises(ConfigError, match="cannot read credentials file"):
        Repository(url="u", token_file=tmp_path / "missing").credentials({})


def test_redact_url() -> None:
    assert redact_url("postgresql://peach:pw@db:5432/x") == "postgresql://peach:**********@db:5432/x"
    assert redact_url("sqlite:////var/lib/peach/state.db") == "sqlite:////var/lib/peach/state.db"


ORG_SECRETS = """\
organisations:
  alpha:
    env: {MODEL_BUCKET: s3://models/alpha}
    secrets:
      REDIS_URL: {env: ALPHA_REDIS_URL}
      API_KEY: {file: keys/alpha}
    hadoop_user: alpha-svc
    view_acls: [alice, "@alpha-team"]
    modify_acls: ["@alpha-ops"]
"""


def test_organisation_env_secrets_and_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, ORG_SECRETS)
    key = path.parent / "keys" / "alpha"
    key.parent.mkdir()
    key.write_text("file-secret-value\n")
    alpha = load_config(path, environ={}).organisations["alpha"]
    assert alpha.secrets["API_KEY"].file == key  # relative to the configuration file
    assert alpha.secrets["API_KEY"].read({}) == "file-secret-value"
    assert alpha.secrets["REDIS_URL"].read({"ALPHA_REDIS_URL": "redis://x"}) == "redis://x"
    with pytest.raises(ConfigError, match="environment variable ALPHA_REDIS_URL is not set"):
        alpha.secrets["REDIS_URL"].read({})

    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["organisations"]["alpha"]
    assert shown["env"] == ["MODEL_BUCKET"]  # names, never values
    assert shown["secrets"] == {"API_KEY": f"file {key}", "REDIS_URL": "env ALPHA_REDIS_URL"}
    assert (shown["hadoop_user"], shown["view_acls"], shown["modify_acls"]) == (
        "alpha-svc",
        ["alice", "@alpha-team"],
        ["@alpha-ops"],
    )
    assert "s3://models/alpha" not in json.dumps(shown)


@pytest.mark.parametrize(
    ("secrets", "line", "message"),
    [
        ("      REDIS_URL: redis://inline", 4, "given by reference"),
        ("      REDIS_URL: {env: A, file: b}", 4, "exactly one of env or file"),
        ("      REDIS_URL: {}", 4, "exactly one of env or file"),
        ("      PATH: {env: A}", 3, "PATH is set by the scheduler"),
        ("      REDIS_URL: {env: A}\n    env: {REDIS_URL: x}", 3, "both under env and under secrets"),
    ],
)
def test_bad_organisation_secrets_name_line_and_key(
    tmp_path: Path, secrets: str, line: int, message: str
) -> None:
    path = write(tmp_path, f"organisations:\n  alpha:\n    secrets:\n{secrets}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert f"{path}:" in str(info.value) and message in str(info.value), str(info.value)
    assert "redis://inline" not in str(info.value)


def test_kerberos_and_simple_auth_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path, "kerberos:\n  principal: peach/h@R\n  keytab: peach.keytab\nyarn:\n  user: peach\n"
    )
    config = load_config(path, environ={})
    assert config.kerberos is not None and config.kerberos.keytab == path.parent / "peach.keytab"
    assert config.yarn.user == "peach"
    bad = write(tmp_path, "kerberos:\n  principal: peach/h@R\n  password: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, environ={})
    assert f"{bad}:1: kerberos.keytab: missing required key" in str(info.value)  # the section's line
    assert f"{bad}:3: kerberos.password: unknown key 'password'" in str(info.value)


def test_the_readmes_sample_operator_configuration_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    sample = readme.split("A complete sample", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "peach.yaml"
    path.write_text(sample)
    config = load_config(path)
    assert config.spark.master == "yarn" and list(config.organisations) == ["chrts"]
