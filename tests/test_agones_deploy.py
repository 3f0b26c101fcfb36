"""The deployment files: Agones manifests against Agones' CRD schemas, the Dockerfile linted.

Kubernetes, Agones and docker cannot run here. What is verified: each
manifest against the JSON Schema transcribed from Agones' CRDs
(``tests/agones_schemas.py``, stricter on unknown keys), the numbers that
must agree across files (health timing vs ``[agones] health_interval`` and
the watchdog, the Counter's name and capacity, the grace period vs our
stop), the image's config loading and passing the security check, and the
Dockerfile's instructions (slim base, non-root, HEALTHCHECK on /healthz,
exec-form entrypoint on the config it copies). What stays on paper: that
a cluster accepts them, and that the image builds.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from agones_schemas import FLEET, FLEET_AUTOSCALER, GAMESERVER
from dockerfile_parse import DockerfileParser

from supervisor import Config, Supervisor
from supervisor._core._config_agones import DEFAULT_SDK_PORT

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
AGONES = DEPLOY / "agones"
MANIFESTS = {
    "gameserver.yaml": GAMESERVER,
    "fleet.yaml": FLEET,
    "fleetautoscaler.yaml": FLEET_AUTOSCALER,
}
#: Seconds our graceful stop may take beyond the systems' stop deadlines:
#: the final snapshot, the Shutdown call (1.5 s at most) and the services' grace (2 s).
STOP_MARGIN = 10.0


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((AGONES / name).read_text())
    return data


@pytest.fixture(scope="module")
def image_config() -> Config:
    return Config.from_toml(AGONES / "supervisor.toml", env={})


class TestSchemas:
    @pytest.mark.parametrize("name", sorted(MANIFESTS))
    def test_manifest_matches_the_crd_schema(self, name: str) -> None:
        """Each manifest is valid against its resource's schema."""
        schema = MANIFESTS[name]
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(load(name), schema)

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            (("spec", "health", "periodSecond"), 5),  # a misspelt key
            (("spec", "ports", 0, "portPolicy"), "Random"),
            (("spec", "ports", 0, "containerPort"), 70000),
            (("spec", "health", "failureThreshold"), 0),
            (("spec", "sdkServer", "logLevel"), "Verbose"),
            (("spec", "counters", "players", "capacity"), -1),
            (("spec", "template", "spec", "containers"), []),
            (("spec", "template", "spec", "containers", 0, "image"), ""),
            (("spec", "container"), "Supervisor_1"),
        ],
    )
    def test_the_schema_catches_mistakes(self, path: tuple[Any, ...], value: Any) -> None:
        """The check is not vacuous: each of these edits to gameserver.yaml is refused."""
        manifest = copy.deepcopy(load("gameserver.yaml"))
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(manifest, GAMESERVER)


