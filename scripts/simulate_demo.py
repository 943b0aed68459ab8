"""Write the deterministic demo data set (genome, GTF, 10x FASTQs, true counts)."""

import argparse

import _kbagg_path  # noqa: F401

from kbagg.simulate import write_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("outdir", help="folder to write genome.fa, genes.gtf, fastq/, truth/")
    args = parser.parse_args()
    outputs = write_demo(args.outdir)
    print(f"wrote {sum(len(v) for v in outputs.values())} files under {args.outdir}")


if __name__ == "__main__":
    main()
