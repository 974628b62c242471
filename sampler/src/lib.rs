//! Samplers for EDM-preconditioned diffusion models.
