"""The `penguins_mtl` TFDS builder: Palmer penguins as a three-task tabular dataset.

Importing this module registers the builder under the name `penguins_mtl`, after
which `tfds.builder("penguins_mtl", data_dir=...)` and
`tfds.load("penguins_mtl", data_dir=..., download=False)` find it once the
dataset has been prepared.

The data is the `penguins.csv` bundled in the PyPI package `palmerpenguins`
(versions 0.1.4 to 0.1.6 ship the same table). It is read with the `csv` module
from the installed package's files; the package itself is never imported (it
imports pandas), and nothing is downloaded.
"""

import csv
import dataclasses
import hashlib
import importlib.util
import io
import os

try:
    import tensorflow_datasets as tfds
except ImportError as error:
    raise ImportError(
        "kerasmtl.data.penguins needs TensorFlow Datasets. Install it with "
        '`pip install "kerasmtl[datasets]"`.'
    ) from error

import numpy as np

SPECIES = ("Adelie", "Chinstrap", "Gentoo")
ISLANDS = ("Biscoe", "Dream", "Torgersen")
SEXES = ("female", "male")
NUMERIC_FEATURES = ("bill_length", "bill_depth", "flipper_length")
TASKS = ("species", "sex", "body_mass")
# The measurements standardised by `kerasmtl.data.load_penguins`; their train
# statistics are stored in `builder.info.metadata["standardization"]`.
STANDARDIZED = (*NUMERIC_FEATURES, "body_mass")
NUM_ROWS = 344

_PACKAGE = "palmerpenguins"
_CSV_IN_PACKAGE = ("data", "penguins.csv")
_COLUMNS = (
    "species",
    "island",
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "sex",
    "year",
)
_MISSING = "NA"
# SHA-256 of penguins.csv with "\r\n" turned into "\n" (palmerpenguins 0.1.5
# ships CRLF line ends, 0.1.4 and 0.1.6 LF; the table is the same). The records
# of VERSION 1.0.0 are made from exactly this table.
_CSV_SHA256 = "f204db2c753b0937caac3cb35258562c14f073e4bbc76be24b4c51ce22767a93"

_CITATION = """\
@article{gorman2014ecological,
  title={Ecological Sexual Dimorphism and Environmental Variability within a
         Community of Antarctic Penguins (Genus Pygoscelis)},
  author={Gorman, Kristen B. and Williams, Tony D. and Fraser, William R.},
  journal={PLoS ONE},
  volume={9},
  number={3},
  pages={e90081},
  year={2014}
}
@misc{horst2020palmerpenguins,
  title={palmerpenguins: Palmer Archipelago (Antarctica) penguin data},
  author={Horst, Allison Marie and Hill, Alison Presmanes and Gorman, Kristen B.},
  note={R package version 0.1.0},
  year={2020}
}
"""

_DESCRIPTION = """\
Palmer penguins (Gorman, Williams & Fraser, PLoS ONE 2014; packaged by Horst, Hill &
Gorman, 2020): 344 penguins from three islands of the Palmer Archipelago, as a
three-task tabular dataset. Inputs: bill length, bill depth and flipper length
(float32, mm) and the island (class id). Tasks: `species` (3 classes), `sex`
(2 classes, -1 where the sex was not recorded) and `body_mass` (float32, grams,
NaN where missing). The 2 penguins with none of the measurements are dropped,
leaving 342. The split is fixed and stratified by species: 80% train, 20% test.
Train-split means and standard deviations of the measurements are stored in
`info.metadata["standardization"]`. Read offline from the `penguins.csv` bundled
in the `palmerpenguins` package.
"""


def _find_csv(source_path):
    if source_path is not None:
        path = os.path.expanduser(os.fspath(source_path))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                "The penguins CSV file does not exist. Pass the path of the "
                f"`penguins.csv` of palmerpenguins. Received: source_path={path!r}"
            )
        return path
    # `find_spec` locates the package without importing it: palmerpenguins
    # imports pandas, which kerasmtl does not need.
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = os.path.join(location, *_CSV_IN_PACKAGE)
        if os.path.isfile(path):
            return path
    raise ImportError(
        "The penguins_mtl builder reads the CSV bundled in the `palmerpenguins` "
        f"package, which was not found{' with data/penguins.csv' if spec else ''}. "
        'Install it with `pip install "kerasmtl[datasets]"`, or without pandas with '
        "`pip install --no-deps palmerpenguins==0.1.6`, or pass `source_path=` "
        f"to the builder. Received: find_spec({_PACKAGE!r}) -> {spec!r}"
    )


