"""Image sets: the NIPS 2017 dataset CSV and label files (`dataset`), and the builder of
a development set in that layout (`builder`)."""
