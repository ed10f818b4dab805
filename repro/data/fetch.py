"""`repro data fetch NAME`: download a dataset so that only verified bytes ever reach their name.

- Downloads go to <root>/.repro-partial/<file>.part, resume with an HTTP Range request, and are
  hashed while they are written. Only when the hash matches the manifest is the file renamed into
  place; a mismatch deletes the partial file (resuming would keep the bad bytes).
- Archives are checked whole before anything is extracted: an absolute member path, a '..'
  component, a link that points outside the root, or a device/FIFO member refuses the archive.
  Only members the manifest lists are extracted, each hashed while written and renamed after.
- An interrupted fetch leaves at most files under .repro-partial/, which `repro data verify`
  reports as extra: nothing half-written can pass verification.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable
from urllib.parse import urlsplit

from repro import writer_lock
from repro.atomic import commit
from repro.data import manifest as mf
from repro.data.checks import algos_to_check, entry_problems
from repro.data.hashing import MultiHasher
from repro.errors import CheckFailed, UsageError, as_disk_full
from repro.progress import bytes_bar

PARTIAL_DIR = ".repro-partial"
CHUNK = 1 << 20


def check_file(entry: dict[str, Any], got: dict[str, Any], name: str) -> None:
    """Raise CheckFailed when the downloaded bytes contradict the manifest (data/checks.py compares)."""
    problems = entry_problems(entry, got, name)
    if problems:
        raise CheckFailed(problems[0].line(), fix="the source changed or the transfer is corrupt; nothing was put in place")


def download(url: str, part: Path, *, algos: tuple[str, ...] = ("sha256",), session=None, timeout: float = 60.0,
             on_bytes: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Download `url` into `part`, resuming from its current size; hash while writing.

    Returns {"size": n, <algo>: hexdigest, ...}. Raises CheckFailed when the transfer breaks (the
    partial file stays, for the next resume).
    """
    import requests

    session = session or requests.Session()
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise CheckFailed(f"cannot download {url} ({type(exc).__name__})",
                          fix="check the network, then run the same command again") from None
    with response:
        if response.status_code == 416 and have:
            return hash_path(part, algos)  # the partial file is already complete
        if response.status_code == 200 and have:
            have = 0  # the server ignored the range: start over
        elif response.status_code not in (200, 206):
            raise CheckFailed(f"{url}: HTTP {response.status_code}", fix="check the URL in the manifest's sources")
        if response.status_code == 206 and _content_range_start(response.headers.get("Content-Range")) != have:
            have = 0  # a range we did not ask for: start over
            response.close()
            part.unlink(missing_ok=True)
            return download(url, part, algos=algos, session=session, timeout=timeout, on_bytes=on_bytes)
        return _stream(response, url, part, have, algos, on_bytes)


