"""The operator configuration (SPEC §3): one YAML file, typed, with documented defaults.

``load_config`` reads the file named by ``--config`` or ``PEACH_CONFIG`` (or takes the embedded default),
applies ``PEACH_*`` environment overrides, resolves relative paths against the file's directory, and
raises ``ConfigError`` naming the file, line and key path of every problem. Secrets are never printed:
credentials are only *references* (an environment variable or a file), the state database URL is a
``SecretStr`` whose password ``show()`` masks, and Spark ``conf`` values that look secret are masked too.
"""

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scheduler.capacity import Limits, memory_mib
from scheduler.durations import Seconds, SecondsOrZero, format_duration
from scheduler.errors import ConfigError
from scheduler.limits import LoopLimits
from scheduler.names import codops_problem
from scheduler.notifysettings import NotificationSettings, OrganisationNotifications
from scheduler.yamlfile import YamlError, load_bytes

CONFIG_ENV = "PEACH_CONFIG"
DEFAULT_WORKSPACE = "peach-workspace"
DEFAULT_ORGANISATION = "default"
DEFAULT_TOKEN_USER = "oauth2"  # noqa: S105 (a user name) -- what GitLab wants with a token; GitHub and others accept any user name
# Spark's own default for spark.redaction.regex: conf values whose key matches are never shown.
SECRET_KEY = re.compile(r"(?i)secret|password|token|access[.]key|credential")
MASK = "**********"
# Variables a task's process needs as the scheduler sets them: an organisation cannot override them.
RESERVED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYSPARK_PYTHON",
        "PYSPARK_DRIVER_PYTHON",
        "SPARK_HOME",
        "JAVA_HOME",
        "HADOOP_CONF_DIR",
        "YARN_CONF_DIR",
        "HADOOP_USER_NAME",
        "KRB5CCNAME",
        "KRB5_CONFIG",
        "KRB5_KTNAME",
    }
)

# PEACH_* variables that override one key each; they win over the file.
ENVIRONMENT: Mapping[str, tuple[str, ...]] = {
    "PEACH_WORKSPACE": ("workspace",),
    "PEACH_STATE_URL": ("state_url",),
    "PEACH_HTTP_HOST": ("http", "host"),
    "PEACH_HTTP_PORT": ("http", "port"),
    "PEACH_LOOP_TIMEOUT": ("loops", "timeout"),
    "PEACH_METADATA_TIMEOUT": ("loops", "metadata_timeout"),
    "PEACH_LOOP_PAUSE": ("loops", "pause"),
    "PEACH_SPARK_SUBMIT": ("spark", "submit"),
    "PEACH_SPARK_MASTER": ("spark", "master"),
    "PEACH_SPARK_DEPLOY_MODE": ("spark", "deploy_mode"),
    "PEACH_YARN_RESOURCEMANAGERS": ("yarn", "resourcemanagers"),  # comma-separated
    "PEACH_GIT_TIMEOUT": ("git", "timeout"),
    "PEACH_ARTIFACTS_ROOT": ("artifacts", "root"),
    "PEACH_ARTIFACTS_MAX_BYTES": ("artifacts", "max_bytes"),
    "PEACH_ARTIFACTS_KEEP_RUNS": ("artifacts", "keep_runs"),
}

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRANCH = re.compile(r"(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]+(?<![/.])")
_MEMORY = re.compile(r"\d+[kmgt]?", re.IGNORECASE)


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


def _memory(value: str) -> str:
    if not _MEMORY.fullmatch(value):
        raise ValueError(f"{value!r} is not a Spark memory size like 512m or 4g")
    return value.lower()


def _codops(value: str) -> str:
    why = codops_problem(value)
    if why:
        raise ValueError(why)
    return value


EnvName = Annotated[StrictStr, AfterValidator(_env_name)]
Memory = Annotated[StrictStr, AfterValidator(_memory)]
Codops = Annotated[StrictStr, AfterValidator(_codops)]
Count = Annotated[int, Field(strict=True, gt=0)]


def _base(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("base", "."))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HttpSettings(_Model):
    """The one port for the API, the dashboard and ``/metrics``."""

    host: StrictStr = "127.0.0.1"  # the Helm chart sets 0.0.0.0
    port: int = Field(8080, ge=0, le=65535)
    api_token_env: EnvName = "PEACH_API_TOKEN"  # noqa: S105 (a variable name) bearer token for trigger/kill, by reference
    webhook_secret_env: EnvName = "PEACH_WEBHOOK_SECRET"  # noqa: S105 (a variable name) push webhooks' secret


