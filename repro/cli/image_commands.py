"""`repro image ...`: the image built and run for real, with stand-ins where this machine lacks the real thing."""

from __future__ import annotations

from repro.cli import options
from repro.cli.output import console


def cmd_rehearse(args) -> int:
    from repro.workflows import image

    doc, out = image.rehearse(output=args.output, ca=args.ca_cert, buildkit=args.buildkit)
    console(stderr=True).print(f"[green]{doc['status']}[/]: {out.text_path}")
    return 0


def cmd_clean(args) -> int:
    from repro.workflows import image

    removed = image.clean()
    console(stderr=True).print("removed: " + (", ".join(removed) if removed else "nothing (no rehearsal image or stand-ins)"))
    return 0


def register(sub, help: str) -> None:
    group = options.group(sub, "image", help=help,
                          description="Build the Dockerfile and run the kit inside the image.", title="image commands",
                          dest="image_command")
    p = options.command(group, "rehearse", handler=cmd_rehearse,
                        help="build the real Dockerfile with stand-ins and run the smoke profile inside it",
                        description="`make image` with stand-ins given as build arguments (a Debian trixie base made "
                        "with mmdebstrap for the CUDA base, CPython 3.11 from Debian's source package served on "
                        "127.0.0.1 for python.org, no PGO/LTO, the machine's CA bundle for a TLS-intercepting proxy), "
                        "then `repro reproduce --profile smoke` natively and inside the image through `make run-image` "
                        "(as `make reproduce` runs it: the caller's uid:gid, data and runs mounted; here --network none "
                        "and no GPUs). Checks, as a table: build time and size, `repro env check` in the image, the "
                        "image identity in the fingerprint, every file under the mounts owned by the caller, traces, "
                        "metrics and values byte-identical to the native run, the entrypoint for a uid that owns "
                        "nothing, the CA nowhere in the image. Exit 1 names the first failed step. Needs a Docker "
                        "engine, mmdebstrap and apt-get (Debian), and the package registries; docs/image.md.",
                        examples=["repro image rehearse", "make image-rehearse",
                                  "repro image rehearse --ca-cert /etc/ssl/certs/ca-certificates.crt --buildkit"])
    options.output(p, "rehearsal directory (default: runs/image-rehearse/<time>)")
    p.add_argument("--ca-cert", metavar="FILE",
                   help="an extra CA for the build's curl and pip (default: /etc/ssl/certs/ca-certificates.crt)")
    p.add_argument("--buildkit", action="store_true", help="build with BuildKit (DOCKER_BUILDKIT=1) instead of the classic builder")
    options.command(group, "clean", handler=cmd_clean,
                    help="remove the rehearsal image, the stand-in base and the cached stand-ins",
                    description="Images are GBs: remove repro:rehearsal, repro-standin-base:trixie, the build cache and "
                    "data/image-standins/.", examples=["repro image clean"])


REGISTER = {"image": register}
