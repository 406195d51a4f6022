"""Classic on-device learners: models that learn from a stream in constant memory (chapter 01).

Before deep networks, learning on a device meant models whose whole state is a few
statistics or one weight matrix, updated as each example arrives and then discarded:

==========================  ==============================================  =================
estimator                   update per example (or batch)                   state
==========================  ==============================================  =================
OnlineLogisticRegression    SGD step on the softmax (or OvR) log loss       W (K, D), b (K)
LinearSVM                   Pegasos subgradient step on the hinge loss      W (K, D), b (K)
GaussianNB                  merge count, mean, variance (Chan et al. 1979)  3 x (K, D)
MultinomialNB               add feature counts                              (K, D)
NearestClassMean            running class means of frozen features          (K, F)
==========================  ==============================================  =================

Every estimator follows scikit-learn's conventions (``partial_fit(X, y, classes=...)`` on a
stream, ``fit`` returns ``self``, learned attributes end in ``_``); the tests compare them
with ``SGDClassifier``, ``GaussianNB``, ``MultinomialNB``, ``NearestCentroid`` and
``LogisticRegression``. The state has a size fixed by the number of classes K and features
D, never by the length of the stream, so the memory of an update is constant:
:func:`measure_update_memory` measures it with tracemalloc, :func:`model_bytes` reads the
model size, :func:`time_updates` the cost per example.

The notebook (``chapters/01_classic.py``) sets their accuracy, bytes and update cost
against a small CNN on MNIST, and follows a stream whose writers change half-way
(concept drift) to show that continued updates recover.
"""

from tinyodl.classic._base import NotFittedError, OnlineClassifier
from tinyodl.classic.linear import LinearSVM, OnlineLogisticRegression
from tinyodl.classic.measure import (
    UpdateMemory,
    measure_update_memory,
    model_bytes,
    time_updates,
)
from tinyodl.classic.naive_bayes import GaussianNB, MultinomialNB
from tinyodl.classic.ncm import FrozenFeatures, NearestClassMean

__all__ = [
    "FrozenFeatures",
    "GaussianNB",
    "LinearSVM",
    "MultinomialNB",
    "NearestClassMean",
    "NotFittedError",
    "OnlineClassifier",
    "OnlineLogisticRegression",
    "UpdateMemory",
    "measure_update_memory",
    "model_bytes",
    "time_updates",
]
