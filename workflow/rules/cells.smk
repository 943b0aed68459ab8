# Per sample: raw.h5ad and filtered.h5ad from kb's output, written only when kallisto
# processed exactly the reads that the FASTQ checks counted. Cells are called by the
# configured method and get per-cell QC columns (kbagg.cells.call).


rule cells:
    input:
        unpack(cells_inputs),
    output:
        **({"filtered": sample_matrix("filtered")} if FILTER else {}),
        raw=sample_matrix("raw"),
    log:
        "logs/cells/{sample}.log",
    benchmark:
        "benchmarks/cells/{sample}.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("cells")["threads"]
    resources:
        mem_mb=mem_mb("cells"),
        runtime=rule_resources("cells")["runtime"],
    params:
        method=config["filter"]["method"],
        plate=lambda wc: plate_technology(wc.sample),
        splitseq=lambda wc: kb_technology(SHEET.technology(wc.sample)).round1_wells,
        round1_wells=lambda wc: list(SHEET.round1_wells(wc.sample)),
        emptydrops=config["filter"]["emptydrops"],
        ambient=config["ambient"],
        cell_qc={
            "doublets": config["qc"]["doublets"],
            "seed": config["qc"]["seed"],
            "expected_doublet_rate": config["qc"]["doublet_rate"],
        },
    script:
        script_path("cells.py")