class LoopSettings(_Model):
    timeout: Seconds = 3600.0  # per-organisation loops
    metadata_timeout: Seconds = 300.0  # the shared metadata loop
    pause: Seconds = 30.0  # minimum pause between two passes of a loop
    metadata_parallel: int = Field(1, ge=1, le=64)  # metadata runs at once (organisations taken in turn)
    threads: int = Field(64, ge=1, le=4096)  # passes going at once; a loop in its pause holds no thread
    drain: Seconds = 60.0  # on SIGTERM, how long running runs may finish before they are killed

    @property
    def limits(self) -> LoopLimits:
        return LoopLimits(codops=self.timeout, metadata=self.metadata_timeout)


class SparkSettings(_Model):
    submit: StrictStr = "spark-submit"  # a command on PATH, or a path (relative to the config file)
    master: StrictStr = "local[*]"
    deploy_mode: Literal["client", "cluster"] = "client"
    python: StrictStr | None = None  # interpreter path on the cluster nodes; None: the environment's
    conf: dict[StrictStr, StrictStr | StrictBool | int | float] = Field(default_factory=dict, repr=False)
    # task-level ``spark`` settings a task may set (globs like ``spark.sql.shuffle.*``); others fail
    allowed_overrides: tuple[StrictStr, ...] = ()

    @field_validator("submit")
    @classmethod
    def _submit_path(cls, value: str, info: ValidationInfo) -> str:
        return str(_base(info) / value) if "/" in value else value


class YarnSettings(_Model):
    resourcemanagers: tuple[StrictStr, ...] = ()  # several for ResourceManager HA
    timeout: Seconds = 10.0  # every REST call; then the next ResourceManager is tried
    retries: int = Field(3, ge=1, le=20)  # passes over all ResourceManagers before a call fails
    poll: Seconds = 2.0  # how often a running application's state is asked
    lifetime_grace: Seconds = 600.0  # the application's YARN LIFETIME is the run's deadline plus this
    # the REST base serving aggregated container logs: the timeline/application-history server's
    # ``http://host:8188/ws/v1/applicationhistory`` (Hadoop 3.1) or the JobHistory server's
    # ``http://host:19888/ws/v1/history`` (3.3+); default: the cluster's yarn-site.xml
    # (``yarn.log.server.web-service.url``)
    log_server: StrictStr | None = None
    log_wait: Seconds = 30.0  # how long to wait for log aggregation after an application ends
    user: StrictStr | None = None  # Hadoop simple auth: ``user.name=`` on every REST call (no Kerberos)

    @field_validator("resourcemanagers")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise ValueError(f"{redact_url(url)!r} is not an http(s) ResourceManager address")
        return tuple(url.rstrip("/") for url in value)


def _mib(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str | int):
        raise ValueError(f"{value!r} is not a memory size like 512m or 4g")
    return memory_mib(value)


MiB = Annotated[int | None, BeforeValidator(_mib)]  # a size (``64g``, ``512m``) or a number of MiB


class CapacitySettings(_Model):
    """The shared host's slots (``scheduler.capacity``): a run waits for its slot before it starts."""

    local_runs: Count | None = None  # local processes at once (python tasks, local drivers); None: cores
    submissions: Count = 4  # spark-submit processes at once
    memory: MiB = None  # MiB promised to local runs in all (``64g``); None: not counted
    run_memory: MiB = None  # a local run's memory when its task declares none (also its cgroup cap)
    metadata_local_runs: int = Field(1, ge=0, le=64)  # local slots reserved for the metadata loop

    @property
    def limits(self) -> Limits:
        local = self.local_runs if self.local_runs is not None else os.cpu_count() or 1
        return Limits(local, self.submissions, self.memory, self.metadata_local_runs)


class KerberosSettings(_Model):
    """The scheduler's own Kerberos identity: spark-submit gets ``--principal``/``--keytab``; the scheduler
    keeps its own ticket cache (``kinit -kt``) in the workspace for its REST calls. Keytab by path only."""

    principal: StrictStr  # peach/scheduler.example.org@EXAMPLE.ORG
    keytab: Path
    krb5_conf: Path | None = None  # default: the system's (/etc/krb5.conf, or $KRB5_CONFIG)
    renew_every: Seconds | None = None  # None: when a third of the ticket's lifetime is left

    @field_validator("keytab", "krb5_conf")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else Path(os.path.abspath(_base(info) / value))


