"""Remote branch heads, asked with ``git ls-remote`` and shared for a short while.

A run's repository is synced just before it starts. Asking the remote for the branch head is one round
trip; only a head that moved is fetched. One answer serves every sync of the same (URL, branch), in any
organisation, for ``freshness`` seconds: that is the bound on "the head at the time of the run". A push
webhook (``changed``) ends the answer's life at once, so the next sync asks again. At most ``parallel``
git network operations (ls-remote, fetch) run at a time, across all organisations.
"""

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit


class RemoteHeads:
    def __init__(
        self, freshness: float = 0.0, parallel: int = 8, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.freshness, self._clock = freshness, clock
        self.slots = threading.BoundedSemaphore(parallel)  # held around every git network operation
        self._answers: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def head(self, url: str, branch: str, ask: Callable[[], str]) -> str:
        """The head of ``branch`` at ``url``: a fresh enough shared answer, or ``ask()``'s (in a slot)."""
        key = (url, branch)
        with self._lock:
            known = self._answers.get(key)
        if known is not None and self._clock() - known[1] < self.freshness:
            return known[0]
        at = self._clock()
        with self.slots:
            head = ask()
        self.learned(url, branch, head, at)
        return head

    def learned(self, url: str, branch: str, head: str, at: float | None = None) -> None:
        """``head`` is what ``branch`` pointed at, at ``at`` (now): a fetch saw it."""
        with self._lock:
            self._answers[(url, branch)] = (head, self._clock() if at is None else at)

    def changed(self, url: str, branch: str) -> None:
        """The branch moved (a push webhook said so): the next sync asks the remote."""
        with self._lock:
            self._answers.pop((url, branch), None)


def repository_key(url: str) -> str:
    """One spelling for every URL of a repository: host and path, lowercased, without scheme, user, port,
    ``.git`` or trailing slash (``git@host:org/repo.git`` and ``https://host/org/repo`` agree)."""
    url = url.strip()
    if "://" not in url and ":" in url.split("/", 1)[0]:  # scp-like ssh: git@host:org/repo.git
        url = "ssh://" + url.replace(":", "/", 1)
    parts = urlsplit(url if "://" in url else f"file://{url}")
    path = parts.path.rstrip("/").removesuffix(".git")
    return f"{(parts.hostname or '').lower()}/{path.lstrip('/')}".lower()
