"""The release workflow's job matrix: one job per release and device, in the tox environment of its minor."""

from __future__ import annotations

import re

from packaging.version import Version

TORCH = "2.13.0"  # tox.ini's default torch; jobs on GitHub's machines pick the build for their device


JOBS = {
    "cpu": {"runs_on": "ubuntu-latest", "torch": f"torch=={TORCH}+cpu",
            "torch_index": "https://download.pytorch.org/whl/cpu"},
    # PyPI's Linux torch wheels are the CUDA build.
    "cuda": {"runs_on": ["self-hosted", "gpu"], "torch": f"torch=={TORCH}", "torch_index": ""},
}


def tox_minors(tox_ini: str) -> set[str]:
    """The minors that have their own tox environment (lines `4.50: transformers~=4.50.0` of tox.ini)."""
    return set(re.findall(r"^\s*(\d+\.\d+): transformers~=", tox_ini, flags=re.MULTILINE))


def job_matrix(releases: list[Version], *, minors_with_env: set[str], gpu_runner: bool) -> dict:
    """GitHub Actions matrix: one job per release x device (cuda only when a GPU runner is configured)."""
    devices = ["cpu", "cuda"] if gpu_runner else ["cpu"]
    include = []
    for version in releases:
        minor = f"{version.major}.{version.minor}"
        env = minor if minor in minors_with_env else "latest"
        for device in devices:
            suffix = "" if device == "cpu" else f"-{device}"
            include.append({
                "release": str(version),
                "device": device,
                "tox_env": f"py311-transformers-{env}",
                "constraint": f"transformers=={version}",
                "results_file": f"transformers-{version}{suffix}.json",
                **JOBS[device],
            })
    return {"include": include}
