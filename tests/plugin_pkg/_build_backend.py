"""A minimal in-tree PEP 517 build backend: enough for ``pip install`` of this folder.

It packs ``demo_plugins/`` and a ``.dist-info`` (METADATA, WHEEL,
entry_points.txt, RECORD) built from ``pyproject.toml``'s ``[project]`` table
into a pure-Python wheel, with nothing but the standard library, so pip needs
neither network nor setuptools/wheel to install it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
import zipfile
from pathlib import Path
from typing import Any

__all__ = [
    "build_wheel",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_wheel",
]

_ROOT = Path(__file__).resolve().parent
_PACKAGE = "demo_plugins"


def _project() -> dict[str, Any]:
    with (_ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, Any] = tomllib.load(f)["project"]
    return project


def _dist_info_name(project: dict[str, Any]) -> str:
    name = re.sub(r"[-_.]+", "_", project["name"]).lower()
    return f"{name}-{project['version']}"


def _metadata_files(project: dict[str, Any]) -> dict[str, str]:
    """The ``.dist-info`` files (but RECORD), by file name."""
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3')}",
        *(f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])),
    ]
    wheel = ["Wheel-Version: 1.0", "Generator: _build_backend", "Root-Is-Purelib: true"]
    wheel.append("Tag: py3-none-any")
    entry_points = []
    for group, points in project.get("entry-points", {}).items():
        entry_points.append(f"[{group}]")
        entry_points.extend(f"{name} = {target}" for name, target in points.items())
        entry_points.append("")
    return {
        "METADATA": "\n".join(metadata) + "\n",
        "WHEEL": "\n".join(wheel) + "\n",
        "entry_points.txt": "\n".join(entry_points),
    }


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    """Nothing beyond the standard library."""
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Any = None) -> str:
    """Write the ``.dist-info`` folder (without RECORD) and return its name."""
    project = _project()
    dist_info = _dist_info_name(project) + ".dist-info"
    folder = Path(metadata_directory) / dist_info
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in _metadata_files(project).items():
        (folder / name).write_text(text, encoding="utf-8")
    return dist_info


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(
    wheel_directory: str, config_settings: Any = None, metadata_directory: str | None = None
) -> str:
    """Build ``<name>-<version>-py3-none-any.whl`` in ``wheel_directory``; return its name."""
    project = _project()
    base = _dist_info_name(project)
    dist_info = f"{base}.dist-info"
    files: dict[str, bytes] = {}
    for source in sorted((_ROOT / _PACKAGE).rglob("*.py")):
        files[source.relative_to(_ROOT).as_posix()] = source.read_bytes()
    for name, text in _metadata_files(project).items():
        files[f"{dist_info}/{name}"] = text.encode()
    record = [_record_line(path, data) for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel_name = f"{base}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / wheel_name, "w", zipfile.ZIP_DEFLATED) as whl:
        for path, data in files.items():
            whl.writestr(path, data)
    return wheel_name
