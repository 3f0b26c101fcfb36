"""JSON Schemas of the Agones resources ``deploy/agones/`` uses, transcribed from Agones' CRDs.

Source: the ``openAPIV3Schema`` of ``install/helm/agones/templates/crds/``
in googleforgames/agones (``_gameserverspecschema.yaml``, ``fleet.yaml``,
``_fleetautoscalerpolicy.yaml``, ``fleetautoscaler.yaml``) and the Counter
fields of the GameServer spec (``counters: {NAME: {count, capacity}}``).
Field names, types, enums and bounds are the CRDs'; where the CRDs let
unknown fields through (Kubernetes would prune them silently), these
schemas refuse them (``additionalProperties: false``), so a misspelt key
(``periodSecond``) fails here instead of vanishing on the cluster. The pod
template is checked only where the CRD checks it (containers, name, image)
plus the fields our manifests rely on.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["FLEET", "FLEET_AUTOSCALER", "GAMESERVER"]

_DNS_LABEL: Final = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_INT_OR_STRING: Final = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
_PORT_NUMBER: Final = {"type": "integer", "minimum": 1, "maximum": 65535}
_STRINGS: Final = {"type": "object", "additionalProperties": {"type": "string"}}

_META: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": _DNS_LABEL},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STRINGS,
        "annotations": _STRINGS,
    },
    "additionalProperties": False,
}

_CONTAINER: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {
        "name": {"type": "string", "maxLength": 63, "pattern": _DNS_LABEL},
        "image": {"type": "string", "minLength": 1},
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "securityContext": {"type": "object"},
        "resources": {
            "type": "object",
            "properties": {"requests": _STRINGS, "limits": _STRINGS},
            "additionalProperties": False,
        },
        "volumeMounts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "mountPath"],
                "properties": {"name": {"type": "string"}, "mountPath": {"type": "string"}},
            },
        },
        "env": {"type": "array"},
        "args": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}

_POD_TEMPLATE: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
                "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
                "securityContext": {"type": "object"},
                "volumes": {"type": "array"},
            },
        },
    },
}


def _resource(api_version: str, kind: str, spec: dict[str, Any], *, named: bool) -> dict[str, Any]:
    """A whole resource: apiVersion, kind, metadata (``name`` required if ``named``), spec."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {**_META, "required": ["name"]} if named else _META,
            "spec": spec,
        },
        "additionalProperties": False,
    }


#: A GameServer's spec (``_gameserverspecschema.yaml``) with Counters.
GAMESERVER_SPEC: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["template"],
    "properties": {
        "template": _POD_TEMPLATE,
        "container": {"type": "string", "maxLength": 63, "pattern": _DNS_LABEL},
        "ports": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "portPolicy": {"enum": ["Dynamic", "Static", "Passthrough", "None"]},
                    "protocol": {"enum": ["UDP", "TCP", "TCPUDP"]},
                    "container": {"type": "string"},
                    "containerPort": _PORT_NUMBER,
                    "hostPort": _PORT_NUMBER,
                },
                "additionalProperties": False,
            },
        },
        "sdkServer": {
            "type": "object",
            "properties": {
                "logLevel": {"enum": ["Error", "Info", "Debug", "Trace"]},
                "grpcPort": _PORT_NUMBER,
                "httpPort": _PORT_NUMBER,
            },
            "additionalProperties": False,
        },
        "scheduling": {"enum": ["Packed", "Distributed"]},
        "health": {
            "type": "object",
            "properties": {
                "disabled": {"type": "boolean"},
                "initialDelaySeconds": {"type": "integer", "minimum": 0, "maximum": 2147483648},
                "periodSeconds": {"type": "integer", "minimum": 0, "maximum": 2147483648},
                "failureThreshold": {"type": "integer", "minimum": 1, "maximum": 2147483648},
            },
            "additionalProperties": False,
        },
        "players": {
            "type": "object",
            "properties": {"initialCapacity": {"type": "integer", "minimum": 0}},
            "additionalProperties": False,
        },
        "counters": {
            "type": "object",
            "maxProperties": 1000,
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "minimum": 0},
                    "capacity": {"type": "integer", "minimum": 0},
                },
                "additionalProperties": False,
            },
        },
        "lists": {"type": "object"},
        "eviction": {"type": "object"},
    },
    "additionalProperties": False,
}

GAMESERVER: Final = _resource("agones.dev/v1", "GameServer", GAMESERVER_SPEC, named=False)

FLEET: Final = _resource(
    "agones.dev/v1",
    "Fleet",
    {
        "type": "object",
        "required": ["template"],
        "properties": {
            "replicas": {"type": "integer", "minimum": 0},
            "scheduling": {"enum": ["Packed", "Distributed"]},
            "strategy": {
                "type": "object",
                "properties": {
                    "type": {"enum": ["Recreate", "RollingUpdate"]},
                    "rollingUpdate": {
                        "type": "object",
                        "properties": {
                            "maxSurge": _INT_OR_STRING,
                            "maxUnavailable": _INT_OR_STRING,
                        },
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            },
            "priorities": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "type": {"enum": ["Counter", "List"]},
                        "key": {"type": "string"},
                        "order": {"enum": ["Ascending", "Descending"]},
                    },
                    "additionalProperties": False,
                },
            },
            "allocationOverflow": {"type": "object"},
            "template": {
                "type": "object",
                "required": ["spec"],
                "properties": {"metadata": _META, "spec": GAMESERVER_SPEC},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    named=True,
)

_COUNTER_POLICY: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["key", "bufferSize", "maxCapacity"],
    "properties": {
        "key": {"type": "string"},
        "minCapacity": {"type": "integer", "minimum": 0},
        "maxCapacity": {"type": "integer", "minimum": 1},
        "bufferSize": _INT_OR_STRING,
    },
    "additionalProperties": False,
}

FLEET_AUTOSCALER: Final = _resource(
    "autoscaling.agones.dev/v1",
    "FleetAutoscaler",
    {
        "type": "object",
        "required": ["fleetName", "policy"],
        "properties": {
            "fleetName": {"type": "string", "minLength": 1},
            "policy": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["Buffer", "Webhook", "Counter", "List", "Chain"]},
                    "buffer": {"type": "object"},
                    "webhook": {"type": "object"},
                    "counter": _COUNTER_POLICY,
                    "list": _COUNTER_POLICY,
                },
                "additionalProperties": False,
            },
            "sync": {
                "type": "object",
                "properties": {
                    "type": {"enum": ["FixedInterval"]},
                    "fixedInterval": {
                        "type": "object",
                        "required": ["seconds"],
                        "properties": {"seconds": {"type": "integer", "minimum": 1}},
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    named=True,
)
