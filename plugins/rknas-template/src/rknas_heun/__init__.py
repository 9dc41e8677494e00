"""Template rknas plugin: one stage strategy, ``heun``.

rknas reports the package and version of the installed distribution (``rknas-template``) next
to every strategy it registers; the package needs no ``__version__`` for that.
"""
