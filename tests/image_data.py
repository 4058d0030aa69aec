"""Small datasets in the official formats, made by the tests (no network here)."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_fake_cifar10(root: Path, per_batch: int = 40, seed: int = 0) -> dict[str, object]:
    """<root>/cifar-10-python.tar.gz as the official one is laid out (pickled dicts, rows of R, G, B
    planes), with ``per_batch`` images per batch file. Returns the archive's and the batches' MD5s
    and the images [N, 3, 32, 32] and labels written, train then test."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    batches, md5s, images, labels = {}, {}, {"train": [], "test": []}, {"train": [], "test": []}
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        x = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, size=per_batch).tolist()
        data = pickle.dumps({b"batch_label": name.encode(), b"labels": y, b"data": x.reshape(per_batch, 3072),
                             b"filenames": [b"x.png"] * per_batch}, protocol=2)
        batches[name], md5s[name] = data, md5(data)
        split = "test" if name == "test_batch" else "train"
        images[split].append(x)
        labels[split] += y
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [*batches.items(), ("batches.meta", pickle.dumps({b"label_names": [b"a"] * 10}))]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = buffer.getvalue()
    (root / "cifar-10-python.tar.gz").write_bytes(archive)
    return {"archive_md5": md5(archive), "md5s": md5s, "train": np.concatenate(images["train"]),
            "test": np.concatenate(images["test"]), "train_labels": labels["train"], "test_labels": labels["test"]}


def celeba_image(seed: int) -> np.ndarray:
    """A 218 x 178 RGB image: one colour in the centre 148 x 148 square (the face), another around it."""
    rng = np.random.default_rng(seed)
    inner, outer = rng.integers(0, 256, size=(2, 3), dtype=np.uint8)
    image = np.empty((218, 178, 3), dtype=np.uint8)
    image[:] = outer
    image[35:183, 15:163] = inner
    return image


def make_fake_celeba(root: Path, counts=(12, 4, 5)) -> dict[str, object]:
    """<root>/img_align_celeba.zip (PNG-compressed JPEG-named files would not be JPEGs: real JPEGs)
    and <root>/list_eval_partition.txt, the official layout. Returns the MD5s and each split's
    centre colours."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    lines, centres = [], {"train": [], "val": [], "test": []}
    buffer = io.BytesIO()
    i = 0
    with zipfile.ZipFile(buffer, "w") as zf:
        for code, (split, n) in enumerate(zip(("train", "val", "test"), counts)):
            for _ in range(n):
                i += 1
                name = f"{i:06d}.jpg"
                image = celeba_image(i)
                encoded = io.BytesIO()
                Image.fromarray(image).save(encoded, format="JPEG", quality=95)
                zf.writestr(f"img_align_celeba/{name}", encoded.getvalue())
                lines.append(f"{name} {code}")
                centres[split].append(image[109, 89])
    archive, partition = buffer.getvalue(), ("\n".join(lines) + "\n").encode()
    (root / "img_align_celeba.zip").write_bytes(archive)
    (root / "list_eval_partition.txt").write_bytes(partition)
    return {"zip_md5": md5(archive), "partition_md5": md5(partition), "centres": centres}