def read_penguins_csv(source_path=None):
    """Reads the rows of palmerpenguins' `penguins.csv` with the `csv` module.

    Args:
        source_path: optional path of the CSV; by default the file bundled in
            the installed `palmerpenguins` package (found without importing it).

    Returns:
        A list of 344 dicts keyed by the CSV columns (`species`, `island`,
        `bill_length_mm`, `bill_depth_mm`, `flipper_length_mm`, `body_mass_g`,
        `sex`, `year`), values as strings, `"NA"` where missing.

    Raises:
        ValueError: if the file is not the table the builder was made for.
    """
    path = _find_csv(source_path)
    with open(path, "rb") as file:
        content = file.read().replace(b"\r\n", b"\n")
    digest = hashlib.sha256(content).hexdigest()
    if digest != _CSV_SHA256:
        raise ValueError(
            f"{path} is not the penguins.csv of palmerpenguins 0.1.4 to 0.1.6, which "
            "version 1.0.0 of the penguins_mtl builder is made from; another table would "
            "silently change the records. Install `palmerpenguins>=0.1.4,<0.1.7`. "
            f"Received: sha256={digest}, expected {_CSV_SHA256}"
        )
    rows = list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))
    return rows


def _number(value):
    return float("nan") if value == _MISSING else float(value)


def parse_rows(rows):
    """Turns CSV rows into the columns of `penguins_mtl`, before the split.

    Rows without any of the three input measurements are dropped (2 in the
    table; they have no body mass or sex either). Keeps the CSV order.

    Args:
        rows: the rows of `read_penguins_csv`.

    Returns:
        A dict of NumPy arrays, one entry per kept row: `index` (int64, the row's
        0-based position among the CSV's data rows), `bill_length`,
        `bill_depth`, `flipper_length`, `body_mass` (float32, NaN where
        missing), `island`, `species` (int64 ids into `ISLANDS`, `SPECIES`),
        `sex` (int64 id into `SEXES`, -1 where missing) and `year` (int64).
    """
    columns = {name: [] for name in ("index", *STANDARDIZED, "island", "species", "sex", "year")}
    for position, row in enumerate(rows):
        measures = [_number(row[f"{name}_mm"]) for name in NUMERIC_FEATURES]
        if any(np.isnan(measures)):
            continue
        columns["index"].append(position)
        for name, value in zip(NUMERIC_FEATURES, measures):
            columns[name].append(value)
        columns["body_mass"].append(_number(row["body_mass_g"]))
        columns["island"].append(ISLANDS.index(row["island"]))
        columns["species"].append(SPECIES.index(row["species"]))
        columns["sex"].append(-1 if row["sex"] == _MISSING else SEXES.index(row["sex"]))
        columns["year"].append(int(row["year"]))
    return {
        name: np.asarray(values, dtype=np.float32 if name in STANDARDIZED else np.int64)
        for name, values in columns.items()
    }


