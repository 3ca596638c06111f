"""The benchmarks' functional tests run as the product's do: as root,
skipped otherwise, with the KSM lock and knobs held by ``ksm_saved``."""

from tests.functional import conftest as functional
from tests.functional.ksm import conftest as ksm_functional

pytest_collection_modifyitems = functional.pytest_collection_modifyitems
ksm_saved = ksm_functional.ksm_saved
