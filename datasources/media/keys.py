"""API keys: which environment variables may hold them, and which hosts may receive them.

A run config is data a user may copy from anywhere, so it must not be able to turn the
pipeline into a way of sending secrets elsewhere: it can only *choose among* the variables
listed here (it cannot name ``AWS_SECRET_ACCESS_KEY``), and a provider's key is only sent to
that provider's own host — or to a host the operator trusts through the environment
(``KG4REC_API_HOSTS=host[:port],...``, e.g. a company proxy or a test server), never one the
run config alone points at.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

#: Per provider: the environment variables that may hold its key (the first is the default).
KEY_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "omdb": ("OMDB_API_KEY", "KG4REC_OMDB_API_KEY"),
    "tmdb": ("TMDB_API_KEY", "KG4REC_TMDB_API_KEY"),
}
#: Per provider: the hosts of its real API.
PROVIDER_HOSTS: Mapping[str, tuple[str, ...]] = {
    "omdb": ("www.omdbapi.com", "omdbapi.com"),
    "tmdb": ("api.themoviedb.org",),
}
TRUSTED_HOSTS_ENV = "KG4REC_API_HOSTS"


class ApiKeyPolicyError(ValueError):
    """A run config asked for a key variable or key destination that is not allowed."""


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1].lower()


def resolve_api_keys(variables: Mapping[str, str], endpoints: Mapping[str, str],
                     environ: Mapping[str, str]) -> dict[str, str]:
    """The keys to use, per provider: ``variables`` names the environment variable of each
    provider's key, ``endpoints`` the base URL its requests go to.

    Raises :class:`ApiKeyPolicyError` for a variable outside :data:`KEY_VARIABLES` and for a
    key that would go to a host that is neither the provider's nor trusted by the operator."""
    trusted = {h.strip().lower() for h in environ.get(TRUSTED_HOSTS_ENV, "").split(",") if h.strip()}
    keys = {}
    for provider, variable in variables.items():
        allowed = KEY_VARIABLES[provider]
        if variable not in allowed:
            raise ApiKeyPolicyError(
                f"{provider}_api_key_env: {variable!r} is not a {provider} key variable; "
                f"use one of {', '.join(allowed)}")
        key = environ.get(variable, "").strip()
        if not key:
            continue
        host = _host(endpoints[provider])
        if host not in PROVIDER_HOSTS[provider] and host not in trusted:
            raise ApiKeyPolicyError(
                f"the {provider} key in {variable} is sent only to "
                f"{' / '.join(PROVIDER_HOSTS[provider])}, but the {provider} endpoint is {host}; "
                f"if that host is yours, trust it with {TRUSTED_HOSTS_ENV}={host}")
        keys[provider] = key
    return keys
