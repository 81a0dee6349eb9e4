"""docker-compose.yml kept honest without a Docker engine: services, ports, volumes, health checks, real commands."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import typer
import yaml

from api.config import ServiceSettings
from api.views import check_template
from retrieval.cli import app
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list) and command[0] == "medsearch"
    return [str(part) for part in command[1:]]


def _parse(args: list[str]) -> dict[str, Any]:
    """Parse the arguments exactly as the real CLI would (unknown options or bad values raise)."""
    group: Any = typer.main.get_command(app)
    command = group.commands[args[0]]
    return dict(command.make_context(args[0], args[1:]).params)


def test_services_and_what_they_run(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"api", "indexer", "orthanc"}
    serve = _parse(_command(services["api"]))
    assert serve["host"] == "0.0.0.0" and serve["port"] == 8000
    listen = _parse(_command(services["indexer"]))
    assert listen["ae_title"] == "MEDSEARCH" and listen["port"] == 11112 and listen["allow"] == "ORTHANC"
    assert services["api"]["build"] == services["indexer"]["build"] == "."
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "pip install ." in dockerfile
    assert dockerfile.index("torch==2.13.0") < dockerfile.index("pip install .")  # CPU torch first
    orthanc = services["orthanc"]
    assert str(orthanc["image"]).startswith(("orthancteam/orthanc", "jodogne/orthanc-plugins"))
    assert orthanc["environment"]["DICOM_WEB_PLUGIN_ENABLED"] == "true"
    # Orthanc knows our listener: its AE title, the indexer's host name and the port it listens on
    modalities = json.loads(orthanc["environment"]["ORTHANC__DICOM_MODALITIES"])
    assert ["MEDSEARCH", "indexer", 11112] in modalities.values()
    assert orthanc["environment"]["ORTHANC__DICOM_AET"] == "ORTHANC"  # the one AE the listener allows


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    published = {name: svc.get("ports", []) for name, svc in compose["services"].items()}
    assert published["api"] == ["127.0.0.1:8000:8000"]
    assert published["indexer"] == ["127.0.0.1:11112:11112"]
    assert set(published["orthanc"]) == {"127.0.0.1:8042:8042", "127.0.0.1:4242:4242"}


def test_api_and_indexer_share_the_data_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    for name in ("api", "indexer"):
        mounts = dict(v.split(":", 1) for v in services[name]["volumes"] if not v.startswith("$"))
        assert mounts["medsearch-data"] == "/data"
        assert services[name]["environment"]["MEDSEARCH_DATA_DIR"] == "/data"
    assert {"medsearch-data", "orthanc-db"} <= declared
    assert "orthanc-db:/var/lib/orthanc/db" in services["orthanc"]["volumes"]


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["interval"] and check["retries"] >= 1, name
    api_check = " ".join(compose["services"]["api"]["healthcheck"]["test"])
    assert "127.0.0.1:8000/healthz" in api_check
    echo = " ".join(compose["services"]["indexer"]["healthcheck"]["test"])
    assert "send_c_echo" in echo and "11112" in echo and "ae_title='ORTHANC'" in echo  # an allowed caller
    compile(compose["services"]["indexer"]["healthcheck"]["test"][-1], "healthcheck", "exec")  # valid Python


def test_environment_names_real_settings(compose: dict[str, Any]) -> None:
    known = {f"MEDSEARCH_{name.upper()}" for name in ServiceSettings.model_fields}
    used: set[str] = set()
    for service in compose["services"].values():
        used |= {k for k in service.get("environment", {}) if k.startswith("MEDSEARCH_")}
    assert used and used <= known, sorted(used - known)
    # secrets come from the environment (.env), never from the file itself
    text = COMPOSE.read_text()
    assert re.search(r"MEDSEARCH_API_KEYS: \$\{MEDSEARCH_API_KEYS:\?", text)
    assert re.search(r"MEDSEARCH_DICOMWEB_PASSWORD: \$\{ORTHANC_PASSWORD:\?", text)
    env = compose["services"]["api"]["environment"]
    assert env["MEDSEARCH_DICOMWEB_URL"] == "http://orthanc:8042/dicom-web"
    check_template(env["MEDSEARCH_VIEWER_URL_TEMPLATE"])  # placeholders the service can fill
    assert "{study_instance_uid}" in env["MEDSEARCH_VIEWER_URL_TEMPLATE"]
