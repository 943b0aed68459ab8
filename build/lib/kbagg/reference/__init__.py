"""The kallisto index: `kb ref` from FASTA + GTF or `kb ref -d`, and checks of its inputs."""
