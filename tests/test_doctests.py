"""Every `>>>` example in the package runs, found by walking the package (no hand-kept list).

`kerasmtl.models` and `kerasmtl.callbacks` live in `models/` and `callbacks/` and are mapped
into `kerasmtl` by `package_dir`, so `pkgutil.walk_packages(kerasmtl.__path__)` alone does not
see them: the walk also enters every subpackage that `kerasmtl` itself imports.
"""

import doctest
import importlib
import pkgutil
import types

import keras
import pytest

import kerasmtl

pytestmark = pytest.mark.backend_neutral

# Optional dependencies (setup.cfg extras): a module whose import fails for want of one of
# these is skipped, naming the package; any other ImportError fails the test.
OPTIONAL_PACKAGES = {
    "keras_tuner",
    "matplotlib",
    "palmerpenguins",
    "sklearn",
    "tensorflow",
    "tensorflow_datasets",
    "jax",
    "torch",
}

# The trainers of the other backends are built on that backend's autodiff; they are
# exercised by tests/test_backends.py when the suite runs on that backend.
BACKEND_TRAINERS = {"tensorflow", "jax", "torch"}


def _subpackages(package):
    """The subpackages that `package` imports from outside its own directory."""
    prefix = package.__name__ + "."
    for value in vars(package).values():
        if (
            isinstance(value, types.ModuleType)
            and value.__name__.startswith(prefix)
            and hasattr(value, "__path__")
            and not any(path.startswith(tuple(package.__path__)) for path in value.__path__)
        ):
            yield value


def _missing_package(error):
    """The top-level name of the package whose absence raised `error`, if it says."""
    while error is not None:
        if isinstance(error, ImportError) and error.name:
            return error.name.partition(".")[0]
        error = error.__cause__ or error.__context__
    return None


def _module_names():
    names = {kerasmtl.__name__}
    packages = [kerasmtl, *_subpackages(kerasmtl)]
    for package in packages:
        names.add(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            names.add(info.name)
    return sorted(names)


MODULE_NAMES = _module_names()


def test_the_walk_finds_every_part_of_the_package():
    # The walk is the list: make sure it reaches the package_dir-mapped parts and the
    # layers, strategies, trainers and data modules.
    for name in (
        "kerasmtl.models.mmoe",
        "kerasmtl.callbacks.loss_weight_scheduler",
        "kerasmtl.layers.cross_stitch",
        "kerasmtl.weighting.dwa",
        "kerasmtl.trainers.base_trainer",
        "kerasmtl.data.pipelines",
        "kerasmtl.export",
        "kerasmtl.tuning",
        "kerasmtl.evaluation",
    ):
        assert name in MODULE_NAMES, MODULE_NAMES


# Keras's own MeanIoU asks JAX for int64 (truncated to int32 with x64 off), a warning of
# Keras's metric, not of the kit: segment_and_detect's example logs a MeanIoU.
@pytest.mark.filterwarnings(
    "ignore:Explicitly requested dtype int64 requested in asarray:UserWarning"
)
@pytest.mark.parametrize("name", MODULE_NAMES)
def test_docstring_examples_run(name):
    trainer_backend = name.rpartition(".")[2].removesuffix("_trainer")
    if (
        name.startswith("kerasmtl.trainers.")
        and trainer_backend in BACKEND_TRAINERS
        and trainer_backend != keras.backend.backend()
    ):
        pytest.skip(f"the {trainer_backend} trainer runs on the {trainer_backend} backend only")
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        missing = _missing_package(error)
        if missing in OPTIONAL_PACKAGES:
            pytest.skip(f"{name} needs the optional package '{missing}': {error}")
        raise
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
