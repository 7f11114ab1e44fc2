"""Evaluation: the paper's preference rate of MARA answers over baseline answers, its
judges, reports and plots, and the learning curve of a training run."""
