"""Students: small rerankers trained on a teacher corpus.

`base.Student` is the interface every kind implements (`score`, optional `explain`, `save`, `load`);
`corpus.load_training_view` turns corpus files into training shape; `train.train` dispatches on
`TrainConfig.student`. Nothing here imports torch at module import time.
"""

from r2r_synth.student.base import STUDENT_KINDS, Student, load_student

__all__ = ["STUDENT_KINDS", "Student", "load_student"]
