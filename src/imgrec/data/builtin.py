"""The built-in datasets (mnist, fashion_mnist, cifar10, cifar100, digits: imgrec.data.catalog) as a datamodule:
read whole into memory as one uint8 array per official split; validation drawn from the training images."""

import hashlib
from pathlib import Path

from imgrec.data import catalog
from imgrec.data.datamodule import ImageDataModule, SourceInfo
from imgrec.data.decode import Preprocess
from imgrec.data.splits import Parts, check_classes


class BuiltinImages(ImageDataModule):
    def __init__(self, name: str, root: str | None = None, download: bool = True, **kwargs):
        """`name`: a dataset of imgrec.data.catalog; `root`: the folder its files are looked for (then known system
        places, then a download with data.download). The rest: see ImageDataModule."""
        self.spec = catalog.get_spec(name)
        super().__init__(**kwargs)
        self.name, self.root, self.download = name, root, download
        check_classes(self.classes, self.spec.num_classes)  # a bad subset fails before any file is read

    # Known from the catalog before any file is read (a model is built, a shape checked, without the files).
    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.native(self.spec.in_shape)

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.spec.class_names
        return names if self.classes is None else tuple(names[c] for c in self.classes)

    def prepare_data(self) -> None:
        catalog.locate(self.name, self.root, self.download)  # downloads once, on one process

    def read(self) -> Parts:
        parts = catalog.read_parts(self.name, self.root, self.download)
        found = catalog.root_of(self.name, catalog.locate(self.name, self.root, download=False))
        self.data_root = None if found is None else str(found)
        return parts

    def source(self) -> SourceInfo:
        location, files = catalog.dataset_files(self.name, self.root, download=False)
        return SourceInfo(self.name, str(location), files_sha256(files), len(files))


def files_sha256(files: list[Path]) -> str:
    """The SHA-256 of the files' names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
