"""Networks: the StyleGAN2 teacher (and, later, the students)."""
