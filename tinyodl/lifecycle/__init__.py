"""The on-device lifecycle: detect drift, decide to adapt, adapt (issue 15; chapters 01, 04).

A deployed model is not done: its inputs drift (a new writer, a new sensor) and its
accuracy decays. This package closes the loop the other chapters open:

* :mod:`~tinyodl.lifecycle.detectors` -- streaming detectors on one number per sample:
  :class:`PageHinkley` and :class:`CUSUM` (Page 1954; Hinkley 1971) for a shift of the mean
  (e.g. of the model's confidence, no label needed), :class:`DDM` (Gama et al. 2004) and
  :class:`ADWIN` (Bifet & Gavaldà 2007) for the error rate once late labels arrive;
* :mod:`~tinyodl.lifecycle.two_sample` -- data drift between windows of features:
  :func:`mmd_test` (Gretton et al. 2012) and :func:`ks_test` (per feature, Holm-corrected),
  and :class:`WindowDetector`, which runs either on a stream;
* :mod:`~tinyodl.lifecycle.policy` -- *when* to adapt (:class:`TriggerPolicy`: an alarm, then
  enough labelled examples in a :class:`LabelBuffer` within a storage budget) and *which*
  method (:func:`choose_method`: the most accurate of the demo's methods that fits a memory
  budget);
* :mod:`~tinyodl.lifecycle.scenario` -- task B's writer shift as a stream: detection delay,
  false alarms, accuracy before and after adaptation, against never adapting and a fixed
  schedule (``tinyodl bench lifecycle``).
"""

from tinyodl.lifecycle.detectors import ADWIN, CUSUM, DDM, PageHinkley
from tinyodl.lifecycle.policy import (
    LabelBuffer,
    TriggerPolicy,
    adaptation_steps,
    bytes_per_example,
    choose_method,
    demo_costs,
)
from tinyodl.lifecycle.two_sample import (
    TestResult,
    WindowDetector,
    bonferroni,
    holm,
    ks_test,
    mmd2_unbiased,
    mmd_test,
)

__all__ = [
    "ADWIN",
    "CUSUM",
    "DDM",
    "LabelBuffer",
    "PageHinkley",
    "TestResult",
    "TriggerPolicy",
    "WindowDetector",
    "adaptation_steps",
    "bonferroni",
    "bytes_per_example",
    "choose_method",
    "demo_costs",
    "holm",
    "ks_test",
    "mmd2_unbiased",
    "mmd_test",
]
