"""Run inside the paper's image build (workflows/image_paper.py copies it into the build context), with
the kit's Python and the standard library only:

    python link_kit.py VENV KIT_SITE LIST

For each `name==version` of LIST (the paper's packages whose version and hashes equal the kit lock's),
link every top-level entry its RECORD lists from the kit's site-packages into VENV's: the paper's
environment then holds that exact wheel without a second copy, and nothing of the kit's it did not
ask for. A package the kit's environment does not have at that version stops the build.
"""

import glob
import importlib.metadata as metadata
import os
import re
import sys


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(venv: str, kit_site: str, listing: str) -> int:
    site = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))[0]
    kit = {canonical(d.metadata["Name"]): d for d in metadata.distributions(path=[kit_site])}
    with open(listing, encoding="utf-8") as handle:
        wanted = [line.strip().split("==", 1) for line in handle if line.strip()]
    for name, version in wanted:
        dist = kit.get(canonical(name))
        if dist is None or dist.version != version:
            found = dist.version if dist else "absent"
            sys.exit(f"link_kit: error: {name}=={version} is not in the kit's environment ({found})")
        tops = {str(f).split("/", 1)[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in sorted(tops - {"__pycache__"}):
            target, link = os.path.join(kit_site, top), os.path.join(site, top)
            if os.path.lexists(target) and not os.path.lexists(link):
                os.symlink(target, link)
    print(f"link_kit: {len(wanted)} package(s) linked from {kit_site}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
