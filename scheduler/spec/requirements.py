"""PEP 508 requirement strings: parsing, normalising, and finding conflicting pins."""

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# A ``name @ url`` requirement is fetched by the environment builder on the scheduler host: a local path
# there could be another organisation's checkout, so only remote schemes are allowed.
REMOTE_SCHEMES = frozenset({"https", "http", "ssh"})


@dataclass(frozen=True)
class Pin:
    """One requirement as written, with where it came from (for messages)."""

    requirement: Requirement
    origin: str

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)


def parse(text: str) -> Requirement:
    """Parse one requirement; pip options (``-r``, ``--index-url``) and bad syntax raise ValueError."""
    if text.strip().startswith("-"):
        raise ValueError(
            f"{text!r}: pip options are not allowed, only requirement strings like 'pandas==2.2.3'"
        )
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"{text!r} is not a valid requirement: {exc}") from None
    if requirement.url is not None:
        scheme = urlsplit(requirement.url).scheme.lower()
        if scheme.rpartition("+")[2] not in REMOTE_SCHEMES:
            raise ValueError(
                f"{text!r}: a requirement may point at a remote URL (https, git+https, git+ssh), "
                "never at files on the scheduler (file:, relative paths)"
            )
    return requirement


def normalise(requirement: Requirement) -> str:
    """Canonical text: lowercase normalised name, sorted extras and specifiers."""
    return _normalise(str(requirement))


@functools.lru_cache(maxsize=4096)
def _normalise(text: str) -> str:
    req = Requirement(text)
    req.name = canonicalize_name(req.name)
    return str(req)


def _exact(requirement: Requirement) -> str | None:
    for spec in requirement.specifier:
        if spec.operator in ("==", "===") and "*" not in spec.version:
            return spec.version
    return None


def conflict(new: Pin, existing: Iterable[Pin]) -> str | None:
    """Why ``new`` cannot share one environment with ``existing``, or None.

    Two exact pins of one package must agree, and an exact pin must satisfy every range given for the
    same package. Ranges against ranges are left to the resolver (reported when the environment builds).
    """
    for old in existing:
        if old.name != new.name or old.requirement.marker != new.requirement.marker:
            continue
        for pinned, other in ((_exact(new.requirement), old), (_exact(old.requirement), new)):
            if pinned is not None and not other.requirement.specifier.contains(pinned, prereleases=True):
                return (
                    f"conflicting pins for {new.name}: {str(new.requirement)!r} ({new.origin}) "
                    f"and {str(old.requirement)!r} ({old.origin})"
                )
    return None
