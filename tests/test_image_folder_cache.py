"""Where data=image_folder caches its decoded images: the user's cache directory by default (never the
data's folder, which may be shared or read-only), data.cache_dir when set, and one line when it cannot
be written."""

import os
from pathlib import Path

import pytest

from conftest import compose_config
from test_image_data import write_images
from vae_lightning.data import ImageFolderDataModule
from vae_lightning.data.custom import default_cache_dir
from vae_lightning.errors import DataError


def folder_module(path: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(path=path, image_size=8, val_size=1, test_size=1, batch_size=2, **kwargs)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_cache_goes_to_the_users_cache_directory_keyed_by_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data_dir = tmp_path / "datasets"
    data_dir.mkdir()
    # Two folders of the same name: each its own cache.
    for parent in ("a", "b"):
        write_images(tmp_path / parent / "photos", 4, seed=ord(parent))
        dm = folder_module(tmp_path / parent / "photos", data_dir=data_dir)
        dm.setup()
        assert not dm.streaming
    caches = files_under(tmp_path / "xdg")
    assert len(caches) == 2 and all(c.startswith("vae-lightning/image_folder/photos-") and c.endswith(".npy")
                                    for c in caches), caches
    assert files_under(data_dir) == []  # the data's folder is left as it was
    # Without XDG_CACHE_HOME: ~/.cache/vae-lightning.
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "vae-lightning"
    assert compose_config("data=image_folder", "data.path=/photos")["data"]["cache_dir"] is None


def test_cache_dir_set_to_the_data_dir_caches_beside_the_data_as_before(tmp_path):
    write_images(tmp_path / "photos", 4)
    dm = folder_module(tmp_path / "photos", data_dir=tmp_path / "datasets", cache_dir=tmp_path / "datasets")
    dm.setup()
    (cache,) = files_under(tmp_path / "datasets")
    assert cache.startswith("image_folder/photos-") and cache.endswith(".npy")
    again = folder_module(tmp_path / "photos", cache_dir=tmp_path / "datasets")
    again.setup()  # read from the cache
    assert (again.train_set.images == dm.train_set.images).all()


def unwritable_folder(tmp_path: Path, kind: str) -> Path:
    """A folder no file can be written into: read-only by its mode, or (where the mode does not stop this
    user, e.g. root) a path under a regular file, which cannot be created by anyone."""
    if kind == "read-only folder":
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        try:
            (folder / "probe").touch()
        except OSError:
            return folder
        (folder / "probe").unlink()  # the mode does not bind this user
    (tmp_path / "a_file").write_text("")
    return tmp_path / "a_file" / "cache"


@pytest.mark.parametrize("kind", ["read-only folder", "under a file"])
def test_an_unwritable_cache_dir_is_one_line_naming_the_setting(tmp_path, kind):
    write_images(tmp_path / "photos", 4)
    cache_dir = unwritable_folder(tmp_path, kind)
    try:
        dm = folder_module(tmp_path / "photos", data_dir=tmp_path / "data", cache_dir=cache_dir)
        with pytest.raises(DataError) as e:
            dm.setup()
        message = str(e.value)
        assert "\n" not in message and message.startswith(f"data.cache_dir={cache_dir} cannot be written (")
        assert "set data.cache_dir to a folder you can write" in message and "data.in_memory=false" in message
        # Streamed, nothing is cached: the same folder is no obstacle.
        streamed = folder_module(tmp_path / "photos", cache_dir=cache_dir, in_memory=False)
        streamed.setup()
        assert streamed.streaming
    finally:
        if (tmp_path / "read_only").exists():
            os.chmod(tmp_path / "read_only", 0o755)  # so that pytest can remove it


def test_a_file_that_cannot_be_decoded_leaves_no_partial_cache(tmp_path):
    write_images(tmp_path / "photos", 4)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png cannot be read"):
        folder_module(tmp_path / "photos", cache_dir=tmp_path / "cache").setup()
    assert files_under(tmp_path / "cache") == []
