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
                          description="Your paper's image from its task file's [environment] (lock, build, verify); "
                          "the kit's own image built with stand-ins and run (rehearse, clean).", title="image commands",
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
    options.ca_cert(p, "the build's curl and pip (default: /etc/ssl/certs/ca-certificates.crt)")
    p.add_argument("--buildkit", action="store_true", help="build with BuildKit (DOCKER_BUILDKIT=1) instead of the classic builder")
    options.command(group, "clean", handler=cmd_clean,
                    help="remove the rehearsal image, the stand-in base and the cached stand-ins",
                    description="Images are GBs: remove repro:rehearsal, repro-standin-base:trixie, the build cache and "
                    "data/image-standins/.", examples=["repro image clean"])
    register_paper(group)


# ---------------------------------------------------------------- the paper's own image (a task file's [environment])


def cmd_lock(args) -> int:
    from repro.workflows import image_lock, task_file

    path, doc = image_lock.lock(task_file.read(args.file), snapshot=not args.no_snapshot, kit_ref=args.kit_image)
    apt = doc["apt"]
    console(stderr=True).print(
        f"[green]locked[/]: {path}\n  base {doc['base']['ref']} {doc['base']['digest'][:19]}"
        f"{' (a local image id)' if doc['base']['local'] else ''}; Python {doc['python']['version']}; "
        f"{doc['requirements']['packages']} package(s) hashed in {doc['requirements']['lock']}; "
        f"{len(apt['packages'])} apt package(s)" + (f" from the {apt['snapshot']} snapshot" if apt["snapshot"] else ""))
    return 0


def cmd_build(args) -> int:
    from pathlib import Path

    from repro.workflows import image_paper, task_file

    done = image_paper.build(task_file.read(args.file), ca=Path(args.ca_cert) if args.ca_cert else None)
    console(stderr=True).print(f"[green]built[/]: {done['ref']} ({done['image_id'][:19]}), {done['packages']} package(s) "
                               f"exactly as locked ({done['linked']} linked from the kit's environment, {done['installed']} "
                               f"installed), {done['seconds']:.0f} s")
    print(done["ref"])
    return 0


def cmd_verify(args) -> int:
    from pathlib import Path

    from repro.workflows import image_paper, task_file

    same, rows = image_paper.verify(task_file.read(args.file), ca=Path(args.ca_cert) if args.ca_cert else None)
    print("| compared | rebuild | detail |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {row['compared']} | {'same' if row['same'] else '**differs**'} | {row['detail']} |")
    if not same:
        from repro.errors import CheckFailed

        first = next(r for r in rows if not r["same"])
        raise CheckFailed(f"the rebuild differs from the first build: {first['compared']}: {first['detail']}", where=args.file)
    return 0


def register_paper(group) -> None:
    p = options.command(group, "lock", handler=cmd_lock, help="resolve a task file's [environment] into an image lock",
                        description="Everything the paper's image would float on, resolved once into FILE.image.lock.toml "
                        "next to the task file: the base by digest (the kit image by its image id), the Python version, "
                        "each apt package's version and the distribution's snapshot time (Debian: snapshot.debian.org; "
                        "Ubuntu: snapshot.ubuntu.com through apt --snapshot), and the requirements compiled with sha256 "
                        "hashes by pip-compile into FILE.requirements.lock (the kit's pins preferred). Needs a Docker "
                        "engine and PyPI; docs/own-paper.md, \"Your paper's image\".",
                        examples=["repro image lock examples/toy-paper/task.toml",
                                  "repro image lock task.toml --no-snapshot --kit-image repro:rehearsal"])
    p.add_argument("file", metavar="FILE.toml", help="the task file (docs/own-paper.md) with an [environment] table")
    p.add_argument("--no-snapshot", action="store_true",
                   help="pin apt versions from the base's own mirror, without a snapshot archive (a build fails once "
                   "the mirror drops a version)")
    p.add_argument("--kit-image", metavar="REF", help="the kit image to build on (default: $REPRO_KIT_IMAGE or "
                   "repro:0.1.0, what `make image` tags)")
    for name, handler, text, description in (
            ("build", cmd_build, "build the paper's image from its image lock only",
             "Builds repro-paper/NAME:<lock> from FILE.image.lock.toml only: the base by digest, the requirements "
             "with pip --require-hashes (packages hash-identical to the kit's lock are linked from the kit's "
             "environment, not downloaded again), apt packages at their locked versions. Refuses a missing or stale "
             "lock (exit 2) and checks the built environment against the lock (exit 1)."),
            ("verify", cmd_verify, "rebuild the paper's image from its lock and compare it with the first build",
             "Rebuilds with no layer reused and compares with the image `repro image build` made: the recorded "
             "identity, the paper's installed packages, the apt versions, the files of the paper's environment. "
             "Exit 1 names what differs; the first image is not touched.")):
        p = options.command(group, name, handler=handler, help=text, description=description,
                            examples=[f"repro image {name} examples/toy-paper/task.toml"])
        p.add_argument("file", metavar="FILE.toml", help="the task file whose image lock to build from")
        options.ca_cert(p, "pip in the build (default: none)")


REGISTER = {"image": register}
