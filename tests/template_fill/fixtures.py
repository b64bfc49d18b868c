"""The fixtures a third party fills in the rendered template's tests (see
tests/template_fill/plugin.py): two small TinyMLIP models, a few copper clusters and the
drop-in calculator on the first model."""

import pytest

from probe_base import toy


@pytest.fixture(scope="class")
def adapter(tmp_path_factory):
    from probe_foo import FooAdapter

    frames = toy.emt_clusters(20, seed=0)
    paths = []
    for seed in (0, 1):
        path = tmp_path_factory.mktemp("foo") / f"foo{seed}.pt"
        toy.save_model(
            toy.train(
                frames,
                [a.get_potential_energy() for a in frames],
                [a.get_forces() for a in frames],
                seed=seed,
                epochs=2,
            ),
            path,
        )
        paths.append(path)
    return FooAdapter(paths)


@pytest.fixture(scope="class")
def structures():
    return toy.emt_clusters(4, seed=1)


@pytest.fixture()
def make_calculator(adapter):
    from probe_foo import FooCalculator

    return lambda **kw: FooCalculator(adapter.model_paths[0], **kw)