def _stream(response, url: str, part: Path, have: int, algos: tuple[str, ...],
            on_bytes: Callable[[int], None] | None) -> dict[str, Any]:
    """The response's body appended to the `have` bytes of `part`, everything hashed; the digests."""
    import requests

    expected_total = None
    if response.headers.get("Content-Length") is not None:
        expected_total = have + int(response.headers["Content-Length"])
    # A git blob SHA-1 hashes "blob <size>\0" first: it needs the total size before the bytes.
    streaming = [a for a in algos if a != "git_blob_sha1" or expected_total is not None]
    hasher = MultiHasher(streaming, size=expected_total)
    if have:  # resume: the bytes already on disk go through the hasher first
        with open(part, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                hasher.update(chunk)
    written = have
    try:
        with open(part, "ab" if have else "wb") as handle:
            for chunk in response.iter_content(CHUNK):
                if chunk:
                    handle.write(chunk)
                    hasher.update(chunk)
                    written += len(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
    except (requests.RequestException, OSError) as exc:
        full = as_disk_full(exc, part, fix="free space, then the same command: the download resumes")
        if full is not None:
            raise full from None
        raise CheckFailed(f"download of {url} broke off after {written} bytes ({type(exc).__name__})",
                          fix="run the same command again: it resumes from the partial file") from None
    if expected_total is not None and written != expected_total:
        raise CheckFailed(f"download of {url} stopped at {written} of {expected_total} bytes",
                          fix="run the same command again: it resumes from the partial file")
    digests: dict[str, Any] = {"size": written, **hasher.hexdigests()}
    if len(streaming) < len(algos):  # no Content-Length: the blob SHA-1 is taken after the fact
        digests.update(hash_path(part, ("git_blob_sha1",)))
    return digests


def _content_range_start(header: str | None) -> int | None:
    # "bytes 100-199/200"
    if not header or not header.startswith("bytes "):
        return None
    try:
        return int(header[6:].split("-", 1)[0])
    except ValueError:
        return None


def hash_path(path: Path, algos: tuple[str, ...]) -> dict[str, Any]:
    from repro.data.hashing import hash_file

    return hash_file(path, algos)


def fetch_file(source: dict[str, Any], entry: dict[str, Any] | None, root: Path, session=None) -> Path:
    """One file source: download, check against the manifest entry, rename into place."""
    target = root / source["path"]
    if target.exists() and entry is not None:
        got = hash_path(target, algos_to_check(entry, all_published=True))
        try:
            check_file(entry, got, source["path"])
            return target  # already there and correct
        except CheckFailed:
            pass  # replaced below; the old file is only removed once the new one is verified
    part = root / PARTIAL_DIR / (source["path"].replace("/", "__") + ".part")
    want = dict(entry or {})
    if source.get("sha256"):
        want["sha256"] = source["sha256"]
    algos = algos_to_check(want, all_published=True)
    with bytes_bar(source["path"], source.get("size") or want.get("size")) as on_bytes:
        got = download(source["url"], part, algos=algos, session=session, on_bytes=on_bytes)
    try:
        check_file(want, got, source["path"])
    except CheckFailed:
        part.unlink(missing_ok=True)
        raise
    commit(part, target)
    return target


# ----------------------------------------------------------------- archives


class UnsafeArchive(CheckFailed):
    pass


def _safe_member_name(name: str, archive: str) -> str:
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"member {name!r} has an absolute path", where=archive, fix="refusing the whole archive")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafeArchive(f"member {name!r} contains '..'", where=archive, fix="refusing the whole archive")
    return "/".join(p for p in parts if p not in ("", "."))


def _link_inside(member_name: str, link_target: str) -> bool:
    if link_target.startswith("/"):
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(member_name), link_target))
    return not (joined == ".." or joined.startswith("../"))


def check_zip(path: Path) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        for info in members:
            name = _safe_member_name(info.filename, path.name)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "replace")
                if not _link_inside(name, target):
                    raise UnsafeArchive(f"member {info.filename!r} is a link to {target!r}, outside the root",
                                        where=path.name, fix="refusing the whole archive")
            elif mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
                raise UnsafeArchive(f"member {info.filename!r} is a device or FIFO", where=path.name,
                                    fix="refusing the whole archive")
    return members


