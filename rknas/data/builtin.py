"""Built-in plugin: the data sets rknas reads itself."""

from rknas.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from rknas.data import loaders

    for name, loader in loaders.BUILTIN.items():
        register(name, loader)
