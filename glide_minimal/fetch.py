"""Download a file with a progress bar, resume and a sha256 check (`glide-minimal fetch URL --sha256 H --out PATH`).

Standard library only (urllib). Bytes arrive in PATH.part. A dropped connection leaves PATH.part on disk,
and the next try (automatic, up to `retries` times, or the same command run again) asks the server only
for the rest with an HTTP Range request. The finished file is renamed to PATH only if its sha256 is the
expected one; a mismatch deletes PATH.part, so nothing unverified is ever kept.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20  # bytes per read and per hash update


class DownloadError(RuntimeError):
    """The server refused the file, or the transfer failed for good."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256 (they were deleted)."""


class _Interrupted(Exception):
    """The transfer stopped midway: a retry can resume from the partial file."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in CHUNK-sized pieces (released checkpoints are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _expected_digest(sha256: str) -> str:
    digest = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"--sha256 {sha256!r} is not a sha256 digest: it must be 64 hex characters (0-9, a-f)")
    return digest


def _range_start(content_range: str | None) -> int | None:
    """'bytes 1000-4999/5000' -> 1000."""
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match[1]) if match else None


def _transfer(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append the missing bytes of `url` to `part` (all of them if the server ignores Range)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the partial file is already whole (the hash decides)
            return
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise _Interrupted(f"could not reach {url} ({getattr(e, 'reason', e)})") from None
    with response:
        resumed = have > 0 and response.status == 206
        if resumed and _range_start(response.headers.get("Content-Range")) != have:
            raise DownloadError(f"{url}: asked for the bytes from {have} on, but the server sent "
                                f"{response.headers.get('Content-Range')!r}; delete {part} and try again")
        if not resumed:
            have = 0  # a 200 answer is the whole file: start over
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        received = 0
        with open(part, "ab" if resumed else "wb") as f, \
                tqdm(total=None if expected is None else have + expected, initial=have, unit="B", unit_scale=True,
                     unit_divisor=1024, desc=part.name[:-len(".part")], disable=not progress) as bar:
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as e:
                    raise _Interrupted(f"the connection failed after {have + received} bytes ({e})") from None
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
        # urllib reports a connection closed early as a normal end of data: compare with Content-Length.
        if expected is not None and received < expected:
            raise _Interrupted(f"the connection closed after {have + received} of {have + expected} bytes")


def fetch(url: str, out: str | Path, sha256: str, *, progress: bool = True, retries: int = 3,
          timeout: float = 60.0) -> Path:
    """Download `url` to `out` unless `out` already has the expected sha256; returns `out`.

    A transfer that breaks midway is resumed from `out`.part up to `retries` times; after that the error
    says how many bytes are kept, and calling fetch again resumes. A sha256 mismatch raises ChecksumError
    (naming both digests) and deletes the partial file; an HTTP error (404, ...) raises DownloadError.
    """
    expected = _expected_digest(sha256)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    out = Path(out)
    part = out.with_name(out.name + ".part")
    if out.exists():
        actual = sha256_file(out)
        if actual == expected:
            return out  # already downloaded and verified
        raise FileExistsError(f"{out} exists but its sha256 is {actual}, not the expected {expected}: delete it or "
                              "choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, progress, timeout)
            break
        except _Interrupted as e:
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"{url}: {e}. Gave up after {retries + 1} tries; {kept} bytes are kept in {part}: "
                                    "run the same command again to resume") from None
    actual = sha256_file(part)
    if actual != expected:
        part.unlink()
        raise ChecksumError(f"sha256 mismatch for {url}: expected {expected}, got {actual}. The download was deleted "
                            "(nothing kept): check the URL and the digest")
    os.replace(part, out)  # only verified bytes ever carry the final name
    return out
