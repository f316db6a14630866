"""What uses the attacks: the paper's scenarios (`scenarios`), the choice of what an
attack optimises against and what judges it (`targets`), a run's settings
(`settings`), the adversarial-set format (`adversarial_set`), the directory driver
(`generate`) and accuracies under a protocol (`accuracy`); the names they share are
in `protocol`.
"""
