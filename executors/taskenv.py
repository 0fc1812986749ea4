"""What a run receives from its organisation: plain settings (``env``) and secrets, read when it starts.

An organisation's ``secrets`` are references (``{env: VAR}`` in the scheduler's environment, or
``{file: PATH}``), read at the moment a run is prepared, so a rotated secret is picked up by the next run
without a restart. A task gets every secret of its organisation unless its YAML narrows them
(``secrets: [REDIS_URL]``); it never gets another organisation's. A secret that cannot be read fails that
run before anything starts, naming the secret and why; nothing else is affected.

How the values reach the task is the executor's business: environment variables of the run's process
(python executor; spark with a local driver), or a private file on YARN (``executors.spark``). Every
value, whatever the way, is masked in the run's log (``executors.masking``).
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from executors.masking import MIN_LENGTH, Masker
from scheduler.config import OrganisationSettings
from scheduler.errors import ConfigError, ExecutionError
from scheduler.spec.definitions import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskEnv:
    """One run's organisation settings and secret values (never log or show ``secrets``)."""

    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    def masker(self) -> Masker:
        return Masker(self.secrets.values())


def resolve(
    organisation: OrganisationSettings | None, task: Task, run_id: str, environ: Mapping[str, str]
) -> TaskEnv:
    """The run's settings and secrets, read now; raises ``ExecutionError`` naming a secret it cannot read."""
    if organisation is None:
        if task.definition.secrets:
            raise ExecutionError(
                f"run {run_id}: task {task.key} asks for secrets, but organisation {task.codops!r} is not "
                "configured"
            )
        return TaskEnv()
    wanted = task.definition.secrets
    names = sorted(organisation.secrets) if wanted is None else list(wanted)
    secrets = {}
    for name in names:
        ref = organisation.secrets.get(name)
        if ref is None:
            raise ExecutionError(
                f"run {run_id}: task {task.key} asks for secret {name}, which organisation "
                f"{task.codops!r} does not have"
            )
        try:
            secrets[name] = ref.read(environ)
        except ConfigError as exc:
            raise ExecutionError(
                f"run {run_id}: secret {name} ({ref.where()}) cannot be read: {exc}"
            ) from None
        if len(secrets[name]) < MIN_LENGTH:
            log.warning(
                "run %s (%s): secret %s is shorter than %d characters: it is not masked in the run's log",
                run_id,
                task.key,
                name,
                MIN_LENGTH,
            )
    return TaskEnv(dict(organisation.env), secrets)


def organisation_masker(organisation: OrganisationSettings | None, environ: Mapping[str, str]) -> Masker:
    """Every secret of an organisation that can be read now (for a run re-attached after a restart, whose
    task is not known any more: masking more than it received is harmless)."""
    values = []
    for ref in (organisation.secrets if organisation else {}).values():
        try:
            values.append(ref.read(environ))
        except ConfigError:
            continue
    return Masker(values)
