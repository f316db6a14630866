"""The NIPS 2017 competition run locally: the dev toolkit's harness with the cloud
evaluation's rules (batches, one epsilon per batch, a time limit per piece).

`harness.prepare(Options(...))` reads the dataset and discovers the submissions
(`submissions`), failing at once where nothing can run; `Competition.run()` then
runs every piece of work (`runner`: natively or in Docker, with the time limit;
`containment`: every process a piece starts ends with it), clips and pools the
attacks' images for the defenses (`adversarial`), hands each piece inputs rebuilt
from the harness's own digest-checked copies (`store`), records each finished
piece, sealed, so that a run can be resumed (`pieces`, `layout`) and writes the
toolkit's result files and scores (`scoring`). Submissions are treated as hostile
throughout. None of it needs TensorFlow.
"""
