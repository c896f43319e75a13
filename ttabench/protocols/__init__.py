"""Evaluation protocols (config group ``protocol``): how each batch of the stream reaches the
method. One module a protocol; :mod:`ttabench.protocols.base` has the interface."""

from ttabench.protocols.base import Answer, Episodic, Online, Protocol

__all__ = ["Answer", "Episodic", "Online", "Protocol"]
