"""The NIPS 2017 competition run locally: the dev toolkit's harness with the cloud
evaluation's rules (batches, one epsilon per batch, a time limit per piece).

`harness.prepare(Options(...))` reads the dataset and discovers the submissions
(`submissions`), failing at once where nothing can run; `Competition.run()` then
runs every piece of work (`runner`: natively or in Docker, with the time limit),
clips and pools the attacks' images for the defenses (`adversarial`), records each
finished piece so that a run can be resumed (`pieces`, `layout`) and writes the
toolkit's result files and scores (`scoring`). None of it needs TensorFlow.
"""
