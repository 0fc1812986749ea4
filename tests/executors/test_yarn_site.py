"""Reading the cluster's yarn-site.xml: ResourceManager addresses (HA, HTTPS), the log server, the minimum
allocation, Hadoop's ${name} references; a missing or broken file is an empty site."""

from pathlib import Path

import pytest

from executors.yarn.site import ClusterSite, endpoints, read_site
from scheduler.config import YarnSettings
from tests.helpers.hadoop import write_configuration


def site(tmp_path: Path, properties: dict[str, str], variable: str = "HADOOP_CONF_DIR") -> ClusterSite:
    rows = "".join(f"<property><name>{k}</name><value>{v}</value></property>" for k, v in properties.items())
    (tmp_path / "yarn-site.xml").write_text(f'<?xml version="1.0"?><configuration>{rows}</configuration>')
    return read_site({variable: str(tmp_path)})


def test_a_single_resourcemanager_from_its_webapp_address_or_hostname(tmp_path: Path) -> None:
    assert site(tmp_path, {"yarn.resourcemanager.webapp.address": "rm.example:8088"}).resourcemanagers() == [
        "http://rm.example:8088"
    ]
    assert site(tmp_path, {"yarn.resourcemanager.hostname": "rm.example"}).resourcemanagers() == [
        "http://rm.example:8088"
    ]


def test_ha_resourcemanagers_in_rm_ids_order_and_https_only(tmp_path: Path) -> None:
    properties = {
        "yarn.resourcemanager.ha.enabled": "true",
        "yarn.resourcemanager.ha.rm-ids": "rm2, rm1",
        "yarn.resourcemanager.hostname.rm1": "one.example",
        "yarn.resourcemanager.hostname.rm2": "two.example",
        "yarn.resourcemanager.webapp.address.rm2": "${yarn.resourcemanager.hostname.rm2}:18088",
    }
    assert site(tmp_path, properties).resourcemanagers() == [
        "http://two.example:18088",
        "http://one.example:8088",
    ]
    properties["yarn.http.policy"] = "HTTPS_ONLY"
    assert site(tmp_path, properties).resourcemanagers() == [
        "https://two.example:8090",
        "https://one.example:8090",
    ]


def test_a_bind_all_address_takes_the_hostname(tmp_path: Path) -> None:
    properties = {
        "yarn.resourcemanager.webapp.address": "0.0.0.0:8088",
        "yarn.resourcemanager.hostname": "rm",
    }
    assert site(tmp_path, properties).resourcemanagers() == ["http://rm:8088"]
    assert site(tmp_path, {"yarn.resourcemanager.webapp.address": "0.0.0.0:8088"}).resourcemanagers() == []


def test_the_log_server_from_the_web_service_url_then_a_rest_log_server_url(tmp_path: Path) -> None:
    both = {
        "yarn.log.server.url": "http://ahs:8188/applicationhistory/logs",
        "yarn.log.server.web-service.url": "http://ahs:8188/ws/v1/applicationhistory/",
    }
    assert site(tmp_path, both).log_server() == "http://ahs:8188/ws/v1/applicationhistory"
    page_only = {"yarn.log.server.url": "http://jhs:19888/jobhistory/logs"}
    assert site(tmp_path, page_only).log_server() is None  # a page for people is not a REST base
    rest = {"yarn.log.server.url": "http://jhs:19888/ws/v1/history"}
    assert site(tmp_path, rest).log_server() == "http://jhs:19888/ws/v1/history"


def test_minimum_allocation_defaults_to_hadoops_1024(tmp_path: Path) -> None:
    assert site(tmp_path, {}).minimum_allocation_mb() == 1024
    assert site(tmp_path, {"yarn.scheduler.minimum-allocation-mb": "256"}).minimum_allocation_mb() == 256
    assert site(tmp_path, {"yarn.scheduler.minimum-allocation-mb": "lots"}).minimum_allocation_mb() == 1024


def test_yarn_conf_dir_wins_and_references_expand(tmp_path: Path) -> None:
    properties = {"base": "rm.example", "yarn.resourcemanager.webapp.address": "${base}:${port}"}
    found = site(tmp_path, properties, "YARN_CONF_DIR")
    assert found.path == tmp_path / "yarn-site.xml"
    assert found.get("yarn.resourcemanager.webapp.address") == "rm.example:${port}"  # unknown stays
    assert found.resourcemanagers() == []  # an address with an unresolved reference is no address


@pytest.mark.parametrize("content", [None, "<configuration><property>", ""])
def test_a_missing_or_broken_file_is_an_empty_site(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "yarn-site.xml").write_text(content)
    found = read_site({"HADOOP_CONF_DIR": str(tmp_path)})
    assert (found.resourcemanagers(), found.log_server(), found.minimum_allocation_mb()) == ([], None, 1024)
    assert read_site({}).path is None


def test_the_real_suite_cluster_configuration_reads_back(tmp_path: Path) -> None:
    write_configuration(tmp_path)
    found = read_site({"HADOOP_CONF_DIR": str(tmp_path / "conf")})
    assert found.resourcemanagers() == ["http://127.0.0.1:8088"]
    assert found.log_server() == "http://127.0.0.1:8188/ws/v1/applicationhistory"
    assert found.minimum_allocation_mb() == 256


def test_operator_settings_win_over_the_site_and_say_where_they_came_from(tmp_path: Path) -> None:
    write_configuration(tmp_path)
    found = read_site({"HADOOP_CONF_DIR": str(tmp_path / "conf")})
    from_site = endpoints(YarnSettings(), found)
    assert from_site.resourcemanagers == ("http://127.0.0.1:8088",)
    assert from_site.log_server == "http://127.0.0.1:8188/ws/v1/applicationhistory"
    assert from_site.resourcemanagers_from == from_site.log_server_from == f"yarn-site.xml ({found.path})"
    mine = YarnSettings(resourcemanagers=("http://rm:8088",), log_server="http://jhs:19888/ws/v1/history/")
    given = endpoints(mine, found)
    assert (given.resourcemanagers, given.log_server) == (
        ("http://rm:8088",),
        "http://jhs:19888/ws/v1/history",
    )
    assert given.resourcemanagers_from == given.log_server_from == "the operator configuration"
    nothing = endpoints(YarnSettings(), ClusterSite())
    assert (nothing.resourcemanagers, nothing.log_server) == ((), None)
    assert nothing.log_server_from.startswith("nowhere")
