"""Test-time normalisation: how BatchNorm layers get their statistics (the ``norm`` axis).

Orthogonal to the method: any method runs on a model whose BatchNorm layers a ``norm`` has
swapped (``ttabench run method=tent norm=unmix``). See specs/normalization.md.
"""
