"""Root pytest hooks. For nbval: progress bars and warnings go to stderr, which is never compared."""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