def split_positions(species, test_fraction=0.2, seed=0):
    """The positions of the train and test rows: a fixed split stratified by species.

    For each species, a `round(test_fraction * count)` share of its rows (after
    a permutation seeded by `seed`) goes to test and the rest to train.

    Args:
        species: int array of species ids, one per kept row.
        test_fraction: the share of each species in the test split.
        seed: seed of the permutation.

    Returns:
        A dict `{"train": positions, "test": positions}` of sorted int64 arrays
        of positions into `species`.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"`test_fraction` must be strictly between 0 and 1. "
            f"Received: test_fraction={test_fraction}"
        )
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(len(SPECIES)):
        members = rng.permutation(np.flatnonzero(species == label))
        num_test = int(round(test_fraction * len(members)))
        test.append(members[:num_test])
        train.append(members[num_test:])
    return {
        "train": np.sort(np.concatenate(train)).astype(np.int64),
        "test": np.sort(np.concatenate(test)).astype(np.int64),
    }


def standardization(columns, positions):
    """Means and standard deviations (ddof 0) of the measurements over some rows.

    Args:
        columns: the columns of `parse_rows`.
        positions: the rows to use (the train positions).

    Returns:
        A dict `{name: {"mean": float, "std": float}}` for each name of
        `STANDARDIZED`, ignoring missing (NaN) values.
    """
    statistics = {}
    for name in STANDARDIZED:
        values = columns[name][positions].astype(np.float64)
        values = values[~np.isnan(values)]
        statistics[name] = {"mean": float(values.mean()), "std": float(values.std())}
    return statistics


@dataclasses.dataclass
class PenguinsMtlConfig(tfds.core.BuilderConfig):
    """Builder config of `PenguinsMtl`.

    Args:
        name: name of the config, as in `tfds.load("penguins_mtl/<name>")`.
        test_fraction: share of each species in the test split.
        seed: seed of the split.
    """

    test_fraction: float = 0.2
    seed: int = 0


class PenguinsMtl(tfds.core.GeneratorBasedBuilder):
    """Palmer penguins with three tasks: species, sex and body mass.

    The Palmer Archipelago penguins (Gorman, Williams & Fraser, "Ecological
    Sexual Dimorphism and Environmental Variability within a Community of
    Antarctic Penguins (Genus Pygoscelis)", PLoS ONE 2014), read offline from
    the CSV that ships in the `palmerpenguins` package, as a small multi-task
    tabular dataset with missing labels: 9 of the 342 kept penguins have no
    recorded sex. Records are stored in CSV order, identical on every
    preparation.

    Features: `bill_length`, `bill_depth`, `flipper_length` (float32, mm),
    `island` (class label over `ISLANDS`), `species` (class label over
    `SPECIES`), `sex` (class label over `SEXES`, -1 where missing),
    `body_mass` (float32, grams, NaN where missing), `year` (int64) and
    `index` (int64, the row among the CSV's 344 data rows). The `default`
    config has 273 train and 69 test penguins. The train means and standard
    deviations of the four measurements are in
    `info.metadata["standardization"]`.

    Args:
        source_path: optional path of `penguins.csv`; by default the file
            bundled in the installed `palmerpenguins` package.
        **kwargs: the arguments of `tfds.core.GeneratorBasedBuilder`
            (`data_dir`, `config`, `version`, ...).

    Example:

    ```python
    import tensorflow_datasets as tfds
    from kerasmtl.data.penguins import PenguinsMtl

    builder = PenguinsMtl(data_dir="/tmp/kerasmtl_data")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    train = builder.as_dataset(split="train")
    ```
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        PenguinsMtlConfig(
            name="default",
            description="342 penguins, 80/20 train/test split stratified by species.",
        )
    ]
    DEFAULT_CONFIG_NAME = "default"

    def __init__(self, *, source_path=None, **kwargs):
        super().__init__(**kwargs)
        self.source_path = None if source_path is None else os.fspath(source_path)
        # TFDS re-creates pickled builders from `_original_state`.
        self._original_state["source_path"] = self.source_path

    def _info(self):
        measure = tfds.features.Scalar(dtype=np.float32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "bill_length": measure,
                    "bill_depth": measure,
                    "flipper_length": measure,
                    "body_mass": measure,
                    "island": tfds.features.ClassLabel(names=list(ISLANDS)),
                    "species": tfds.features.ClassLabel(names=list(SPECIES)),
                    # ClassLabel stores -1 as "no label".
                    "sex": tfds.features.ClassLabel(names=list(SEXES)),
                    "year": tfds.features.Scalar(dtype=np.int64),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            homepage="https://allisonhorst.github.io/palmerpenguins/",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(),
            # Records keep CSV order, so two preparations are identical.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded: the CSV ships with palmerpenguins.
        config = self.builder_config
        columns = parse_rows(read_penguins_csv(self.source_path))
        positions = split_positions(columns["species"], config.test_fraction, config.seed)
        self.info.metadata["standardization"] = standardization(columns, positions["train"])
        return {
            split: self._generate_examples(columns, split_rows)
            for split, split_rows in positions.items()
        }

    def _generate_examples(self, columns, positions):
        for position in positions:
            # Integer keys (the CSV row): with `disable_shuffling` TFDS writes
            # records sorted by key, i.e. in CSV order.
            record = {name: values[position] for name, values in columns.items()}
            yield int(record["index"]), record