class GitSettings(_Model):
    timeout: Seconds = 120.0  # every git operation is killed after this long
    # One ls-remote answer serves every sync of a (URL, branch) this long: a run's commit is the branch
    # head as of at most this long before it starts (a push webhook ends the window at once).
    freshness: SecondsOrZero = 2.0  # 0: every sync asks the remote
    parallel: PositiveInt = 8  # git network operations (ls-remote, fetch) at a time, all organisations


class ArtifactSettings(_Model):
    """Files a run writes to its artifacts directory (``PEACH_ARTIFACTS_DIR``), kept with the run."""

    root: Path | None = None  # None: <workspace>/runs/<run id>/artifacts; else <root>/<run id>
    max_bytes: ByteSize = ByteSize(100 * 1024 * 1024)  # per run: larger files are dropped first
    keep_runs: int = Field(10, ge=0)  # per task: the last N runs keep their artifacts (and `keep` runs)
    prune_interval: Seconds = 300.0  # how often retention runs in the service

    @field_validator("root")
    @classmethod
    def _relative_root(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else Path(os.path.abspath(_base(info) / value))


class EnvironmentSettings(_Model):
    """Task environments: a failed build is not tried again before its backoff ends (doubling each time)."""

    backoff: Seconds = 60.0  # the wait after a first failed build
    max_backoff: Seconds = 3600.0  # the longest wait between two attempts


class Resources(_Model):
    """An organisation's Spark resource profile."""

    executors: Count = 2
    executor_cores: Count = 1
    executor_memory: Memory = "2g"
    driver_memory: Memory = "1g"


class Repository(_Model):
    """One git repository of an organisation. Credentials only by reference: at most one of
    ``token_env``, ``token_file``, ``password_env``, ``password_file`` (passwords need ``username``)."""

    url: StrictStr  # https://, git://, ssh:// or a local path (relative to the config file)
    branch: StrictStr = "master"
    username: StrictStr | None = None  # default with a token: oauth2
    token_env: EnvName | None = None
    token_file: Path | None = None
    password_env: EnvName | None = None
    password_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _no_inline_secret(cls, value: str, info: ValidationInfo) -> str:
        if "://" in value:
            if urlsplit(value).password is not None:
                raise ValueError("credentials must not be written in the URL; use token_env or token_file")
            return value
        if re.match(r"[^/]*:", value):  # scp-like ssh: git@host:org/repo.git
            return value
        return os.path.abspath(_base(info) / value)

    @field_validator("branch")
    @classmethod
    def _branch_name(cls, value: str) -> str:
        if not _BRANCH.fullmatch(value):
            raise ValueError(f"{value!r} is not a branch name")
        return value

    @field_validator("token_file", "password_file")
    @classmethod
    def _relative_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else Path(os.path.abspath(_base(info) / value))

    @model_validator(mode="after")
    def _one_credential(self) -> "Repository":
        given = [k for k in ("token_env", "token_file", "password_env", "password_file") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give at most one credential, not {' and '.join(given)}")
        if given and given[0].startswith("password") and not self.username:
            raise ValueError(f"{given[0]} needs a username")
        return self

    def credentials(self, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """(username, secret) read now from the environment or file, or None; raises ConfigError."""
        environ = os.environ if environ is None else environ
        name = self.token_env or self.password_env
        if name:
            if not environ.get(name):
                raise ConfigError(f"environment variable {name} (credentials of {self.url}) is not set")
            secret = environ[name]
        elif self.token_file or self.password_file:
            path = self.token_file or self.password_file
            try:
                secret = Path(str(path)).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
        else:
            return None
        return (self.username or DEFAULT_TOKEN_USER, secret)


class SecretRef(_Model):
    """Where one of an organisation's secrets is read at run time: exactly one of ``env`` (a variable
    of the scheduler's environment) or ``file`` (a path, relative to the configuration file). Values
    are never written in the configuration."""

    env: EnvName | None = None
    file: Path | None = None

    @field_validator("file")
    @classmethod
    def _relative_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else Path(os.path.abspath(_base(info) / value))

    @model_validator(mode="before")
    @classmethod
    def _reference_only(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("a secret is given by reference: {env: VARIABLE} or {file: PATH}, never inline")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> "SecretRef":
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        return self

    def read(self, environ: Mapping[str, str]) -> str:
        """The value now; raises ``ConfigError`` saying why it cannot be had."""
        if self.env is not None:
            if not environ.get(self.env):
                raise ConfigError(f"environment variable {self.env} is not set in the scheduler")
            return environ[self.env]
        try:
            return Path(str(self.file)).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read {self.file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{self.file} is not UTF-8 text") from None

    def where(self) -> str:
        """Where the value comes from, for ``config show`` (a name or a path, never the value)."""
        return f"env {self.env}" if self.env is not None else f"file {self.file}"


class OrganisationSettings(_Model):
    repositories: tuple[Repository, ...] = ()
    queue: StrictStr  # YARN queue; defaults to the codops
    resources: Resources = Resources()
    env: dict[EnvName, StrictStr] = {}  # plain settings every task of the organisation gets
    secrets: dict[EnvName, SecretRef] = {}  # name -> reference, read when a run starts
    hadoop_user: StrictStr | None = None  # spark-submit --proxy-user; None: the scheduler's own identity
    view_acls: tuple[StrictStr, ...] = ()  # users or groups (``@group``) who may see the apps and logs
    modify_acls: tuple[StrictStr, ...] = ()  # users or groups (``@group``) who may kill the apps

    @field_validator("env", "secrets")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if name.startswith("PEACH_") or name in RESERVED_ENV:
                raise ValueError(f"{name} is set by the scheduler and cannot be given to tasks")
        return value

    @model_validator(mode="after")
    def _env_or_secret(self) -> "OrganisationSettings":
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)} given both under env and under secrets")
        return self

    def identity(self) -> dict[str, Any]:
        """Who the organisation's applications run as and who may see or change them."""
        return {
            "hadoop_user": self.hadoop_user,
            "view_acls": list(self.view_acls),
            "modify_acls": list(self.modify_acls),
        }

    notifications: OrganisationNotifications = OrganisationNotifications()


class Config(_Model):
    """The effective operator configuration. ``None`` values mean the documented default."""

    workspace: Path = Field(Path(DEFAULT_WORKSPACE), validate_default=True)  # checkouts, envs, run logs
    state_url: SecretStr | None = None  # None: sqlite:///<workspace>/state.db
    http: HttpSettings = HttpSettings()
    loops: LoopSettings = LoopSettings()
    spark: SparkSettings = SparkSettings()
    yarn: YarnSettings = YarnSettings()
    git: GitSettings = GitSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    capacity: CapacitySettings = CapacitySettings()
    kerberos: KerberosSettings | None = None  # None: no Kerberos (Hadoop simple auth, yarn.user)

    environments: EnvironmentSettings = EnvironmentSettings()
    notifications: NotificationSettings = NotificationSettings()
    organisations: dict[Codops, OrganisationSettings] = {}

    @field_validator("workspace")
    @classmethod
    def _absolute_workspace(cls, value: Path, info: ValidationInfo) -> Path:
        return Path(os.path.abspath(_base(info) / value))

    @field_validator("state_url")
    @classmethod
    def _sqlite_relative(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        url = value.get_secret_value() if value else ""
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///":
            return SecretStr("sqlite:///" + os.path.abspath(_base(info) / url.removeprefix("sqlite:///")))
        return value

    @field_validator("organisations", mode="before")
    @classmethod
    def _default_queues(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: {"queue": k, **v} if isinstance(v, dict) else v for k, v in value.items()}

    @property
    def database_url(self) -> str:
        """The state database URL, with its password: never log or print it."""
        if self.state_url is not None:
            return self.state_url.get_secret_value()
        return f"sqlite:///{self.workspace / 'state.db'}"

    def show(self) -> str:
        """The effective configuration as YAML, secrets masked: what ``config show`` prints."""
        return yaml.safe_dump(self.public(), sort_keys=False, default_flow_style=False)

    def public(self) -> dict[str, Any]:
        """The effective configuration as plain data with every secret masked."""
        data = self.model_dump(mode="json")
        data["state_url"] = redact_url(self.database_url)
        for section, key in (("loops", "timeout"), ("loops", "metadata_timeout"), ("loops", "pause")):
            data[section][key] = format_duration(data[section][key])
        data["git"]["timeout"] = format_duration(self.git.timeout)
        data["git"]["freshness"] = format_duration(self.git.freshness)
        data["artifacts"]["prune_interval"] = format_duration(self.artifacts.prune_interval)

        for key in ("backoff", "max_backoff"):
            data["environments"][key] = format_duration(data["environments"][key])
        for key in ("timeout", "backoff", "max_backoff"):
            data["notifications"][key] = format_duration(data["notifications"][key])
        if data["notifications"]["smtp"]:
            data["notifications"]["smtp"]["timeout"] = format_duration(
                data["notifications"]["smtp"]["timeout"]
            )
        data["spark"]["conf"] = {k: MASK if SECRET_KEY.search(k) else v for k, v in self.spark.conf.items()}
        for codops, organisation in self.organisations.items():  # names and references, never values
            shown = data["organisations"][codops]
            shown["env"] = sorted(organisation.env)
            shown["secrets"] = {name: ref.where() for name, ref in sorted(organisation.secrets.items())}
        return data


def redact_url(url: str) -> str:
    """``url`` with any password replaced by a mask (``postgresql://peach:***@db/peach``)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}"
        return urlunsplit(parts._replace(netloc=netloc + (f":{parts.port}" if parts.port else "")))
    except ValueError:
        return MASK


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (else ``$PEACH_CONFIG``, else the embedded default) with ``PEACH_*`` overrides."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    if path is None:
        return default_config(environ)
    try:
        doc = load_bytes(path.read_bytes())
    except YamlError as exc:
        raise ConfigError(f"{path}:{exc.line or 1}: {exc.message}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{path}:1: the configuration must be a mapping of keys")
    return _build(doc.data, path.parent, environ, lambda loc: f"{path}:{doc.line_of(loc)}")


def default_config(environ: Mapping[str, str] | None = None) -> Config:
    """The embedded default: ``./peach-workspace``, local Spark, SQLite, and one organisation
    ``default`` whose repository is the quick start's sample at ``<workspace>/sample-repo``."""
    environ = os.environ if environ is None else environ
    workspace = Path(os.path.abspath(environ.get("PEACH_WORKSPACE") or DEFAULT_WORKSPACE))
    data = {
        "workspace": str(workspace),
        "spark": {"master": "local[*]", "deploy_mode": "client"},
        "organisations": {DEFAULT_ORGANISATION: {"repositories": [{"url": str(workspace / "sample-repo")}]}},
    }
    return _build(data, Path.cwd(), environ, lambda loc: "embedded default configuration")


def _build(data: dict[str, Any], base: Path, environ: Mapping[str, str], where: Any) -> Config:
    overridden: dict[tuple[str, ...], str] = {}
    for name, key in ENVIRONMENT.items():
        if environ.get(name):
            _set(data, key, _env_value(name, environ[name]))
            overridden[key] = name
    try:
        return Config.model_validate(data, context={"base": base})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(part for part in error["loc"] if part != "[key]")
            dotted = ".".join(str(part) for part in loc) or "(top)"
            env = next((n for k, n in overridden.items() if loc[: len(k)] == k), None)
            origin = f"{env} ({dotted})" if env else f"{where(loc)}: {dotted}"
            lines.append(f"{origin}: {_message(error)}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def _env_value(name: str, value: str) -> Any:
    if name == "PEACH_YARN_RESOURCEMANAGERS":
        return [part.strip() for part in value.split(",") if part.strip()]
    if name in ("PEACH_WORKSPACE", "PEACH_ARTIFACTS_ROOT"):
        return os.path.abspath(value)  # relative to where the service starts, as usual for variables
    if name == "PEACH_STATE_URL" and value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(value.removeprefix("sqlite:///"))
    return value


def _set(data: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    for part in key[:-1]:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    data[key[-1]] = value


def _message(error: Any) -> str:
    """pydantic's message, never its ``input`` (which may be a secret)."""
    if error["type"] == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r}{_did_you_mean(error['loc'])}"
    if error["type"] == "missing":
        return "missing required key"
    return str(error["msg"]).removeprefix("Value error, ")


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    containers: dict[str, type[BaseModel]] = {
        "organisations": OrganisationSettings,
        "repositories": Repository,
        "secrets": SecretRef,
    }
    model: type[BaseModel] = Config
    skip = False
    for part in loc[:-1]:
        if skip:  # the codops key or the list index under a container
            skip = False
        elif part in containers:
            model, skip = containers[part], True
        else:
            field = model.model_fields.get(str(part))
            annotation = field.annotation if field else None
            # an optional section (``smtp: SmtpSettings | None``): its model
            annotation = next((a for a in get_args(annotation) if isinstance(a, type)), annotation)
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return ""
            model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
