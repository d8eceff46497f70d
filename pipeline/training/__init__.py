"""Distillation training: objective (loss.py), loop (loop.py), snapshots, augmentation, DDP."""
