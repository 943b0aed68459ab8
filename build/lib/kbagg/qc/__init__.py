"""Quality control per sample and across samples."""
