"""Finding dataset files on disk, or downloading them with MD5 checks."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import DataError


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: its published (gzipped) name and MD5, checked after a download,
    and, where known, the size and MD5 of its uncompressed contents, checked when it is read."""

    filename: str  # e.g. "train-images-idx3-ubyte.gz"
    md5: str
    raw_size: int | None = None
    raw_md5: str | None = None
    #: Full download addresses, tried before ``mirror + filename`` (for hosts whose URLs do not end
    #: in the file's name).
    urls: tuple[str, ...] = ()

    @property
    def stem(self) -> str:
        """The name without .gz: the file may sit on disk in either form."""
        return self.filename.removesuffix(".gz")


def md5sum(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def find_file(resource: Resource, folders: Sequence[Path]) -> Path | None:
    """The first of ``folder/name.gz`` or ``folder/name`` that exists, in folder order."""
    for folder in folders:
        for name in (resource.filename, resource.stem):
            if (folder / name).is_file():
                return folder / name
    return None


def download(resource: Resource, mirrors: Sequence[str], folder: Path, timeout: float = 30.0) -> Path:
    """Download ``resource`` from the first mirror that answers, check its MD5, return its path.

    The file is written under a temporary name and renamed once its MD5 matches,
    so an interrupted download never leaves a file that looks complete.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / resource.filename
    partial = folder / (resource.filename + ".part")
    errors = []
    for url in (*resource.urls, *(mirror + resource.filename for mirror in mirrors)):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            partial.unlink(missing_ok=True)
            continue
        digest = md5sum(partial)
        if digest != resource.md5:
            errors.append(f"{url}: MD5 {digest} does not match the published {resource.md5}")
            partial.unlink(missing_ok=True)
            continue
        os.replace(partial, target)
        return target
    raise DownloadFailed(errors)


class DownloadFailed(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def locate_or_download(
    resources: Sequence[Resource],
    search_folders: Sequence[Path],
    download_folder: Path,
    mirrors: Sequence[str],
    allow_download: bool,
    dataset: str,
    fix: str | None = None,
) -> dict[str, Path]:
    """Map each resource's filename to a path on disk, downloading the missing ones if allowed.

    Raises DataError naming the folder, the missing files and how to fix it.
    """
    found = {r.filename: find_file(r, search_folders) for r in resources}
    missing = [r for r in resources if found[r.filename] is None]
    if not missing:
        return found  # type: ignore[return-value]
    fix = fix or (f"Put the files (gzipped or not) in {download_folder}, or point the project at a "
                  f"directory that holds {dataset}/raw/")
    fix += ": set data.data_dir=/path/to/data on the command line or the environment variable VAE_DATA_DIR."
    names = ", ".join(r.filename for r in missing)
    if not allow_download:
        raise DataError(f"{dataset} files missing in {download_folder}: {names}. Downloading is "
                        f"off (data.download=false). {fix}")
    try:
        download_folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dataset} files missing ({names}) and cannot create {download_folder} "
                        f"to download them: {e.strerror}. {fix}") from None
    if not os.access(download_folder, os.W_OK):
        raise DataError(f"{dataset} files missing ({names}) and {download_folder} is not writable, "
                        f"so they cannot be downloaded. {fix}")
    for r in missing:
        try:
            found[r.filename] = download(r, mirrors, download_folder)
        except DownloadFailed as e:
            raise DataError(f"{dataset} files missing in {download_folder}: {names}; the download of "
                            f"{r.filename} failed ({'; '.join(e.errors)}). {fix}") from None
    return found  # type: ignore[return-value]