def check_tar(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        members = tf.getmembers()
    for info in members:
        name = _safe_member_name(info.name, path.name)
        if info.issym() or info.islnk():
            if not _link_inside(name, info.linkname):
                raise UnsafeArchive(f"member {info.name!r} links to {info.linkname!r}, outside the root",
                                    where=path.name, fix="refusing the whole archive")
        elif info.ischr() or info.isblk() or info.isfifo() or info.isdev():
            raise UnsafeArchive(f"member {info.name!r} is a device or FIFO", where=path.name,
                                fix="refusing the whole archive")
    return members


def _strip(name: str, prefix: str) -> str | None:
    name = _safe_member_name(name, "")
    prefix = prefix.strip("/")
    if not prefix:
        return name
    if name == prefix or not name.startswith(prefix + "/"):
        return None
    return name[len(prefix) + 1:]


def _write_member(stream, target: Path, entry: dict[str, Any], name: str) -> None:
    """Write one archive member beside its target, hashing as it goes; rename only if it matches."""
    part = target.with_name(f".{target.name}.part")
    target.parent.mkdir(parents=True, exist_ok=True)
    algos = algos_to_check(entry, all_published=True)
    late = "git_blob_sha1" in algos and entry.get("size") is None  # needs the size before the bytes
    hasher = MultiHasher([a for a in algos if not (late and a == "git_blob_sha1")], size=entry.get("size"))
    with open(part, "wb") as handle:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            handle.write(chunk)
            hasher.update(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    got: dict[str, Any] = {"size": hasher.size, **hasher.hexdigests()}
    if late:
        got.update(hash_path(part, ("git_blob_sha1",)))
    try:
        check_file(entry, got, name)
    except CheckFailed:
        part.unlink(missing_ok=True)
        raise
    commit(part, target)


def extract(archive: Path, root: Path, files: dict[str, dict[str, Any]], strip_prefix: str = "") -> tuple[int, int]:
    """Extract the listed files from a zip or tar archive; returns (extracted, skipped)."""
    extracted = skipped = 0
    if zipfile.is_zipfile(archive):
        members = check_zip(archive)
        with zipfile.ZipFile(archive) as zf:
            for info in members:
                if info.is_dir():
                    continue
                rel = _strip(info.filename, strip_prefix)
                if rel is None or rel not in files:
                    skipped += 1
                    continue
                with zf.open(info) as stream:
                    _write_member(stream, root / rel, files[rel], rel)
                extracted += 1
    elif tarfile.is_tarfile(archive):
        members = check_tar(archive)
        with tarfile.open(archive) as tf:
            for info in members:
                if not info.isfile():
                    continue
                rel = _strip(info.name, strip_prefix)
                if rel is None or rel not in files:
                    skipped += 1
                    continue
                stream = tf.extractfile(info)
                _write_member(stream, root / rel, files[rel], rel)
                extracted += 1
    else:
        raise CheckFailed(f"{archive.name} is neither a zip nor a tar archive")
    return extracted, skipped


def fetch_archive(source: dict[str, Any], files: dict[str, dict[str, Any]], root: Path, session=None) -> None:
    name = PurePosixPath(source["url"]).name or "archive"
    part = root / PARTIAL_DIR / f"{name}.part"
    with bytes_bar(name, source.get("size")) as on_bytes:
        got = download(source["url"], part, session=session, on_bytes=on_bytes)
    try:
        check_file({"sha256": source.get("sha256")}, got, f"{name} (archive)")
    except CheckFailed:
        part.unlink(missing_ok=True)
        raise
    extracted, _ = extract(part, root, files, source.get("strip_prefix", ""))
    if extracted == 0:
        raise CheckFailed(f"{name}: no file of the manifest found in the archive (strip_prefix {source.get('strip_prefix')!r}?)")
    part.unlink(missing_ok=True)


# ----------------------------------------------------------------- the command


MIRROR_ENV = "REPRO_DATA_MIRROR"


def mirrored(url: str, mirror: str | None) -> str:
    """A source URL under a mirror: MIRROR/<host>/<path> (https://github.com/a/b.zip ->
    MIRROR/github.com/a/b.zip), for a proxy or an air-gapped cluster that mirrors the sources."""
    if not mirror:
        return url
    parts = urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def copy_from(manifest: dict[str, Any], path: Path, local: Path, root: Path) -> None:
    """`--from DIR`: each file of the manifest from a local copy (DIR/<path>), hashed while it is
    written beside its target and renamed into place only when it matches, as a download is."""
    if manifest["status"] != "complete":
        raise UsageError(f"{manifest['name']} has no recorded file list to take from {local}", where=str(path),
                         fix=f"record one from the copy: `repro data lock {local} --name {manifest['name']}`")
    missing = [e["path"] for e in manifest["files"] if not (local / e["path"]).is_file()]
    if missing:
        raise CheckFailed(f"{len(missing)} file(s) of the manifest are not in the copy, e.g. {missing[0]}", where=str(local),
                          fix="point --from at the dataset's root directory (the one holding the manifest's paths)")
    writer_lock.acquire(root, "dataset root")  # the one writer, from the first byte on
    with bytes_bar(f"copy {manifest['name']}", sum((local / e["path"]).stat().st_size for e in manifest["files"])) as on_bytes:
        for entry in manifest["files"]:
            target = root / entry["path"]
            if target.exists() and not entry_problems(entry, hash_path(target, algos_to_check(entry, all_published=True)), entry["path"]):
                continue  # already there and right
            with open(local / entry["path"], "rb") as stream:
                _write_member(stream, target, entry, entry["path"])
            if on_bytes:
                on_bytes(target.stat().st_size)


def fetch_dataset(name: str, root: str | Path | None = None, session=None, *, mirror: str | None = None,
                  from_dir: str | Path | None = None) -> Path:
    """Download (or, with `from_dir`, copy) a dataset so that only verified bytes reach their names,
    then verify it whole. `mirror` (default: $REPRO_DATA_MIRROR) replaces the sources' hosts."""
    manifest, path = mf.load_dataset_manifest(name)
    root_path = Path(root) if root else mf.default_root(manifest)
    if from_dir is not None:
        local = Path(from_dir)
        if not local.is_dir():
            raise UsageError("not a directory", where=str(local), fix="pass the root directory of a local copy")
        copy_from(manifest, path, local, root_path)  # checks the copy is whole before it writes anything
        return _verified(manifest, path, root_path)
    if not manifest["sources"]:
        raise UsageError(f"dataset {manifest['name']!r} lists no sources", where=str(path))
    kinds = {s["type"] for s in manifest["sources"]}
    if kinds == {"generator"}:
        raise UsageError(f"{manifest['name']} is generated, not downloaded", where=str(path),
                         fix=f"run `{manifest['sources'][0]['command']}`")
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    writer_lock.acquire(root_path, "dataset root")  # the one writer, from the first byte on
    files = {e["path"]: e for e in manifest["files"]}
    for source in manifest["sources"]:
        if source["type"] in ("file", "zip", "tar"):
            source = {**source, "url": mirrored(source["url"], mirror)}
        if source["type"] == "file":
            fetch_file(source, files.get(source["path"]), root_path, session=session)
        elif source["type"] in ("zip", "tar"):
            fetch_archive(source, files, root_path, session=session)
        elif source["type"] == "hf-dataset":  # a hub mirror is HF_ENDPOINT, which huggingface_hub reads
            _fetch_hf_corpus(manifest, path, source, root_path)
        else:
            raise UsageError(f"source type {source['type']!r} cannot be fetched", where=str(path))
    partial = root_path / PARTIAL_DIR
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    return _verified(manifest, path, root_path)


def _verified(manifest: dict[str, Any], path: Path, root: Path) -> Path:
    from repro.data.verify import verify

    report = verify(path, root=root, progress=False)
    if not report.ok:
        first = report.problems[0]
        raise CheckFailed(f"fetched data does not verify: {first.line()} ({len(report.problems)} problem(s))",
                          where=str(root), fix=f"run `repro data verify {manifest['name']} --root {root}` for the list")
    return root


def _fetch_hf_corpus(manifest: dict[str, Any], manifest_path: Path, source: dict[str, Any], root: Path) -> None:
    """Stream the Pile-CC documents from the Hugging Face hub, prepare the windowed corpus, and
    record its manifest (trust on first use) when the committed one is still pending."""
    from repro.data import corpus
    from repro.data.record import lock_directory

    cfg = source.get("config") or {}
    tokenizer, tokenizer_name = _hub_tokenizer(cfg)
    revision = _resolve_dataset_revision(source["url"], source.get("revision", "main"))
    documents = corpus.pile_cc_documents(source["url"], revision, cfg.get("data_files"), cfg.get("subset", "Pile-CC"))
    budget = {k: int(v) for k, v in (cfg.get("max_tokens") or {}).items()}
    corpus.write_corpus(root, documents, tokenizer, tokenizer_name=tokenizer_name, window=int(cfg.get("window", 1024)),
                        seed=int(cfg.get("seed", 0)), val_fraction=float(cfg.get("val_fraction", 0.01)),
                        test_fraction=float(cfg.get("test_fraction", 0.01)),
                        source={"type": "hf-dataset", "id": source["url"], "revision": revision,
                                "data_files": cfg.get("data_files"), "subset": cfg.get("subset", "Pile-CC")},
                        max_tokens=budget or None)
    if manifest["status"] == "pending":
        try:
            lock_directory(root, name=manifest["name"], output=manifest_path)
        except OSError as exc:
            raise UsageError(f"cannot record the manifest ({exc.strerror})", where=str(manifest_path),
                             fix=f"run `repro data lock {root} --name {manifest['name']} --output FILE` where you can write") from None


def _resolve_dataset_revision(dataset_id: str, revision: str) -> str:
    """A branch name such as 'main' moves; record the commit it points at now."""
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(dataset_id, revision=revision).sha or revision
    except Exception as exc:  # offline or hub error: say so, the run cannot continue without the data
        raise CheckFailed(f"cannot reach the Hugging Face hub for {dataset_id}@{revision} ({type(exc).__name__})",
                          fix="fetch needs the internet once; or prepare local text with `repro data prepare`") from None


def _hub_tokenizer(cfg: dict[str, Any]):
    from huggingface_hub import HfApi
    from transformers import AutoTokenizer

    name = cfg.get("tokenizer", "openai-community/gpt2")
    revision = cfg.get("tokenizer_revision", "main")
    try:
        revision = HfApi().model_info(name, revision=revision).sha or revision
    except Exception as exc:
        raise CheckFailed(f"cannot reach the Hugging Face hub for {name}@{revision} ({type(exc).__name__})",
                          fix="fetch needs the internet once") from None
    return AutoTokenizer.from_pretrained(name, revision=revision), f"{name}@{revision}"
