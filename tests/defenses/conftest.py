"""The defense tests share the attack tests' trained MNIST model (one training run per process)."""

from tests.attacks.conftest import mnist_bundle, mnist_model  # noqa: F401 (fixtures)
