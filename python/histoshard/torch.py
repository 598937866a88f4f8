"""Read histoshard output folders in PyTorch, without TensorFlow.

    from torch.utils.data import DataLoader
    from histoshard.torch import ShardDataset

    train = ShardDataset("OUT", "train", shuffle=True, seed=0, dtype=torch.float32)
    loader = DataLoader(train, batch_size=32, num_workers=4)
    for images, labels in loader:   # images [32, 3, H, W], labels [32] int64
        ...

:class:`ShardDataset` is an ``IterableDataset`` over the shards of the chosen
splits (``None``: every split); ``fold`` and ``subset`` keep the records whose
``manifest.csv`` row matches. The shards are divided among DataLoader workers
and distributed ranks; every frame's CRC-32C is checked (``histoshard.records``)
and every record must carry the keys and types of the folder's
``features.json``. Images decode (Pillow) to ``[3, H, W]`` tensors.
"""

from __future__ import annotations

import io
import numbers
import os
import random
from collections.abc import Callable, Collection, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from histoshard import folder as _folder
from histoshard import records
from histoshard.folder import IMAGE_KEY, LABEL_KEY

__all__ = ["ShardDataset", "decode_image"]


def decode_image(encoded: bytes) -> torch.Tensor:
    """PNG/JPEG bytes -> uint8 ``[3, height, width]`` (RGB)."""
    with Image.open(io.BytesIO(encoded)) as image:
        array = np.array(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _as_set(value: Any, name: str, kind: type) -> frozenset | None:
    """None, one value or a collection of values of ``kind`` (str, or an integer type) -> a frozenset."""
    if value is None:
        return None
    values = [value] if isinstance(value, (str, numbers.Integral)) else list(value)
    if not values or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        what = "a str" if kind is str else "an int"
        raise ValueError(f"{name} must be {what} or a collection of them, not {value!r}")
    return frozenset(str(v) if kind is str else int(v) for v in values)


class ShardDataset(torch.utils.data.IterableDataset):
    """The records of an output folder of ``histoshard prepare`` as ``(image, label)``.

    - ``split``: ``"train"``, ``"val"``, ``"test"``, a collection of them, or
      None for every split.
    - ``fold``: an int or a collection of ints (``prepare --folds K``): only
      records of those folds. ``subset``: a name or a collection (GlaS:
      ``"train"``, ``"testA"``, ``"testB"``). Both are read from manifest.csv.
    - ``image``: ``[3, H, W]``; ``dtype=torch.uint8`` (0..255) or a float
      dtype (scaled to [0, 1]). ``transform`` is then applied to it,
      ``target_transform`` to the int label.
    - ``with_metadata=True`` adds a third element: every other key of
      features.json (bytes as str), e.g. ``meta["image/source_id"]``.
    - ``shuffle=False`` reads in manifest order (shard by shard). ``shuffle=True``
      shuffles the shard order every epoch (``seed`` + ``set_epoch``) and the
      records through a ``shuffle_buffer``. (DataLoader workers get a copy of
      the dataset when an epoch starts; with ``persistent_workers=True`` they
      keep the first epoch's.)
    - Workers and ranks: with at least as many shards as readers (DataLoader
      workers × ``world_size``), each reader takes whole shards; with fewer, every
      reader scans the shards and keeps every n-th selected record. Rank and world
      size come from ``torch.distributed`` when it is initialised, else from
      ``rank`` / ``world_size``. Every record is read by exactly one reader.

    ``num_records`` is how many records the filters select (over all readers).
    """

    def __init__(
        self,
        folder: str,
        split: str | Collection[str] | None = None,
        *,
        fold: int | Collection[int] | None = None,
        subset: str | Collection[str] | None = None,
        dtype: torch.dtype = torch.uint8,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        with_metadata: bool = False,
        shuffle: bool = False,
        shuffle_buffer: int = 1024,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.folder = str(folder)
        self.types = _folder.feature_types(_folder.load_schema(self.folder))
        for key in (IMAGE_KEY, LABEL_KEY):
            if key not in self.types:
                raise ValueError(f"{self.folder}: features.json has no {key!r}")
        self.compression = _folder.compression(self.folder)
        self.classes = _folder.class_names(self.folder)
        if dtype != torch.uint8 and not dtype.is_floating_point:
            raise ValueError(f"dtype must be torch.uint8 or a float dtype, not {dtype}")
        self.dtype = dtype
        self.transform, self.target_transform = transform, target_transform
        self.with_metadata = with_metadata
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, max(1, int(shuffle_buffer)), seed
        self.epoch = 0
        self.rank, self.world_size = rank, world_size

        known = _folder.splits(self.folder)
        splits = known
        if split is not None:
            wanted = _as_set(split, "split", str)
            unknown = sorted(wanted - set(known))
            if unknown:
                raise ValueError(f"{self.folder}: no split {unknown[0]!r} (the folder has {', '.join(known)})")
            splits = [s for s in known if s in wanted]
        folds, subsets = _as_set(fold, "fold", numbers.Integral), _as_set(subset, "subset", str)

        # Per shard: how many records the manifest lists, and which of them the filters keep.
        listed: dict[str, int] = {}
        keep: dict[str, set[int]] = {}
        for row in _folder.read_manifest_csv(self.folder):
            shard = row["shard"]
            listed[shard] = listed.get(shard, 0) + 1
            if row["split"] not in splits:
                continue
            if folds is not None and (row["fold"] == "" or int(row["fold"]) not in folds):
                continue
            if subsets is not None and row["subset"] not in subsets:
                continue
            keep.setdefault(shard, set()).add(int(row["index_in_shard"]))
        #: (path, records the manifest lists, indices kept or None for all), in manifest order.
        self.shards: list[tuple[str, int, frozenset[int] | None]] = []
        for s in splits:
            for path in _folder.shard_files(self.folder, s):
                name = os.path.basename(path)
                kept = keep.get(name)
                if kept:
                    self.shards.append((path, listed[name], None if len(kept) == listed[name] else frozenset(kept)))
        self.num_records = sum(n if k is None else len(k) for _, n, k in self.shards)
        if not self.num_records:
            raise ValueError(
                f"{self.folder}: no record matches split={split!r}, fold={fold!r}, subset={subset!r}"
            )

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch that, with ``seed``, orders the shuffle (as DistributedSampler's)."""
        self.epoch = int(epoch)

    def _rank_world(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        rank, world = self.rank or 0, self.world_size or 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, world_size={world})")
        return rank, world

    def _assignment(self) -> tuple[list[int], int, int]:
        """(shard indices this reader reads, record stride, record offset)."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = self._rank_world()
        me, readers = rank * workers + worker, world * workers
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(f"{self.seed}/{self.epoch}").shuffle(order)  # the same on every reader
        if len(order) >= readers:
            return order[me::readers], 1, 0
        return order, readers, me

    def _records(self) -> Iterator[tuple[str, int, bytes]]:
        shards, stride, offset = self._assignment()
        selected = 0
        for i in shards:
            path, listed, kept = self.shards[i]
            count = 0
            for index, data in enumerate(records.read_frames(path, self.compression)):
                count += 1
                if kept is not None and index not in kept:
                    continue
                if selected % stride == offset:
                    yield path, index, data
                selected += 1
            if count != listed:
                raise records.ShardError(f"{path}: holds {count} records, manifest.csv lists {listed}")

    def _example(self, path: str, index: int, data: bytes) -> tuple[Any, ...]:
        try:
            fields = records.parse_record(data, self.types)
        except ValueError as e:
            raise records.ShardError(f"{path}: record {index}: {e}") from None
        try:
            image = decode_image(fields[IMAGE_KEY])
        except (OSError, ValueError) as e:
            raise records.ShardError(f"{path}: record {index}: image/encoded does not decode: {e}") from None
        declared = tuple(int(fields.get(k, -1)) for k in ("image/height", "image/width"))
        if -1 not in declared and tuple(image.shape[1:]) != declared:
            raise records.ShardError(
                f"{path}: record {index}: decoded {tuple(image.shape[1:])}, record says (height, width) = {declared}"
            )
        if self.dtype != torch.uint8:
            image = image.to(self.dtype) / 255.0
        label: Any = int(fields[LABEL_KEY])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        if not self.with_metadata:
            return image, label
        meta = {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for k, v in fields.items()}
        del meta[IMAGE_KEY]
        return image, label, meta

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        stream = self._records()
        if not self.shuffle:
            for path, index, data in stream:
                yield self._example(path, index, data)
            return
        rng = random.Random(f"{self.seed}/{self.epoch}/buffer")
        buffer: list[tuple[str, int, bytes]] = []
        for item in stream:  # serialized records: small next to decoded images
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], item = item, buffer[j]
            yield self._example(*item)
        rng.shuffle(buffer)
        for item in buffer:
            yield self._example(*item)
