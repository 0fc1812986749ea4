"""Push webhooks: ``POST /api/v1/hooks/git`` from GitLab, GitHub, Gitea or Forgejo.

A push to a configured repository and branch ends that branch's shared head answer
(``scheduler.repos.heads``) and wakes the organisation's loop, so its next run fetches at once. The
request is verified against the secret named by ``http.webhook_secret_env``, compared in constant time:

- GitLab: ``X-Gitlab-Token`` is the secret itself; the event is ``X-Gitlab-Event: Push Hook``;
- GitHub: ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>``; ``X-GitHub-Event: push``;
- Gitea and Forgejo: ``X-Gitea-Signature`` / ``X-Forgejo-Signature``, the same HMAC in hex without the
  prefix; ``X-Gitea-Event`` / ``X-Forgejo-Event: push``.

Answers, as those servers expect: 401 for a missing or wrong signature (the server shows the delivery as
failed), 400 for a body that is not a push event's JSON, 403 when no secret is configured; 200 for every
verified delivery, also one that changes nothing (another event, an unknown repository or branch), since
GitLab disables a hook that keeps failing. Each delivery is counted in
``peach_webhooks_total{source,outcome}``.
"""

import hashlib
import hmac
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from scheduler.http.context import API, Shared, answers

router = APIRouter(prefix=API, tags=["hooks"])

SIGNATURES = (("X-Gitea-Signature", "gitea"), ("X-Forgejo-Signature", "forgejo"))
URL_FIELDS = ("clone_url", "ssh_url", "git_url", "html_url", "git_http_url", "git_ssh_url", "url", "homepage")


def push_event(source: str, headers: Any) -> bool:
    event = {
        "gitlab": headers.get("X-Gitlab-Event"),
        "github": headers.get("X-GitHub-Event"),
        "gitea": headers.get("X-Gitea-Event"),
        "forgejo": headers.get("X-Forgejo-Event"),
    }.get(source)
    return event in ("Push Hook", "push", None)  # no event header: judge by the body


def pushed(payload: Any) -> tuple[set[str], str]:
    """The repository's URLs and the branch a push event names; ValueError when it is not one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("ref"), str):
        raise ValueError("not a push event: no 'ref'")
    ref: str = payload["ref"]
    urls: set[str] = set()
    for section in ("repository", "project"):
        fields = payload.get(section)
        if isinstance(fields, dict):
            urls.update(fields[k] for k in URL_FIELDS if isinstance(fields.get(k), str))
    if not urls:
        raise ValueError("not a push event: no repository URL")
    return urls, ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ""


async def signed(shared: Shared, request: Request) -> tuple[str, bytes]:
    """The delivery's source and body once it proves it knows the secret: every route here depends on it,
    as the actions depend on the bearer token. 403 without a configured secret, 401 for a missing or
    wrong signature (compared in constant time)."""
    secret = (shared.webhook_secret or "").encode()
    if not secret:
        raise HTTPException(403, f"webhooks are disabled: no secret is set in ${shared.webhook_secret_env}")
    body, headers = await request.body(), request.headers
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    header, gitea = next(((h, name) for h, name in SIGNATURES if h in headers), ("", ""))
    if (token := headers.get("X-Gitlab-Token")) is not None:
        source, verified = "gitlab", hmac.compare_digest(token.encode(), secret)
    elif gitea:
        source, verified = gitea, hmac.compare_digest(headers[header].strip().lower().encode(), digest)
    elif "X-Hub-Signature-256" in headers:
        signature = headers["X-Hub-Signature-256"].strip().lower().encode()
        source, verified = "github", hmac.compare_digest(signature, b"sha256=" + digest)
    else:
        source, verified = "unknown", False
    if not verified:
        shared.metrics.webhook(source, "refused")
        raise HTTPException(401, "the webhook's signature or token is missing or wrong")
    return source, body


Delivery = Annotated[tuple[str, bytes], Depends(signed)]


@router.post(
    "/hooks/git",
    responses=answers(
        _400="not a push event's JSON",
        _401="the signature or token is missing or wrong",
        _403="webhooks are disabled: no secret is configured",
    ),
)
async def git_push(shared: Shared, delivery: Delivery, request: Request) -> dict[str, Any]:
    """A push event: the repositories it changed (``changed``: ``codops: url``), empty when none."""
    source, body = delivery
    if not push_event(source, request.headers):
        shared.metrics.webhook(source, "ignored")
        return {"changed": [], "ignored": "not a push event"}
    try:
        urls, branch = pushed(json.loads(body))
    except ValueError as exc:  # json.JSONDecodeError is one
        shared.metrics.webhook(source, "invalid")
        raise HTTPException(400, f"webhook from {source}: {exc}") from None
    changed = shared.pushed(urls, branch) if branch and shared.pushed is not None else []
    shared.metrics.webhook(source, "changed" if changed else "ignored")
    return {"changed": changed}
