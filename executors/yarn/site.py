"""The cluster's own configuration: ``yarn-site.xml`` in ``YARN_CONF_DIR`` or ``HADOOP_CONF_DIR``.

What the scheduler takes from it when the operator configuration does not say:

- the ResourceManagers' web addresses: ``yarn.resourcemanager.webapp.address`` (``.https.address`` when
  ``yarn.http.policy`` is ``HTTPS_ONLY``), per id of ``yarn.resourcemanager.ha.rm-ids`` when
  ``yarn.resourcemanager.ha.enabled``, else derived from ``yarn.resourcemanager.hostname`` with Hadoop's
  default ports (8088, 8090);
- the server of aggregated container logs: ``yarn.log.server.web-service.url`` (the timeline /
  application-history server ``.../ws/v1/applicationhistory`` on 3.1, the JobHistory server on 3.3+), else
  ``yarn.log.server.url`` when it already names a ``/ws/v1/`` REST base;
- the scheduler's minimum allocation (``yarn.scheduler.minimum-allocation-mb``, default 1024): the Capacity
  Scheduler rounds every container's memory up to a multiple of it.

Values are expanded like Hadoop's ``Configuration`` does for ``${name}`` references to other properties
(unknown references are left as written). A missing or unreadable file is an empty site, never an error.
"""

import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.config import YarnSettings

log = logging.getLogger(__name__)

DEFAULT_MINIMUM_MB = 1024
_REFERENCE = re.compile(r"\$\{([^}$\s]+)\}")


@dataclass(frozen=True)
class ClusterSite:
    """The properties of one ``yarn-site.xml`` (``path`` None: none was found)."""

    path: Path | None = None
    properties: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.properties.get(name)
        if value is None:
            return default
        for _ in range(20):  # Hadoop's own bound on substitution depth
            expanded = _REFERENCE.sub(lambda m: self.properties.get(m.group(1), m.group(0)), value)
            if expanded == value:
                break
            value = expanded
        return value.strip()

    @property
    def https(self) -> bool:
        return (self.get("yarn.http.policy") or "HTTP_ONLY").upper() == "HTTPS_ONLY"

    def resourcemanagers(self) -> list[str]:
        """The ResourceManagers' web URLs, in ``rm-ids`` order for HA; [] when the file names none."""
        if (self.get("yarn.resourcemanager.ha.enabled") or "").lower() == "true":
            ids = [
                i.strip() for i in (self.get("yarn.resourcemanager.ha.rm-ids") or "").split(",") if i.strip()
            ]
            return [url for rm_id in ids if (url := self._webapp(f".{rm_id}"))]
        url = self._webapp("")
        return [url] if url else []

    def _webapp(self, suffix: str) -> str | None:
        scheme, key, port = (
            ("https", "webapp.https.address", 8090) if self.https else ("http", "webapp.address", 8088)
        )
        address = self.get(f"yarn.resourcemanager.{key}{suffix}")
        if not address:
            host = self.get(f"yarn.resourcemanager.hostname{suffix}")
            address = f"{host}:{port}" if host else None
        if not address or "${" in address:
            return None
        host, _, bound = address.rpartition(":")
        if host in ("0.0.0.0", ""):  # noqa: S104 (a bind address names no host to call)
            fallback = self.get(f"yarn.resourcemanager.hostname{suffix}")
            address = f"{fallback}:{bound}" if fallback else None
        return f"{scheme}://{address}" if address else None

    def log_server(self) -> str | None:
        """The REST base that serves aggregated container logs (``<base>/containers/<id>/logs/<file>``)."""
        url = self.get("yarn.log.server.web-service.url")
        if url:
            return url.rstrip("/")
        url = self.get("yarn.log.server.url")
        return url.rstrip("/") if url and "/ws/v1/" in url else None

    def minimum_allocation_mb(self) -> int:
        value = self.get("yarn.scheduler.minimum-allocation-mb")
        try:
            return max(1, int(value)) if value else DEFAULT_MINIMUM_MB
        except ValueError:
            return DEFAULT_MINIMUM_MB


@dataclass(frozen=True)
class Endpoints:
    """Where the scheduler reaches the cluster, and where each answer came from (for ``config show``)."""

    resourcemanagers: tuple[str, ...]
    resourcemanagers_from: str
    log_server: str | None
    log_server_from: str


def endpoints(settings: YarnSettings, site: ClusterSite) -> Endpoints:
    """The operator's ``yarn`` settings where given, else the cluster's yarn-site.xml."""
    where = f"yarn-site.xml ({site.path})"
    if settings.resourcemanagers:
        rms, rms_from = settings.resourcemanagers, "the operator configuration"
    elif found := site.resourcemanagers():
        rms, rms_from = tuple(found), where
    else:
        rms, rms_from = (), "nowhere (no yarn.resourcemanagers, no yarn-site.xml naming one)"
    if settings.log_server:
        server, server_from = settings.log_server.rstrip("/"), "the operator configuration"
    elif found_server := site.log_server():
        server, server_from = found_server, where
    else:
        server, server_from = None, "nowhere: driver logs only from the NodeManager while it keeps them"
    return Endpoints(rms, rms_from, server, server_from)


def conf_dir(environ: Mapping[str, str]) -> Path | None:
    """Where the cluster's configuration is: ``YARN_CONF_DIR`` (YARN's own), else ``HADOOP_CONF_DIR``."""
    for name in ("YARN_CONF_DIR", "HADOOP_CONF_DIR"):
        if environ.get(name) and (Path(environ[name]) / "yarn-site.xml").is_file():
            return Path(environ[name])
    return None


def read_site(environ: Mapping[str, str] | None = None) -> ClusterSite:
    """The cluster's ``yarn-site.xml``, or an empty site when there is none or it cannot be read."""
    directory = conf_dir(os.environ if environ is None else environ)
    if directory is None:
        return ClusterSite()
    path = directory / "yarn-site.xml"
    try:
        root = ET.parse(path).getroot()  # noqa: S314 (the operator's own cluster configuration)
    except (OSError, ET.ParseError) as exc:
        log.warning("the cluster configuration %s cannot be read: %s", path, exc)
        return ClusterSite(path)
    return ClusterSite(path, properties_of(root))


def properties_of(root: ET.Element) -> dict[str, str]:
    """``<configuration><property><name/><value/>`` as a mapping (a daemon's ``/conf`` has the same shape)."""
    properties = {}
    for prop in root.iter("property"):
        name, value = prop.findtext("name"), prop.findtext("value")
        if name:
            properties[name.strip()] = value or ""
    return properties


def parse_properties(data: bytes) -> dict[str, str]:
    return properties_of(ET.fromstring(data))  # noqa: S314 (the cluster's own ResourceManager)