class TestAgreement:
    def test_fleet_template_is_the_gameserver(self) -> None:
        """The Fleet runs exactly the GameServer tried alone."""
        assert load("fleet.yaml")["spec"]["template"]["spec"] == load("gameserver.yaml")["spec"]

    def test_health_timing_fits_our_pings_and_watchdog(self, image_config: Config) -> None:
        """At least two pings per Agones period; a hang the watchdog ends never costs a period."""
        health = load("gameserver.yaml")["spec"]["health"]
        interval = image_config.agones.health_interval
        assert not health["disabled"]
        assert interval <= health["periodSeconds"] / 2
        assert image_config.watchdog.kill_timeout + interval < health["periodSeconds"]
        assert health["failureThreshold"] >= 2  # one late ping is not a replaced server

    def test_counter_and_autoscaler_agree(self, image_config: Config) -> None:
        """The Counter we write, the Fleet's priority and the autoscaler name the same one."""
        spec = load("gameserver.yaml")["spec"]
        name = image_config.agones.players_counter
        assert name in spec["counters"]
        fleet = load("fleet.yaml")
        assert fleet["spec"]["priorities"][0]["key"] == name
        scaler = load("fleetautoscaler.yaml")["spec"]
        assert scaler["fleetName"] == fleet["metadata"]["name"]
        assert scaler["policy"]["type"] == "Counter"
        assert scaler["policy"]["counter"]["key"] == name
        capacity = spec["counters"][name]["capacity"]
        assert image_config.systems.options["players"]["count"] < capacity
        assert scaler["policy"]["counter"]["maxCapacity"] % capacity == 0

    def test_grace_period_covers_our_stop(self, image_config: Config) -> None:
        """SIGTERM: every system's stop deadline, the snapshot and Shutdown fit the grace period."""
        pod = load("gameserver.yaml")["spec"]["template"]["spec"]
        systems = image_config.systems.enabled or ()
        needed = len(systems) * image_config.supervisor.stop_timeout + STOP_MARGIN
        assert pod["terminationGracePeriodSeconds"] >= needed

    def test_sidecar_port_and_container(self) -> None:
        """The sidecar's HTTP port is the one we default to; ``container`` names ours."""
        spec = load("gameserver.yaml")["spec"]
        assert spec["sdkServer"]["httpPort"] == DEFAULT_SDK_PORT
        names = [c["name"] for c in spec["template"]["spec"]["containers"]]
        assert spec["container"] in names

    def test_image_config_passes_the_security_check(self, image_config: Config) -> None:
        """It starts in production: the security check passes (tokens, redaction)."""
        assert image_config.supervisor.phase == "production"
        report = Supervisor(image_config, persist=False).security_report()
        assert report.ok, report


def instructions(name: str) -> list[str]:
    """The arguments of each ``name`` instruction of deploy/Dockerfile, in order."""
    parsed = DockerfileParser(fileobj=io.BytesIO((DEPLOY / "Dockerfile").read_bytes()))
    return [i["value"] for i in parsed.structure if i["instruction"] == name]


class TestDockerfile:
    def test_slim_pinned_base_and_no_add(self) -> None:
        """Every stage starts from python:3.11-slim (a pinned minor, not latest); no ADD."""
        bases = instructions("FROM")
        assert bases
        assert all(b.split()[0] == "python:3.11-slim" for b in bases), bases
        assert not instructions("ADD")

    def test_runs_as_a_non_root_user(self) -> None:
        """The last USER is a numeric non-root uid (runAsNonRoot can check it), the pod's."""
        user = instructions("USER")[-1]
        uid = user.split(":")[0]
        assert uid.isdigit()
        assert int(uid) != 0
        pod = load("gameserver.yaml")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(uid)

    def test_healthcheck_on_healthz_of_the_configured_api(self, image_config: Config) -> None:
        """HEALTHCHECK asks /healthz on the address the image's config listens on."""
        (check,) = instructions("HEALTHCHECK")
        assert "/healthz" in check
        assert f"http://{image_config.api.listen}/healthz" in check
        assert "--timeout=" in check

    def test_entrypoint_runs_the_copied_config(self) -> None:
        """Exec form (signals reach supervisor, not a shell); the config it names is copied."""
        (entry,) = instructions("ENTRYPOINT")
        argv = json.loads(entry)
        assert argv[:2] == ["supervisor", "run"]
        config = argv[argv.index("--config") + 1]
        copies = [c.split() for c in instructions("COPY")]
        assert ["deploy/agones/supervisor.toml", config] in copies
        assert instructions("STOPSIGNAL") == ["SIGTERM"]

    def test_copied_sources_exist_and_pip_keeps_no_cache(self) -> None:
        """Every COPY source is in the repository; pip installs leave no cache in the image."""
        root = DEPLOY.parent
        for args in instructions("COPY"):
            parts = args.split()
            if parts[0].startswith("--from"):
                continue
            for source in parts[:-1]:
                assert (root / source).exists(), source
        for run in instructions("RUN"):
            if "pip " in run:
                assert "--no-cache-dir" in run, run

    def test_exposes_the_game_port(self) -> None:
        """EXPOSE names the GameServer's container port and protocol."""
        port = load("gameserver.yaml")["spec"]["ports"][0]
        expose = instructions("EXPOSE")
        assert f"{port['containerPort']}/{port['protocol'].lower()}" in expose
