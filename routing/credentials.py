"""Whether a deployment can be called for real from this environment, and if not, what to set.

A deployment is configured when its key variable is set (or one of its provider's alternates:
GOOGLE_API_KEY for Gemini) and it has an endpoint: its provider's own API, the deployment's
`base_url`, or its provider's endpoint variable (AZURE_OPENAI_ENDPOINT, OLLAMA_HOST). A local
server (Ollama) is used only once its endpoint variable says where it runs: a plain request
never waits on a server that is not there. The built-in emulator, when enabled, stands in for
every deployment in "always" mode, and for the deployments that are not configured in "auto"
mode. Routing leaves out what is neither; a submission nothing configured can serve is a 422
naming the variables to set.

Pure: the environment is passed in. The API, the dispatcher and the provider workers read the
same variables, so they agree on what can be called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from core.providers import Endpoint, provider_spec
from routing.catalog import Catalog, Deployment

# A base_url on one of these hosts is an example to replace (the default catalog's Azure
# resource), never a real endpoint.
PLACEHOLDER_HOSTS = ("example.com", "example.org", "example.net", "example-resource.openai.azure.com")


@dataclass(frozen=True)
class Resolution:
    """Where a deployment's calls go, or why they cannot go anywhere real."""

    base_url: str | None  # None: the SDK's default endpoint
    key_names: tuple[str, ...]  # the key variables read, in order (empty: no key)
    key: str | None
    problem: str | None  # what to set; None when configured


def _placeholder(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return any(host == p or host.endswith("." + p) for p in PLACEHOLDER_HOSTS)


def resolve(deployment: Deployment, env: Mapping[str, str]) -> Resolution:
    spec = provider_spec(deployment.provider)
    key_env = deployment.api_key_env
    names = (key_env, *spec.key_env_fallbacks) if key_env and key_env == spec.key_env else (key_env,)
    names = tuple(n for n in names if n)
    key = next((env[n] for n in names if env.get(n)), None)
    base = (
        deployment.spec.base_url
        if deployment.spec.base_url and not _placeholder(deployment.spec.base_url)
        else None
    )
    if base is None and spec.endpoint_env and env.get(spec.endpoint_env):
        base = _endpoint_from_env(spec.endpoint.value, env[spec.endpoint_env])
    problems = []
    if names and not key:
        problems.append(f"set {' or '.join(names)}")
    if base is None and spec.endpoint is not Endpoint.SDK_DEFAULT:
        where = f"{spec.endpoint_env} or " if spec.endpoint_env else ""
        problems.append(f"set {where}base_url for deployment {deployment.name!r} in the catalog")
    return Resolution(base, names, key, "; ".join(problems) or None)


def _endpoint_from_env(kind: str, value: str) -> str:
    """OLLAMA_HOST is a host (`localhost:11434` or a URL); its OpenAI-compatible API is at /v1."""
    url = value if "://" in value else f"http://{value}"
    if kind == Endpoint.LOCAL.value and not urlparse(url).path.rstrip("/"):
        url = url.rstrip("/") + "/v1"
    return url


def emulated(problem: str | None, *, emulator_url: str | None, emulator_mode: str) -> bool:
    """Whether the built-in emulator answers this deployment's calls."""
    if emulator_url is None:
        return False
    return emulator_mode == "always" or (emulator_mode == "auto" and problem is not None)


def unavailable(
    catalog: Catalog, env: Mapping[str, str], *, emulator_url: str | None, emulator_mode: str
) -> dict[str, str]:
    """The deployments nothing can answer from this environment, each with what to set."""
    out = {}
    for name, deployment in catalog.deployments.items():
        problem = resolve(deployment, env).problem
        if problem is not None and not emulated(
            problem, emulator_url=emulator_url, emulator_mode=emulator_mode
        ):
            out[name] = problem
    return out
