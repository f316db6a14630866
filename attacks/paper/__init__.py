"""Reproducing the paper's Tables 1-6 (Xie et al., ICLR 2018, Sections 4.2-4.6).

- `attacks.paper.tables`: the paper's numbers as data, its tables' layouts and
  settings (scenario, image set, attack rows), and the text rendering of a table
  with the paper's number and the difference beside each cell;
- `attacks.paper.cells`: the cells a run computes and the results file they are
  stored in as they finish (JSON lines), so that a rerun only computes what is
  missing and a file made with other settings is refused, not mixed;
- `attacks.paper.data`: the tables' image sets (a dataset directory's PNGs and labels,
  the seeded subset of Tables 4-6) and the digest naming them;
- `attacks.paper.models`: a model set (name -> model loader, sizes, defense config,
  class names), from the registry's checkpoints or from any factory (test models);
- `attacks.paper.compute`: one cell's accuracies, the paper's protocol
  (`attacks.evaluation.accuracy`) on the adversarials of the cell's attack;
- `attacks.paper.run`: a whole run, with a progress bar over the cells;
- `attacks.paper.plots`: the matplotlib figures (grouped bars per table, and a
  Figure-1-style triptych).

Importing this package, `tables` and `cells` imports no TensorFlow.
"""
