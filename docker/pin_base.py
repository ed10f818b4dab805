"""Re-resolve the base image digest of the Dockerfile from the registry (`make pin-base`).

Reads the tag from the Dockerfile's BASE_IMAGE build arg (every stage starts from it), asks the
registry (Docker Hub's v2 API, anonymous pull token) for the linux/amd64 manifest digest of that tag,
and rewrites the build arg and the digest comment. Without a reachable registry it says so and changes
nothing (exit 1). Usage: python docker/pin_base.py [Dockerfile] [--tag TAG] [--registry URL]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

FROM_RE = re.compile(r"^(ARG BASE_IMAGE=)(?P<repo>[a-z0-9./_-]+):(?P<tag>[A-Za-z0-9._-]+)@(?P<digest>sha256:[0-9a-f]{64})", re.M)
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def resolve(repo: str, tag: str, registry: str = "https://registry-1.docker.io",
            auth: str | None = "https://auth.docker.io/token", platform=("linux", "amd64"), timeout=30) -> str:
    """The digest of `repo:tag` for one platform."""
    import requests

    headers = {"Accept": ", ".join(INDEX_TYPES + MANIFEST_TYPES)}
    if auth:
        token = requests.get(auth, params={"service": "registry.docker.io", "scope": f"repository:{repo}:pull"},
                             timeout=timeout)
        token.raise_for_status()
        headers["Authorization"] = f"Bearer {token.json()['token']}"
    response = requests.get(f"{registry}/v2/{repo}/manifests/{tag}", headers=headers, timeout=timeout)
    response.raise_for_status()
    media = response.headers.get("Content-Type", "").split(";")[0]
    if media in INDEX_TYPES:
        for entry in response.json().get("manifests", []):
            plat = entry.get("platform", {})
            if (plat.get("os"), plat.get("architecture")) == platform:
                return entry["digest"]
        raise LookupError(f"{repo}:{tag} has no {'/'.join(platform)} manifest")
    digest = response.headers.get("Docker-Content-Digest")
    if not digest:
        raise LookupError(f"{repo}:{tag}: registry sent no Docker-Content-Digest")
    return digest


def rewrite(text: str, new_digest: str) -> str:
    old = {m["digest"] for m in FROM_RE.finditer(text)}
    for digest in old:
        text = text.replace(digest, new_digest)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dockerfile", nargs="?", default="Dockerfile")
    parser.add_argument("--tag", help="override the tag read from the FROM line")
    parser.add_argument("--registry", default="https://registry-1.docker.io")
    parser.add_argument("--auth", default="https://auth.docker.io/token", help="token endpoint ('' for none)")
    args = parser.parse_args(argv)
    path = Path(args.dockerfile)
    text = path.read_text()
    match = FROM_RE.search(text)
    if not match:
        print(f"{path}: no ARG BASE_IMAGE pinned as repo:tag@sha256:<digest>", file=sys.stderr)
        return 2
    repo, tag = match["repo"], args.tag or match["tag"]
    if "/" not in repo:
        repo = f"library/{repo}"
    try:
        digest = resolve(repo, tag, registry=args.registry, auth=args.auth or None)
    except Exception as exc:  # no network, registry error: say so, change nothing
        print(f"pin-base: could not resolve {repo}:{tag} ({type(exc).__name__}: {exc}); Dockerfile unchanged",
              file=sys.stderr)
        return 1
    if digest == match["digest"]:
        print(f"pin-base: {repo}:{tag} is still {digest}")
        return 0
    new = rewrite(text, digest)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    tmp.replace(path)
    print(f"pin-base: {repo}:{tag} re-pinned {match['digest']} -> {digest} (commit the Dockerfile)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
